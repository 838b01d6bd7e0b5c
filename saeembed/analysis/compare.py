"""The statistics of a comparison, feature by feature: the documents of each corpus as a matrix (latents,
or counted form features), and per feature the difference, its 95% interval and the test's p, paired or
not, at equal length or as the documents are. `diff` runs it on latents and on form features alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, Sequence

import numpy as np

from saeembed.analysis import length_adjust, stats
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.length_adjust import Sums, matrix_sums
from saeembed.store import Store, document_frequency, present

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix



class Side(NamedTuple):
    """The documents of one corpus taking part in a comparison, held as a matrix. The tests read a side only
    through `n`, `n_tokens`, `counts`, `band_presence` and `sums` (and `matrix` for pairs), which
    `saeembed.analysis.streamed.StreamSide` gives for a store read part by part."""

    matrix: csr_matrix  # documents x latents
    n_tokens: np.ndarray
    counts: np.ndarray  # documents in which each latent fires: counted once, used by every test

    @classmethod
    def of(cls, matrix: csr_matrix, n_tokens: np.ndarray) -> Side:
        """Any documents x features matrix (latents, counted form features) with the documents' lengths."""
        matrix = matrix.tocsr()
        return cls(matrix, np.asarray(n_tokens), document_frequency(matrix))

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    def band_presence(self, codes: np.ndarray, n_bands: int) -> np.ndarray:
        """[bands, latents]: the documents of each length band (`codes`, one per document) with each latent."""
        return length_adjust.band_presence(self.matrix, codes, n_bands)

    def sums(self, x: np.ndarray | None = None) -> Sums:
        """Per latent the sum of the values, of their squares, and of their products with `x` (one number per
        document; zeros when None): the moments the t tests read."""
        return matrix_sums(self.matrix, x)


class AnySide(Protocol):
    """What the tests read of a side: a `Side`, or `saeembed.analysis.streamed.StreamSide` (a store read by
    parts, which has no `matrix`: pairs need one)."""

    @property
    def n(self) -> int: ...
    @property
    def n_tokens(self) -> np.ndarray: ...
    @property
    def counts(self) -> np.ndarray: ...
    @property
    def matrix(self) -> csr_matrix: ...
    def band_presence(self, codes: np.ndarray, n_bands: int) -> np.ndarray: ...
    def sums(self, x: np.ndarray | None = None) -> Sums: ...


def side(store: Store, rows: np.ndarray) -> Side:
    """The store restricted to `rows` (no matrix copy when that is every row in order)."""
    tokens = store.frame["n_tokens"].to_numpy()
    if len(rows) != store.n_docs or (rows != np.arange(store.n_docs)).any():
        matrix, tokens = store.matrix[rows], tokens[rows]
    else:
        matrix = store.matrix
    return Side(matrix, tokens, document_frequency(matrix))


def compare(sides: Sequence[AnySide], config: DiffConfig) -> dict[str, np.ndarray]:
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


def _pairwise(side_a: AnySide, side_b: AnySide, config: DiffConfig) -> dict[str, np.ndarray]:
    """Every column of one comparison: counts, frequencies (or means), difference, interval, p, test."""
    na, nb = side_a.n, side_b.n
    ka, kb = side_a.counts, side_b.counts
    out = {"n_a": np.full(len(ka), na), "n_b": np.full(len(ka), nb), "count_a": ka, "count_b": kb,
           "freq_a": ka / max(na, 1), "freq_b": kb / max(nb, 1)}
    test = _mean_test if config.measure == "mean" else _frequency_test
    out.update(test(side_a, side_b, config.pair_on is not None, config.length == "adjust", config.length_bands))
    top = np.maximum(np.abs(out.get("mean_a", out["freq_a"])), np.abs(out.get("mean_b", out["freq_b"])))
    out["rel_diff"] = np.divide(out["diff"], top, out=np.zeros(len(ka)), where=top > 0)
    return out


def _frequency_test(side_a: AnySide, side_b: AnySide,
                    paired: bool, adjust: bool, bands: int) -> dict[str, np.ndarray]:
    """Document frequencies: at equal length (conditional logistic for pairs, Mantel-Haenszel within
    length bands otherwise) or as they are (exact McNemar; Fisher / z with Newcombe intervals)."""
    ka, kb, na, nb = side_a.counts, side_b.counts, side_a.n, side_b.n
    if paired and adjust:
        log_ratio = length_adjust.log_tokens(side_a.n_tokens) - length_adjust.log_tokens(side_b.n_tokens)
        low, high, p, d = length_adjust.paired_frequency(side_a.matrix, side_b.matrix, log_ratio)
        return {"diff": d, "ci_low": low, "ci_high": high, "p": p, "test": np.full(len(ka), "conditional logistic")}
    if paired:
        both = document_frequency(present(side_a.matrix).multiply(present(side_b.matrix)).tocsr())
        low, high = stats.newcombe_paired(both, ka - both, kb - both, na)
        return {"diff": ka / max(na, 1) - kb / max(nb, 1), "ci_low": low, "ci_high": high,
                "p": stats.mcnemar_p(ka - both, kb - both), "test": np.full(len(ka), "mcnemar")}
    banded = length_adjust.banded_frequency(side_a, side_b, bands) if adjust else None
    if banded is not None:
        low, high, p, d = banded
        return {"diff": d, "ci_low": low, "ci_high": high, "p": p, "test": np.full(len(ka), "cmh")}
    low, high = stats.newcombe_unpaired(ka, na, kb, nb)
    p, exact = stats.two_proportion_p(ka, na, kb, nb)
    return {"diff": ka / max(na, 1) - kb / max(nb, 1), "ci_low": low, "ci_high": high, "p": p,
            "test": np.where(exact, "fisher", "z")}


def _mean_test(side_a: AnySide, side_b: AnySide,
               paired: bool, adjust: bool, bands: int) -> dict[str, np.ndarray]:
    """Mean pooled activations: Welch / paired t, at equal length by regression on log n_tokens."""
    na, nb = side_a.n, side_b.n
    x_a, x_b = length_adjust.log_tokens(side_a.n_tokens), length_adjust.log_tokens(side_b.n_tokens)
    sums_a, sums_b = side_a.sums(x_a if adjust and not paired else None), side_b.sums(x_b if adjust and not paired
                                                                                       else None)
    mean_a, var_a = mean_var(sums_a, na)
    mean_b, var_b = mean_var(sums_b, nb)
    if paired and adjust:
        low, high, p, d = length_adjust.paired_mean_adjusted(side_a.matrix - side_b.matrix, x_a - x_b)
    elif adjust:
        low, high, p, d = length_adjust.mean_adjusted(sums_a, x_a, sums_b, x_b)
    elif paired:
        mean_d, var_d = mean_var(matrix_sums(side_a.matrix - side_b.matrix, None), na)
        low, high, p = stats.paired_t(mean_d, var_d, na)
        d = mean_a - mean_b
    else:
        low, high, p = stats.welch(mean_a, var_a, na, mean_b, var_b, nb)
        d = mean_a - mean_b
    name = ("paired t" if paired else "welch") + (", log length" if adjust else "")
    return {"mean_a": mean_a, "mean_b": mean_b, "diff": d, "ci_low": low, "ci_high": high, "p": p,
            "test": np.full(len(mean_a), name)}


def mean_var(sums: Sums, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column means and variances of n documents from their sums (the t tests', and the style layer's
    standardized effects)."""
    mean = sums.total / max(n, 1)
    var = np.maximum(sums.squares - n * mean**2, 0) / max(n - 1, 1)
    return mean, var
