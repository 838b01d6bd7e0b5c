"""Out-of-fold scores judged: AUROC and average precision with bootstrap intervals, and a probe's gain
over each baseline, paired over the same resamples (of groups when grouped), with a plain warning when the
probe does not beat one. A probe that loses to answer length or shape is no evidence it reads truth
("The Illusion of Progress", Janiak et al. 2025).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from saeembed.analysis.config import RiskConfig

if TYPE_CHECKING:
    import polars as pl

# What it means when the probe does not beat a baseline, by baseline.
DOUBTS = {"length only": "it may read answer length, not truth",
          "surface form": "it may read answer shape, not truth",
          "concept counts only": "the concepts add nothing over how many of them fire",
          "dense embedding": "the SAE concepts add nothing over a plain dense embedding"}


class Score(NamedTuple):
    """One feature set's out-of-fold AUROC and average precision, with 95% percentile bootstrap intervals."""

    features: str
    auroc: float
    auroc_low: float
    auroc_high: float
    ap: float
    ap_low: float
    ap_high: float
    base_rate: float


class Comparison(NamedTuple):
    """The probe against one baseline: probe AUROC - baseline AUROC, its 95% interval paired over the same
    bootstrap resamples (of groups when grouped)."""

    baseline: str
    baseline_auroc: float
    gain: float
    gain_low: float
    gain_high: float
    beaten: bool
    """The whole interval of the gain lies above 0."""
    warning: str | None
    """Says so, plainly, when the probe does not beat this baseline; None when it does, or when the baseline
    itself does no better than chance (the probe then fails on its own: `Evaluation.warnings` says so)."""


class Evaluation(NamedTuple):
    """A probe and its baselines judged on the same folds and the same bootstrap resamples."""

    table: pl.DataFrame
    """polars DataFrame, one row per feature set, the probe first: features, role (probe / baseline), the
    Score columns, and gain, gain_low, gain_high, beaten, warning (the Comparison; on the probe's row only
    the warning that it does no better than chance)."""
    probe: Score
    baselines: list[Score]
    comparisons: list[Comparison]
    """The probe against each baseline, in the order of `baselines`."""
    verdict: Comparison
    """The probe against the best baseline (highest AUROC)."""
    warnings: list[str]
    """That the probe does no better than chance, then one per informative baseline it does not beat, best
    baseline first. Empty when the probe beats every baseline."""


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap `samples`."""
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def evaluate(scores: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray | None,
             config: RiskConfig) -> Evaluation:
    """Judge out-of-fold `scores` by feature set (the probe first, then its baselines): an Evaluation whose
    every interval comes from the same `config.bootstrap` resamples."""
    names, matrix = list(scores), np.column_stack(list(scores.values()))
    aurocs, aps = _bootstrap(matrix, y, groups, config)
    auroc = _auroc(y, matrix)
    rows = [Score(name, float(auroc[i]), *_interval(aurocs[:, i]), _average_precision(y, matrix[:, i]),
                  *_interval(aps[:, i]), float(y.mean())) for i, name in enumerate(names)]
    gains = aurocs[:, :1] - aurocs[:, 1:]  # paired: both AUROCs on the same resample
    comparisons = [_compare(row, float(auroc[0] - row.auroc), *np.percentile(gains[:, i], [2.5, 97.5]))
                   for i, row in enumerate(rows[1:])]
    chance = _chance_warning(rows[0])
    ranked = sorted(comparisons, key=lambda c: -c.baseline_auroc)
    warnings = [w for w in [chance, *(c.warning for c in ranked)] if w]
    return Evaluation(_table(rows, comparisons, chance), rows[0], rows[1:], comparisons, ranked[0], warnings)


def _table(rows: list[Score], comparisons: list[Comparison], chance: str | None) -> pl.DataFrame:
    """The Evaluation's table: the Scores, each baseline's Comparison beside it."""
    import polars as pl

    probe = {"gain": None, "gain_low": None, "gain_high": None, "beaten": None, "warning": chance}
    table = [{**rows[0]._asdict(), "role": "probe", **probe}]
    table += [{**row._asdict(), "role": "baseline", **{k: getattr(c, k) for k in probe}}
              for row, c in zip(rows[1:], comparisons)]
    schema = {"gain": pl.Float64, "gain_low": pl.Float64, "gain_high": pl.Float64, "beaten": pl.Boolean,
              "warning": pl.Utf8}
    return pl.DataFrame(table, schema_overrides=schema).select("features", "role", pl.exclude("features", "role"))


def _compare(baseline: Score, gain: float, low: float, high: float) -> Comparison:
    """The probe's Comparison with `baseline`: a warning unless the gain's interval lies above 0 (or the
    baseline's AUROC interval does not: losing to chance is the probe's own failure)."""
    beaten = bool(low > 0)
    warning = None
    if not beaten and baseline.auroc_low > 0.5:
        verb = "is worse than" if high < 0 else "does not beat"
        warning = (f"the probe {verb} the {baseline.features} baseline (AUROC {baseline.auroc:.3f}; probe - "
                   f"baseline {gain:+.3f} [{low:+.3f}, {high:+.3f}]): "
                   f"{DOUBTS.get(baseline.features, 'it adds nothing over it')}")
    return Comparison(baseline.features, baseline.auroc, gain, float(low), float(high), beaten, warning)


def _chance_warning(probe: Score) -> str | None:
    """A warning when the probe's AUROC interval reaches down to chance (0.5), else None."""
    if probe.auroc_low > 0.5:
        return None
    return (f"the probe does no better than chance (AUROC {probe.auroc:.3f} [{probe.auroc_low:.3f}, "
            f"{probe.auroc_high:.3f}])")


def _bootstrap(scores: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
               config: RiskConfig) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AP of every column of `scores` [docs, k] on the same `config.bootstrap` resamples of
    documents (of whole groups when grouped): two arrays [resamples, k]. Resamples of one class are skipped."""
    rng = np.random.default_rng(config.seed)
    units = np.unique(groups, return_inverse=True)[1] if groups is not None else np.arange(len(y))
    order = np.argsort(units, kind="stable")  # members of unit u: order[start[u]:start[u] + size[u]]
    size = np.bincount(units)
    start = np.cumsum(size) - size
    aurocs, aps = [], []
    for _ in range(config.bootstrap):
        chosen = rng.integers(0, len(size), len(size))
        lengths = size[chosen]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        sample = order[np.repeat(start[chosen], lengths) + offsets]
        if y[sample].all() or not y[sample].any():
            continue
        aurocs.append(_auroc(y[sample], scores[sample]))
        aps.append([_average_precision(y[sample], column) for column in scores[sample].T])
    return np.array(aurocs), np.array(aps)


def _auroc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` [docs, k] (Mann-Whitney on average ranks: ties count half)."""
    from scipy.stats import rankdata

    positives, negatives = int(y.sum()), int((~y).sum())
    ranks = rankdata(scores, axis=0)
    return (ranks[y].sum(0) - positives * (positives + 1) / 2) / (positives * negatives)


def _average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as sklearn computes it: precision at each distinct score, weighted by the recall
    it adds (tied scores enter together)."""
    order = np.argsort(-scores, kind="stable")
    last = np.r_[np.flatnonzero(np.diff(scores[order])), len(y) - 1]  # last document of each distinct score
    hits = np.cumsum(y[order])[last]
    recall = hits / hits[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * hits / (last + 1)))
