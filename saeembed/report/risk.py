"""The risk-probe report: the probe against its baselines (AUROC and AP with intervals, the gain, the
verdict and warnings), ROC curves from the out-of-fold scores, a calibration plot of the probe, its top
concepts with their weights, and documents where they fire."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saeembed.report import plots
from saeembed.report._page import latent_name, render, span_segments

if TYPE_CHECKING:
    from saeembed.analysis.risk import RiskReport
    from saeembed.store import Store

CALIBRATION_BINS = 10
CONCEPTS_PLOTTED = 20
# Top concepts that get an example document (with the store).
EXAMPLE_CONCEPTS = 8


def write_risk_report(report: RiskReport, path: str | Path, *, store: Store | None = None) -> Path:
    """Write the `saeembed.analysis.risk.RiskReport` of `fit_risk` as one self-contained HTML page at `path`.
    `store`: the labelled store it was fitted on, for an example document per top concept."""
    table = report.table.to_dicts()
    probe_name = table[0]["features"] if table else "probe"
    curves, calibration, brier = _roc(report), None, None
    if report.y is not None and probe_name in report.oof_scores:
        calibration, brier = _calibration(report, report.oof_scores[probe_name])
    top = report.top_concepts.to_dicts()
    weights = None
    if top:
        shown = top[:CONCEPTS_PLOTTED]
        weights = plots.bars([latent_name(c["latent"], c["label"], 40) for c in shown], [c["weight"] for c in shown],
                             "weight in the probe (log1p activation; + raises risk)", "probe weights",
                             [plots.colour(3) if c["weight"] > 0 else plots.colour(0) for c in shown])
    context = {
        "title": f"risk probe: {report.probe.meta.get('label', 'label')}", "report": report,
        "summary": report.summary(), "rows": table,
        "warnings": list(report.warnings), "notes": list(report.notes),
        "roc": plots.roc(curves) if curves else None, "calibration": calibration, "brier": brier,
        "weights": weights, "concepts": _examples(top, report, store),
        "scores_kept": bool(report.oof_scores), "bins": CALIBRATION_BINS,
    }
    return render("risk.html", path, **context)


def _roc(report: RiskReport) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    from sklearn.metrics import roc_curve

    if report.y is None or not report.oof_scores:
        return []
    auroc = {row["features"]: row["auroc"] for row in report.table.iter_rows(named=True)}
    curves = []
    for name, scores in report.oof_scores.items():
        fpr, tpr, _ = roc_curve(report.y, scores)
        curves.append((name, fpr, tpr, float(auroc.get(name, np.nan))))
    return curves


def _calibration(report: RiskReport, decision: np.ndarray) -> tuple[Any, float]:
    """The probe's out-of-fold decisions through its link (the risk `risk score` would give), in bins of
    equal size: mean predicted against observed, with Wilson intervals; and the Brier score."""
    from saeembed.analysis.stats import wilson

    a, b = report.probe.link
    risk = 1.0 / (1.0 + np.exp(-(a * np.asarray(decision, float) + b)))
    y = np.asarray(report.y, bool)
    order = np.argsort(risk, kind="stable")
    bins = [part for part in np.array_split(order, min(CALIBRATION_BINS, len(order))) if len(part)]
    predicted = np.array([risk[part].mean() for part in bins])
    hits = np.array([y[part].sum() for part in bins])
    sizes = np.array([len(part) for part in bins])
    low, high = wilson(hits, sizes)
    return (plots.calibration(predicted, hits / sizes, sizes, np.asarray(low), np.asarray(high)),
            float(np.mean((risk - y) ** 2)))


def _examples(top: list[dict[str, Any]], report: Any, store: Any) -> list[dict[str, Any]]:
    """Each top concept; with the store, the document of the class it points to (risky for a positive
    weight) where it fires strongest, its peak highlighted."""
    from saeembed.spans import peak_span
    from saeembed.store import column_entries

    out = [{**c, "example": None} for c in top]
    if store is not None and getattr(report, "rows", None) is not None:
        store = store.take(report.rows)  # unlabelled documents were left out of the fit
    if store is None or not top:
        return out
    y = np.asarray(report.y, bool) if report.y is not None and len(report.y) == store.n_docs else None
    chosen = np.array([c["latent"] for c in top[:EXAMPLE_CONCEPTS]], np.int64)
    rows, which, values = column_entries(store.matrix, chosen)
    texts, ids = store.frame["text"], store.frame["id"]
    for j, concept in enumerate(out[:EXAMPLE_CONCEPTS]):
        mine, strength = rows[which == j], values[which == j].astype(float)
        if y is not None:
            wanted = y[mine] == (concept["weight"] > 0)
            if wanted.any():
                mine, strength = mine[wanted], strength[wanted]
        if not len(mine):
            continue
        row = int(mine[np.argmax(strength)])
        span = peak_span(store, row, int(concept["latent"]))
        text = texts[row]
        spans = [(*span, latent_name(concept["latent"], concept["label"]))] if span else []
        concept["example"] = {"id": str(ids[row]), "text": span_segments(text, spans),
                              "risky": None if y is None else bool(y[row])}
    return out
