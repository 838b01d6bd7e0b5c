"""Length in a diff: the gap between the corpora as a finding of its own, and latent tests that
compare documents as if they were of equal length.

With max pooling a longer document fires more latents (each extra token is another chance), so two
corpora of different lengths differ on almost every latent. The tests here take the length out:
unpaired frequencies within bands of similar length (Mantel-Haenszel), pairs conditional on each
pair's length ratio (conditional logistic regression), means by regression on log n_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Sequence

import numpy as np

from saeembed.analysis import stats
from saeembed.store import present

if TYPE_CHECKING:
    from scipy.sparse import spmatrix

# A length ratio within 5% of 1 is reported as similar length, whatever its p-value.
SIMILAR_RATIO = 1.05
# Two documents of a pair are of similar length when the longer has at most this many times the tokens.
PAIR_SIMILAR = 1.25
# Entries per chunk when counting latents per length band: bounded memory on million-row stores.
CHUNK = 1 << 22
# Pairs are grouped by their log length ratio into at most this many cells for the conditional
# logistic fit: [latents, cells] arrays instead of a pass over every discordant pair per step.
MAX_RATIO_CELLS = 256


class SideLike(Protocol):
    """What the banded test reads of a side (`saeembed.analysis.compare.Side`, or a store read by parts)."""

    @property
    def n_tokens(self) -> np.ndarray: ...

    def band_presence(self, codes: np.ndarray, n_bands: int) -> np.ndarray: ...


@dataclass
class LengthGap:
    """How the corpora differ in length (tokens pooled per document), in numbers and in words."""

    mean_tokens_a: float
    mean_tokens_b: float
    """Of B, or of all the other corpora together (`vs` mode)."""
    ratio: float
    """mean_tokens_a / mean_tokens_b."""
    p: float
    """Two-sided: Mann-Whitney U, or the Wilcoxon signed-rank test of the pairs' differences."""
    test: str
    sentence: str
    """E.g. 'documents in verbose are 2.07x longer than in concise (529 vs 256 tokens on average;
    Wilcoxon signed-rank p < 1e-9)'."""
    comparable: float | None = None
    """Unpaired frequencies with length adjust: share of the documents in a length band that holds
    documents of both corpora (the others carry no weight). Pairs: share of the pairs whose documents
    are of similar length (within `PAIR_SIMILAR` x); the tests at equal length extrapolate from them."""

    @property
    def differs(self) -> bool:
        """True when the gap is both significant and more than 5%."""
        return self.p < 0.05 and max(self.ratio, 1 / max(self.ratio, 1e-12)) >= SIMILAR_RATIO


def length_gap(names: Sequence[str], tokens: Sequence[np.ndarray], *, paired: bool,
               bands: int | None = None) -> LengthGap:
    """The length gap between the first corpus and the others (pooled; per pair when paired).
    `bands`: also measure the share of documents that length bands of that many can compare; pairs
    always measure the share of similar length."""
    from scipy import stats as sps

    a, rest = np.asarray(tokens[0], float), [np.asarray(t, float) for t in tokens[1:]]
    b = np.mean(rest, axis=0) if paired else np.concatenate(rest)
    if paired:
        test = "Wilcoxon signed-rank"
        p = float(sps.wilcoxon(a, b).pvalue) if len(a) and np.any(a != b) else 1.0
    else:
        test = "Mann-Whitney"
        p = float(sps.mannwhitneyu(a, b, method="asymptotic").pvalue) if len(a) and len(b) else 1.0
    mean_a, mean_b = float(a.mean()) if len(a) else 0.0, float(b.mean()) if len(b) else 0.0
    ratio = mean_a / mean_b if mean_b else 1.0
    other = " / ".join(names[1:])
    p = 1.0 if np.isnan(p) else p
    gap = LengthGap(mean_a, mean_b, ratio, p, test, "")
    def tail(first: float, second: float) -> str:
        return f"({first:.0f} vs {second:.0f} tokens on average; {test} p {_p_text(p)})"

    if not gap.differs:
        gap.sentence = f"{names[0]} and {other} are of similar length {tail(mean_a, mean_b)}"
    elif ratio > 1:
        gap.sentence = f"documents in {names[0]} are {_times(ratio)} longer than in {other} {tail(mean_a, mean_b)}"
    else:
        gap.sentence = f"documents in {other} are {_times(1 / ratio)} longer than in {names[0]} {tail(mean_b, mean_a)}"
    if bands and not paired:
        codes = band_codes([a, *rest], bands)
        top = max(int(c.max(initial=0)) for c in codes) + 1
        present = [np.bincount(c, minlength=top) > 0 for c in codes]
        both = present[0] & np.any(present[1:], axis=0)
        gap.comparable = float(np.mean(np.concatenate([both[c] for c in codes])))
    if paired and len(a):
        longer, shorter = np.maximum(a, b), np.maximum(np.minimum(a, b), 1)
        gap.comparable = float(np.mean(longer <= PAIR_SIMILAR * shorter))
    return gap


def _p_text(p: float) -> str:
    return "< 1e-9" if p < 1e-9 else f"= {p:.1e}" if p < 0.001 else f"= {p:.3f}"


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}".rstrip("0").rstrip(".") + "x"


def band_codes(tokens: Sequence[np.ndarray], bands: int) -> list[np.ndarray]:
    """Each document's length band: quantiles of n_tokens over every corpus together (ties share a
    band). Thin bands are kept (Mantel-Haenszel handles them; merging would compare longer with
    shorter documents again)."""
    from saeembed.analysis.lengths import length_bands

    pooled = np.concatenate([np.asarray(t) for t in tokens])
    codes = length_bands(pooled, bands, min_docs=1)
    return np.split(codes, np.cumsum([len(t) for t in tokens])[:-1])


def band_presence(matrix: spmatrix, codes: np.ndarray, n_bands: int, negative: bool = False) -> np.ndarray:
    """[bands, latents] documents of each band in which each latent fires (`negative`: has a negative
    value): one bincount over the non-zeros (band * latents + latent), in chunks of rows so memory
    stays bounded."""
    d = matrix.shape[1]
    out = np.zeros(n_bands * d, np.int64)
    indptr, counts = matrix.indptr, np.diff(matrix.indptr)
    row = 0
    while row < matrix.shape[0]:
        stop = int(np.searchsorted(indptr, indptr[row] + CHUNK, side="right")) - 1
        stop = max(stop, row + 1)
        span = slice(indptr[row], indptr[stop])
        code = np.repeat(codes[row:stop].astype(np.int64) * d, counts[row:stop]) + matrix.indices[span]
        keep = matrix.data[span] < 0 if negative else matrix.data[span] > 0
        out += np.bincount(code if keep.all() else code[keep], minlength=n_bands * d)
        row = stop
    return out.reshape(n_bands, d)


def banded_frequency(side_a: SideLike, side_b: SideLike, bands: int) -> tuple[np.ndarray, ...] | None:
    """Frequency difference within bands of similar length: (ci_low, ci_high, p, diff), Mantel-
    Haenszel. None when every document falls in one band (then the plain tests are the same thing
    and exact where counts are small)."""
    codes_a, codes_b = band_codes([side_a.n_tokens, side_b.n_tokens], bands)
    n_bands = int(max(codes_a.max(initial=0), codes_b.max(initial=0))) + 1
    docs_a, docs_b = (np.bincount(c, minlength=n_bands)[:, None] for c in (codes_a, codes_b))
    if ((docs_a + docs_b) > 0).sum() <= 1:
        return None
    return stats.mantel_haenszel(side_a.band_presence(codes_a, n_bands), docs_a,
                                 side_b.band_presence(codes_b, n_bands), docs_b)


def paired_frequency(a: spmatrix, b: spmatrix, log_ratio: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairs (row i of `a` with row i of `b`): is A's document more likely to have the latent than
    its partner of the same length? Conditional logistic regression on the discordant pairs with the
    log length ratio as covariate (`stats.conditional_logistic`), the pairs grouped by their ratio.

    Returns (ci_low, ci_high, p, diff). diff is on the frequency scale: the share of pairs that are
    discordant times (P(A has it | discordant, equal length) - P(B has it | ...)) = d/n * (2 *
    sigmoid(b0) - 1); with equal lengths this is the plain paired difference (a_only - b_only) / n.
    """
    n = a.shape[0]
    delta = (present(a) - present(b)).tocsr()
    delta.eliminate_zeros()  # left: +1 where only A's document fires, -1 where only B's does
    cells, x = ratio_cells(log_ratio)
    a_only = band_presence(delta, cells, len(x)).T
    b_only = band_presence(delta, cells, len(x), negative=True).T
    b0, se, p = stats.conditional_logistic(a_only, a_only + b_only, x)
    rate = (a_only + b_only).sum(axis=1) / max(n, 1)

    def scale(logit: np.ndarray) -> np.ndarray:
        return rate * (2 / (1 + np.exp(-logit)) - 1)

    return scale(b0 - stats.Z95 * se), scale(b0 + stats.Z95 * se), p, scale(b0)


def ratio_cells(x: np.ndarray, max_cells: int = MAX_RATIO_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's cell and the cells' covariate: the distinct values of x when there are few (token
    counts are integers), else `max_cells` quantile bins at the mean x of their pairs (a bin is a
    few hundredths of a log ratio wide: the fit barely notices)."""
    values, codes = np.unique(x, return_inverse=True)
    if len(values) <= max_cells:
        return codes.ravel(), values
    edges = np.unique(np.quantile(x, np.linspace(0, 1, max_cells + 1)[1:-1]))
    codes = np.searchsorted(edges, x, side="right")
    count = np.bincount(codes, minlength=len(edges) + 1)
    centre = np.bincount(codes, weights=x, minlength=len(edges) + 1) / np.maximum(count, 1)
    return codes, centre


def mean_adjusted(sums_a: Sums, x_a: np.ndarray, sums_b: Sums, x_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean activation of A minus B at equal length: ANCOVA with a per-latent slope on log n_tokens
    fitted within each corpus (so the slope does not absorb the corpus difference), then Welch on the
    length-corrected activations, with the slope's own uncertainty added. Each side's sums are taken with
    its x (`Side.sums(x)`). (ci_low, ci_high, p, diff)."""
    parts = [_moments(sums, x) for sums, x in ((sums_a, x_a), (sums_b, x_b))]
    sxx = sum(p["sxx"] for p in parts)
    slope = np.divide(sum(p["sxv"] for p in parts), sxx, out=np.zeros(len(sums_a.total)), where=sxx > 1e-12)
    var = [np.maximum(p["svv"] - 2 * slope * p["sxv"] + slope**2 * p["sxx"], 0) / max(p["n"] - 1, 1)
           for p in parts]
    na, nb = parts[0]["n"], parts[1]["n"]
    gap = parts[0]["mean_x"] - parts[1]["mean_x"]
    diff = parts[0]["mean_v"] - parts[1]["mean_v"] - slope * gap
    sa, sb = var[0] / max(na, 1), var[1] / max(nb, 1)
    pooled = (var[0] * max(na - 1, 0) + var[1] * max(nb - 1, 0)) / max(na + nb - 3, 1)
    slope_var = pooled / sxx if sxx > 1e-12 else 0.0
    dof_den = sa**2 / max(na - 1, 1) + sb**2 / max(nb - 1, 1)
    dof = np.divide((sa + sb) ** 2, dof_den, out=np.ones(len(sa)), where=dof_den > 0)
    low, high, p = stats.t_summary(diff, np.sqrt(sa + sb + gap**2 * slope_var), np.maximum(dof, 1))
    return low, high, p, diff


def paired_mean_adjusted(delta: spmatrix, log_ratio: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean of the pairs' differences at equal length: the intercept of delta ~ c + s * log(nA / nB)
    per latent (ordinary least squares), t on n - 2 degrees of freedom; plain paired t when every
    pair has the same ratio. (ci_low, ci_high, p, diff)."""
    m = _moments(matrix_sums(delta, log_ratio), log_ratio)
    n = m["n"]
    if m["sxx"] <= 1e-12 * max(n, 1):
        low, high, p = stats.paired_t(m["mean_v"], m["svv"] / max(n - 1, 1), n)
        return low, high, p, m["mean_v"]
    slope = m["sxv"] / m["sxx"]
    intercept = m["mean_v"] - slope * m["mean_x"]
    residual = np.maximum(m["svv"] - slope * m["sxv"], 0) / max(n - 2, 1)
    se = np.sqrt(residual * (1 / max(n, 1) + m["mean_x"] ** 2 / m["sxx"]))
    low, high, p = stats.t_summary(intercept, se, np.full(len(se), max(n - 2, 1), float))
    return low, high, p, intercept


class Sums(NamedTuple):
    """Per latent, sums over a side's documents (`Side.sums`): they add up over the parts of a store."""

    total: np.ndarray
    squares: np.ndarray
    with_x: np.ndarray
    """Sum of each value times its document's x (zeros when no x was given)."""


def matrix_sums(matrix: Any, x: np.ndarray | None) -> Sums:
    """The `Sums` of a documents x latents matrix, with x one number per document. Summed in float64 over
    chunks of entries (bounded memory), so the sums of a store's parts add up to the sums of the whole."""
    matrix = matrix.tocsr()
    d = matrix.shape[1]
    total, squares, with_x = np.zeros(d), np.zeros(d), np.zeros(d)
    for begin in range(0, matrix.nnz, CHUNK):
        span = slice(begin, min(begin + CHUNK, matrix.nnz))
        values, latents = matrix.data[span].astype(np.float64), matrix.indices[span]
        total += np.bincount(latents, weights=values, minlength=d)
        squares += np.bincount(latents, weights=values * values, minlength=d)
        if x is not None:
            row = np.searchsorted(matrix.indptr, np.arange(span.start, span.stop), side="right") - 1
            with_x += np.bincount(latents, weights=values * np.asarray(x, np.float64)[row], minlength=d)
    return Sums(total, squares, with_x)


def _moments(sums: Sums, x: np.ndarray) -> dict[str, Any]:
    """Per latent the centred sums of squares and cross-products with x, from sums taken with that x."""
    n = len(x)
    mean_x = float(x.mean()) if n else 0.0
    mean_v = sums.total / max(n, 1)
    svv = sums.squares - n * mean_v**2
    sxv = sums.with_x - n * mean_x * mean_v
    return {"n": n, "mean_x": mean_x, "mean_v": mean_v, "sxx": float(((x - mean_x) ** 2).sum()),
            "svv": np.maximum(svv, 0), "sxv": sxv}


def log_tokens(tokens: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(tokens, float), 1))

