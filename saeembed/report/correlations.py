"""The correlations report: what was tested and filtered, the strongest pairs' NPMI as bars, and the
top pairs as a table, each with a document where both latents fire (their peaks highlighted). Also takes
the associations of latents with a metadata column (`correlations --with`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from saeembed.report import plots
from saeembed.report._page import distinct, latent_name, render, span_segments
from saeembed.store import Store
from saeembed.stream import StoreStream

if TYPE_CHECKING:
    from saeembed.analysis.associations import AssociationResult
    from saeembed.analysis.correlations import CorrelationResult

TOP = 50
PAIR_BARS = 25


def write_correlations_report(result: CorrelationResult | AssociationResult, path: str | Path, *,
                              store: Store | StoreStream | None = None, top: int = TOP,
                              sides: Sequence[str] | None = None) -> Path:
    """Write a `saeembed.analysis.correlations.CorrelationResult` (or an `AssociationResult` of
    `saeembed.analysis.associations`) as one self-contained HTML page at `path`, the `top` rows shown.

    Args:
        store: the store the pairs were found in, for an example document per pair (not for
            `cross_correlations`, whose latents come from two stores).
        sides: for `cross_correlations`, the two sides' names (e.g. ("prompt", "response")), which name
            each pair's latents.
    """
    from saeembed.analysis.associations import AssociationResult

    if isinstance(result, AssociationResult):
        return _associations(result, path, store if isinstance(store, Store) else None, top)
    table = result.table.head(top)
    pairs = table.to_dicts()
    if store is not None and sides is None:
        for pair, example in zip(pairs, _pair_examples(store, pairs)):
            pair["example"] = example
    context = {
        "title": "correlations" + (f": {sides[0]} × {sides[1]}" if sides else ""), "summary": result.summary(),
        "pairs": pairs, "n_pairs": len(result.table), "sides": list(sides or []),
        "pair_bars": _pair_bars(pairs, sides), "n_bars": min(len(pairs), PAIR_BARS), "notes": list(result.notes),
    }
    return render("correlations.html", path, **context)


def _pair_bars(pairs: list[dict[str, Any]], sides: Sequence[str] | None) -> Any:
    """The strongest pairs' NPMI as bars, strongest on top, each named by its two latents (a heat map over
    their latents was mostly blank: most latent pairs are not reported pairs)."""
    if not pairs:
        return None
    shown = pairs[:PAIR_BARS]
    prefix = (f"{sides[0]}: ", f"{sides[1]}: ") if sides else ("", "")
    labels = [f"{prefix[0]}{latent_name(p['latent_a'], p['label_a'], 28)}  ~  "
              f"{prefix[1]}{latent_name(p['latent_b'], p['label_b'], 28)}" for p in shown]
    return plots.bars(labels, [p["npmi"] for p in shown], "NPMI (0: independent, 1: always together)",
                      "strongest pairs", width=70)


def _pair_examples(store: Store | StoreStream, pairs: list[dict[str, Any]]) -> list[Any]:
    """Per pair, the document where both latents fire most strongly (the larger of their smaller
    activations), both peaks highlighted; None when they share no document (never, for a found pair).
    A store read by parts gives only those documents (`StoreStream.fetch`)."""
    from saeembed.analysis.correlations import pair_example_rows
    from saeembed.spans import peak_span

    rows = pair_example_rows(store, np.array([p["latent_a"] for p in pairs], np.int64),
                             np.array([p["latent_b"] for p in pairs], np.int64))
    docs, at = store, rows
    if isinstance(store, StoreStream) and (rows >= 0).any():
        wanted = np.unique(rows[rows >= 0])
        docs, at = store.fetch(wanted), np.searchsorted(wanted, rows)
    out: list[dict[str, Any] | None] = []
    for p, row, k in zip(pairs, rows, at):
        if row < 0:
            out.append(None)
            continue
        spans = []
        for latent, label in ((p["latent_a"], p["label_a"]), (p["latent_b"], p["label_b"])):
            span = peak_span(docs, int(k), int(latent))  # type: ignore[arg-type]
            if span:
                spans.append((*span, latent_name(latent, label)))
        out.append({"id": str(docs.frame["id"][int(k)]),  # type: ignore[union-attr]
                    "text": span_segments(docs.frame["text"][int(k)], spans)})  # type: ignore[union-attr]
    return out


def _associations(result: AssociationResult, path: str | Path, store: Store | None, top: int) -> Path:
    """Latents against a metadata column: the strongest associations as bars and a table, each with the
    document (of the value, for a categorical column) where the latent fires strongest."""
    from saeembed.spans import peak_span
    from saeembed.store import column_entries

    categorical = result.kind == "categorical"
    rows = result.table.head(top).to_dicts()
    strength = "npmi" if categorical else "rho"
    names = [(f"{r['value']}: " if categorical else "") + latent_name(r["latent"], r["label"], 36) for r in rows]
    bars = plots.bars(names[:25], [r[strength] for r in rows[:25]], strength.upper() if categorical else
                      "Spearman rho", "associations", width=50) if rows else None
    if store is not None and rows and result.column in store.frame.columns:
        column = np.array([None if v is None else str(v) for v in store.frame[result.column].to_list()], object)
        latents = np.array(distinct([r["latent"] for r in rows]), np.int64)
        entry_rows, which, values = column_entries(store.matrix, latents)
        slot = {int(x): i for i, x in enumerate(latents)}
        for r in rows:
            mine = which == slot[int(r["latent"])]
            docs, acts = entry_rows[mine], values[mine]
            if categorical:
                keep = column[docs] == str(r["value"])
                docs, acts = docs[keep], acts[keep]
            if not len(docs):
                continue
            row = int(docs[np.argmax(acts)])
            span = peak_span(store, row, int(r["latent"]))
            spans = [(*span, latent_name(r["latent"], r["label"]))] if span else []
            r["example"] = {"id": str(store.frame["id"][row]), "value": column[row],
                            "text": span_segments(store.frame["text"][row], spans)}
    context = {"title": f"concepts against {result.column}", "result": result, "summary": result.summary(),
               "rows": rows, "categorical": categorical, "bars": bars, "n_rows": len(result.table)}
    return render("associations.html", path, **context)
