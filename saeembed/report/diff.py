"""The diff report: the headline, a forest plot of the themes, a volcano plot of every tested latent, the
length distributions, then one row per theme (its latents, both sides, the interval, q, examples with the
peak highlighted), filterable by text."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saeembed.labels.offline import KEEP_SCORE
from saeembed.report import plots
from saeembed.report._page import clip_marked, clip_plain, latent_name, render, split_marked

if TYPE_CHECKING:
    from saeembed.analysis.diff import DiffResult

# Themes in the forest plot and rows in the page (the strongest first), latents listed per theme; the page
# says when there are more. A row with its two examples is ~1.5 KB: 500 keep the page well under 2 MB.
FOREST_THEMES = 40
PAGE_THEMES = 500
THEME_LATENTS = 12


def write_diff_report(result: DiffResult, path: str | Path) -> Path:
    """Write the `saeembed.analysis.diff.DiffResult` as one self-contained HTML page at `path`."""
    config, names, themes = result.config, list(result.names), result.themes
    summary = result.summary()
    mean = config.measure == "mean"
    findings = result.findings
    rows = _theme_rows(themes, findings, names, mean)
    style_rows = None if result.style is None else _theme_rows(result.style_themes, result.style_findings, names, True)
    table = result.table
    volcano = None
    if len(table):
        volcano = plots.volcano(table["diff"].to_numpy().astype(float),
                                table["q"].to_numpy().astype(float), table["significant"].to_numpy(),
                                config.alpha, config.min_diff, config.measure, names)
    form_rows = []
    if result.form is not None:
        for row in result.form_findings.iter_rows(named=True):
            form_rows.append({**row, "less_in": row["vs"] if row["diff"] > 0 else names[0],
                              "with": clip_marked(split_marked(row.get("example_with"), row["feature"])),
                              "without": clip_plain(row.get("example_without"))})
    tokens = [np.asarray(t) for t in getattr(result, "n_tokens", ()) or ()]
    context = {
        "title": f"diff: {' vs '.join(names)}", "names": names, "sizes": list(result.sizes),
        "unit": "pairs" if config.pair_on else "documents", "config": config, "gap": result.length,
        "headline": summary.lines("≤", "≥"), "notes": summary.notes, "rows": rows, "n_themes": len(themes),
        "n_findings": len(findings), "n_tested": result.n_tested, "mean": mean,
        "side_names": names[:2] if len(names) == 2 else [names[0], "other"],
        "holdout": config.holdout is not None, "replication_rate": result.replication_rate,
        "forest": plots.forest(rows[:FOREST_THEMES], names, config.measure, config.min_diff) if rows else None,
        "forest_shown": min(len(rows), FOREST_THEMES), "volcano": volcano,
        "lengths": plots.lengths(names, tokens) if tokens and any(len(t) for t in tokens) else None,
        "up": summary.n_more_in_a, "down": summary.n_more_in_others,
        "n_not_replicated": int((~findings["replicated"]).sum()) if "replicated" in findings.columns else 0,
        "multi": len(names) > 2, "form_rows": form_rows,
        "n_form": None if result.form is None else len(result.form), "style_rows": style_rows,
        "n_style": None if result.style is None else len(result.style),
        "n_style_themes": 0 if result.style_themes is None else len(result.style_themes),
        "keep_score": KEEP_SCORE,
    }
    return render("diff.html", path, **context)


def _theme_rows(themes: Any, findings: Any, names: list[str], mean: bool) -> list[dict[str, Any]]:
    """One row per theme for the page (the strongest PAGE_THEMES): its lead, members, sides, examples."""
    member = {int(r["latent"]): r for r in findings.select(
        "latent", "label", "diff", *(["mean_a", "mean_b"] if mean else ["freq_a", "freq_b"])).iter_rows(named=True)}
    rows = []
    for row in themes.head(PAGE_THEMES).iter_rows(named=True):
        less = row["vs"] if row["diff"] > 0 else names[0]
        latents = [int(x) for x in (row.get("latents") or [row["lead"]])]
        rows.append({**row, "name": latent_name(row["lead"], row["label"]), "less_in": less,
                     "a": row["mean_a"] if mean else row["freq_a"], "b": row["mean_b"] if mean else row["freq_b"],
                     "members": [{"latent": x, "label": member.get(x, {}).get("label"),
                                  "diff": member.get(x, {}).get("diff")} for x in latents[:THEME_LATENTS]],
                     "more_latents": max(len(latents) - THEME_LATENTS, 0),
                     "with": clip_marked(split_marked(row.get("example_with"), f"latent {row['lead']}")),
                     "without": clip_plain(row.get("example_without"))})
    return rows
