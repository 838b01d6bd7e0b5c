"""The statistics of a comparison, feature by feature: the documents of each corpus as a matrix (latents,
or counted form features), and per feature the difference, its 95% interval and the test's p, paired or
not, at equal length or as the documents are. `diff` runs it on latents and on form features alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from saeembed.analysis import length_adjust, stats
from saeembed.analysis.config import DiffConfig
from saeembed.store import Store, document_frequency, present

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix


class Side(NamedTuple):
    """The documents of one corpus taking part in a comparison."""

    matrix: csr_matrix  # documents x latents
    n_tokens: np.ndarray
    counts: np.ndarray  # documents in which each latent fires: counted once, used by every test

    @classmethod
    def of(cls, matrix: csr_matrix, n_tokens: np.ndarray) -> Side:
        """Any documents x features matrix (latents, counted form features) with the documents' lengths."""
        matrix = matrix.tocsr()
        return cls(matrix, np.asarray(n_tokens), document_frequency(matrix))


def side(store: Store, rows: np.ndarray) -> Side:
    """The store restricted to `rows` (no matrix copy when that is every row in order)."""
    tokens = store.frame["n_tokens"].to_numpy()
    if len(rows) != store.n_docs or (rows != np.arange(store.n_docs)).any():
        matrix, tokens = store.matrix[rows], tokens[rows]
    else:
        matrix = store.matrix
    return Side(matrix, tokens, document_frequency(matrix))


def compare(sides: list[Side], config: DiffConfig) -> dict[str, np.ndarray]:
    """Per latent: the first corpus against the nearest of the others, and the intersection-union p
    (the largest p over the others, 1 when the directions disagree)."""
    target, others = sides[0], sides[1:]
    per_other = [_pairwise(target, other, config) for other in others]
    diffs = np.stack([c["diff"] for c in per_other])
    nearest = np.argmin(np.abs(diffs), axis=0)
    take = np.arange(diffs.shape[1])
    out = {k: np.stack([c[k] for c in per_other])[nearest, take] for k in per_other[0]}
    same_sign = (np.all(diffs > 0, axis=0) | np.all(diffs < 0, axis=0))
    p_all = np.stack([c["p"] for c in per_other]).max(axis=0)
    out["p"] = np.where(same_sign | (len(others) == 1), p_all, 1.0)
    out["vs"] = nearest.astype(np.int32)
    counts = sum(side.counts for side in sides)
    out["tested"] = counts > 0  # a latent that never fires cannot differ; it is not a test
    return out


def _pairwise(side_a: Side, side_b: Side, config: DiffConfig) -> dict[str, np.ndarray]:
    """Every column of one comparison: counts, frequencies (or means), difference, interval, p, test."""
    na, nb = side_a.matrix.shape[0], side_b.matrix.shape[0]
    ka, kb = side_a.counts, side_b.counts
    out = {"n_a": np.full(len(ka), na), "n_b": np.full(len(ka), nb), "count_a": ka, "count_b": kb,
           "freq_a": ka / max(na, 1), "freq_b": kb / max(nb, 1)}
    test = _mean_test if config.measure == "mean" else _frequency_test
    out.update(test(side_a, side_b, config.pair_on is not None, config.length == "adjust", config.length_bands))
    top = np.maximum(np.abs(out.get("mean_a", out["freq_a"])), np.abs(out.get("mean_b", out["freq_b"])))
    out["rel_diff"] = np.divide(out["diff"], top, out=np.zeros(len(ka)), where=top > 0)
    return out


def _frequency_test(side_a: Side, side_b: Side, paired: bool, adjust: bool, bands: int) -> dict[str, np.ndarray]:
    """Document frequencies: at equal length (conditional logistic for pairs, Mantel-Haenszel within
    length bands otherwise) or as they are (exact McNemar; Fisher / z with Newcombe intervals)."""
    a, b = side_a.matrix, side_b.matrix
    ka, kb, na, nb = side_a.counts, side_b.counts, a.shape[0], b.shape[0]
    if paired and adjust:
        log_ratio = length_adjust.log_tokens(side_a.n_tokens) - length_adjust.log_tokens(side_b.n_tokens)
        low, high, p, d = length_adjust.paired_frequency(a, b, log_ratio)
        return {"diff": d, "ci_low": low, "ci_high": high, "p": p, "test": np.full(len(ka), "conditional logistic")}
    if paired:
        both = document_frequency(present(a).multiply(present(b)).tocsr())
        low, high = stats.newcombe_paired(both, ka - both, kb - both, na)
        return {"diff": ka / max(na, 1) - kb / max(nb, 1), "ci_low": low, "ci_high": high,
                "p": stats.mcnemar_p(ka - both, kb - both), "test": np.full(len(ka), "mcnemar")}
    banded = length_adjust.banded_frequency(a, side_a.n_tokens, b, side_b.n_tokens, bands) if adjust else None
    if banded is not None:
        low, high, p, d = banded
        return {"diff": d, "ci_low": low, "ci_high": high, "p": p, "test": np.full(len(ka), "cmh")}
    low, high = stats.newcombe_unpaired(ka, na, kb, nb)
    p, exact = stats.two_proportion_p(ka, na, kb, nb)
    return {"diff": ka / max(na, 1) - kb / max(nb, 1), "ci_low": low, "ci_high": high, "p": p,
            "test": np.where(exact, "fisher", "z")}


def _mean_test(side_a: Side, side_b: Side, paired: bool, adjust: bool, bands: int) -> dict[str, np.ndarray]:
    """Mean pooled activations: Welch / paired t, at equal length by regression on log n_tokens."""
    a, b = side_a.matrix, side_b.matrix
    na, nb = a.shape[0], b.shape[0]
    mean_a, var_a = mean_var(a)
    mean_b, var_b = mean_var(b)
    x_a, x_b = length_adjust.log_tokens(side_a.n_tokens), length_adjust.log_tokens(side_b.n_tokens)
    if paired and adjust:
        low, high, p, d = length_adjust.paired_mean_adjusted(a - b, x_a - x_b)
    elif adjust:
        low, high, p, d = length_adjust.mean_adjusted(a, x_a, b, x_b)
    elif paired:
        mean_d, var_d = mean_var(a - b)
        low, high, p = stats.paired_t(mean_d, var_d, na)
        d = mean_a - mean_b
    else:
        low, high, p = stats.welch(mean_a, var_a, na, mean_b, var_b, nb)
        d = mean_a - mean_b
    name = ("paired t" if paired else "welch") + (", log length" if adjust else "")
    return {"mean_a": mean_a, "mean_b": mean_b, "diff": d, "ci_low": low, "ci_high": high, "p": p,
            "test": np.full(len(mean_a), name)}


def mean_var(matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """Column means and variances of a documents x features matrix (the t tests', and the style layer's
    standardized effects)."""
    n = matrix.shape[0]
    total = np.asarray(matrix.sum(axis=0), float).ravel()
    squares = np.asarray(matrix.multiply(matrix).sum(axis=0), float).ravel()
    mean = total / max(n, 1)
    var = np.maximum(squares - n * mean**2, 0) / max(n - 1, 1)
    return mean, var
