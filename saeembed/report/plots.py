"""The reports' plots: matplotlib figures written as inline SVG whose text stays text (`svg.fonttype`
'none'), ids unique per plot (its own hash salt) and no metadata, so several sit in one page and it stays
small. Every string from the data goes through `_text` (no mathtext: a '$' in a label is a dollar)."""

from __future__ import annotations

import io
import re
from typing import Any, Sequence

import numpy as np
from markupsafe import Markup, escape

# A categorical palette (matplotlib's tab10, then tab20's light tones) and the grey of unassigned points.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
           "#9edae5")
GREY = "#b0b0b0"
# Scatter points closer than this share of the axes are drawn once (the plot looks the same, the page is
# far smaller: most of 16k tested latents sit on top of each other near zero).
GRID = 1 / 400
_COUNTER_ID = re.compile(r' id="[A-Za-z][\w.]*_\d+"')  # figure_1, patch_3 ...: unused, repeated across plots
_RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False, "axes.titlesize": 10, "axes.titleweight": "bold", "legend.frameon": False,
       "legend.fontsize": 8}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _text(value: Any, width: int = 0) -> Any:
    """A data string as plain plot text: '$' escaped (else matplotlib reads math), optionally shortened."""
    text = str(value)
    if width and len(text) > width:
        text = text[: width - 1].rstrip() + "…"
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any, name: str) -> Any:
    """The figure as an <svg> element for inlining: no XML prologue or metadata, no counter ids, the
    referenced ids salted with `name` (unique per page); its natural size, shrunk by the page's CSS when
    the window is narrower."""
    import matplotlib

    buffer = io.StringIO()
    # matplotlib's stubs type rc_context's keys as a Literal of every rc name; ours are plain str (ignore below)
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"saeembed-{name}"}):  # type: ignore[dict-item]
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = _COUNTER_ID.sub("", svg)
    # Markup: the templates insert it as it is; matplotlib escaped every text in it (<text> is XML)
    return Markup(svg.replace("<svg ", f'<svg class="plot" role="img" aria-label="{escape(name)}" ', 1))


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context(_RC)  # type: ignore[arg-type]  # stubs: rc keys typed as a Literal, ours are str


def _thin(x: np.ndarray, y: np.ndarray, *groups: np.ndarray) -> np.ndarray:
    """Indices of the points to draw: one per cell of a GRID-sized lattice over the data (per group)."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    span_x, span_y = max(float(np.ptp(x)), 1e-12), max(float(np.ptp(y)), 1e-12)
    cells = [np.floor((x - x.min()) / span_x / GRID).astype(np.int64),
             np.floor((y - y.min()) / span_y / GRID).astype(np.int64), *[np.asarray(g) for g in groups]]
    _, first = np.unique(np.column_stack(cells), axis=0, return_index=True)
    return np.sort(first)


def forest(rows: Sequence[dict[str, Any]], names: Sequence[str], measure: str, min_diff: float) -> Any:
    """The themes' differences (lead latent) with their 95% intervals, one line each, strongest on top,
    coloured by the corpus they are more frequent in; hollow when a held-out check did not replicate."""
    with _style():
        fig = _figure(7.5, 0.9 + 0.24 * max(len(rows), 1))
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for at, row in zip(y, rows):
            c = colour(list(names).index(row["more_in"]) if row["more_in"] in names else 0)
            ax.plot([row["ci_low"], row["ci_high"]], [at, at], color=c, lw=1.6)
            hollow = row.get("replicated") is False
            ax.plot([row["diff"]], [at], "o", color=c, mfc="white" if hollow else c, ms=5)
        ax.axvline(0, color="#444", lw=0.8)
        if measure != "mean":
            for edge in (-min_diff, min_diff):
                ax.axvline(edge, color="#999", lw=0.6, ls=":")
        ax.set_yticks(y, [_text(f"#{r['theme']}  {r['name']}", 58) for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(_text(f"difference in {'mean activation' if measure == 'mean' else 'document frequency'}"
                            f" ({names[0]} − other), 95% interval"))
        handles = [ax.plot([], [], "o", color=colour(i))[0] for i in range(len(names))]
        ax.legend(handles, [_text(f"more in {n}", 40) for n in names], loc="lower left", bbox_to_anchor=(0, 1),
                  ncol=len(names), borderaxespad=0.2)  # above the axes: never over a line
        return to_svg(fig, "forest plot")


def volcano(diff: np.ndarray, q: np.ndarray, significant: np.ndarray, alpha: float, min_diff: float,
            measure: str, names: Sequence[str]) -> Any:
    """Every tested latent: difference against -log10 q; findings coloured, the thresholds dashed."""
    with _style():
        fig = _figure(6.5, 4.1)
        ax = fig.add_subplot()
        height = -np.log10(np.clip(np.nan_to_num(q, nan=1.0), 1e-300, 1.0))
        keep = _thin(diff, height, significant)
        d, h, s = diff[keep], height[keep], significant[keep]
        ax.scatter(d[~s], h[~s], s=6, color=GREY, lw=0, label="not a finding")
        up, down = s & (d > 0), s & (d < 0)
        ax.scatter(d[up], h[up], s=9, color=colour(0), lw=0, label=_text(f"finding, more in {names[0]}", 40))
        others = " / ".join(names[1:])
        ax.scatter(d[down], h[down], s=9, color=colour(1), lw=0, label=_text(f"finding, more in {others}", 40))
        ax.axhline(-np.log10(alpha), color="#999", lw=0.7, ls="--")
        if measure != "mean":
            for edge in (-min_diff, min_diff):
                ax.axvline(edge, color="#999", lw=0.7, ls="--")
        ax.set_xlabel(_text(f"difference ({names[0]} − other)", 60))
        ax.set_ylabel("−log10 q")
        # below the axes: inside, it sat on the strongest findings (top left or right, where they are)
        fig.legend(loc="outside lower center", ncols=3, markerscale=2, frameon=False)
        return to_svg(fig, "volcano plot")


def lengths(names: Sequence[str], tokens: Sequence[np.ndarray]) -> Any:
    """Tokens per document, one outline histogram per corpus on shared bins (log-spaced when the lengths
    span more than 20x; one per count when they span few), each corpus's mean marked."""
    with _style():
        fig = _figure(6.5, 2.8)
        ax = fig.add_subplot()
        pooled = np.concatenate([np.asarray(t, float) for t in tokens]) if tokens else np.zeros(0)
        low, high = max(float(pooled.min(initial=1)), 1.0), max(float(pooled.max(initial=1)), 2.0)
        log = high / low > 20
        if log:  # token counts are integers: edges between them, or narrow bins at the low end stay empty
            bins = np.unique(np.round(np.geomspace(low, high + 1, 41))) - 0.5
        elif high - low <= 60:
            bins = np.arange(low, high + 2) - 0.5
        else:
            bins = np.linspace(low, high, 40)
        for i, (name, t) in enumerate(zip(names, tokens)):
            t = np.asarray(t, float)
            if not len(t):
                continue
            counts, edges = np.histogram(np.clip(t, low, high), bins=bins)
            # per token count: bins hold different numbers of counts (log-spaced, rounded to integers)
            ax.stairs(counts / len(t) / np.maximum(np.diff(edges), 1), edges, lw=1.5, color=colour(i),
                      label=_text(f"{name} (mean {t.mean():.0f})", 40))
            ax.axvline(t.mean(), color=colour(i), lw=0.8, ls="--")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel("tokens per document")
        ax.set_ylabel("share of documents per token count")
        ax.legend()
        return to_svg(fig, "length distributions")


def bars(labels: Sequence[str], values: Sequence[float], xlabel: str, name: str,
         colours: Sequence[str] | None = None, width: int = 50) -> Any:
    """Horizontal bars, the first on top."""
    with _style():
        fig = _figure(6.5, 0.7 + 0.24 * max(len(values), 1))
        ax = fig.add_subplot()
        y = np.arange(len(values))[::-1]
        ax.barh(y, values, color=list(colours) if colours else colour(0), height=0.7)
        ax.set_yticks(y, [_text(label, width) for label in labels])
        ax.axvline(0, color="#444", lw=0.6)
        ax.set_xlabel(_text(xlabel))
        return to_svg(fig, name)


def cluster_map(xy: np.ndarray, groups: np.ndarray, names: dict[int, str], colours: dict[int, str]) -> Any:
    """Documents in two dimensions, coloured by cluster (grey: unassigned), legend in cluster order."""
    with _style():
        fig = _figure(6.5, 4.6)
        ax = fig.add_subplot()
        keep = _thin(xy[:, 0], xy[:, 1], groups)
        for g in names:
            at = keep[groups[keep] == g]
            ax.scatter(xy[at, 0], xy[at, 1], s=7, lw=0, alpha=0.75, color=colours.get(g, GREY),
                       label=_text(names[g], 30))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2)
        return to_svg(fig, "document map")


def roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> Any:
    """ROC curves (name, false positive rate, true positive rate, AUROC), the first (the probe) thickest."""
    with _style():
        fig = _figure(5.2, 4.4)
        ax = fig.add_subplot()
        for i, (name, fpr, tpr, auc) in enumerate(curves):
            ax.plot(fpr, tpr, color=colour(i), lw=2.2 if i == 0 else 1.2, label=_text(f"{name} ({auc:.3f})", 45))
        # on top of the curves, and in the legend: a baseline at chance lies on it and hid it
        ax.plot([0, 1], [0, 1], color="#555", lw=1.0, ls=(0, (4, 3)), zorder=5, label="chance (0.500)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", title="AUROC, out of fold")
        return to_svg(fig, "ROC curves")


def calibration(predicted: np.ndarray, observed: np.ndarray, sizes: np.ndarray, low: np.ndarray,
                high: np.ndarray) -> Any:
    """Reliability: mean predicted risk against the observed share of risky documents per bin (95%
    Wilson intervals; marker area ~ documents in the bin), the diagonal for perfect calibration."""
    with _style():
        fig = _figure(5.2, 4.4)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], color="#999", lw=0.7, ls="--")
        # Wilson bounds hold the observed share, but at 0 or 1 rounding can put it a hair outside
        below, above = np.maximum(observed - low, 0), np.maximum(high - observed, 0)
        ax.errorbar(predicted, observed, yerr=[below, above], fmt="none", ecolor=colour(0), lw=1)
        ax.scatter(predicted, observed, s=12 + 120 * sizes / max(sizes.max(initial=1), 1), color=colour(0),
                   zorder=3)
        ax.plot(predicted, observed, color=colour(0), lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted risk (out of fold)")
        ax.set_ylabel("observed share risky")
        return to_svg(fig, "calibration plot")
