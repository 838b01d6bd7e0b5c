"""Concept correlations: latent pairs that fire in the same documents more often than chance.

Documents are binarised (a latent is present when it fires on any token). For every pair of
latents inside the frequency band with enough shared documents, NPMI measures the association and
a one-sided test its significance, with Benjamini-Hochberg control over all the pairs tested.

The null conditions on document length: with max pooling a longer document fires more latents, so
under plain independence (the hypergeometric test over all documents) nearly every pair of common
latents co-occurs "significantly" because long documents fire both. The documents are stratified
into bands of n_tokens and each pair gets a one-sided Cochran-Mantel-Haenszel test over the bands;
with a single band (equal lengths, or `length_bands` 1) it is the exact hypergeometric test. The
pairs that only the length-blind test finds are counted (`n_length_explained`), not reported.

The co-occurrence counts come from a sparse product computed one block of latents at a time, so no
latents x latents matrix is ever held whole. The CMH statistic needs per band only the margins (how
many documents of the band each latent fires in); the shared count enters summed over the bands, so
the one product over all documents serves every band. Significant pairs that are trivial (the two
latents peak on the same or adjacent token, their decoder directions nearly coincide, or their labels
say the same) are dropped and counted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from saeembed.analysis import stats
from saeembed.analysis.config import CorrelationConfig
from saeembed.analysis.lengths import band_counts, length_bands
from saeembed.analysis.pairing import align_pairs
from saeembed.analysis.summaries import Summary, count
from saeembed.store import Store, check_compatible, document_frequency, present
from saeembed.stream import Chunk, OnePart, StoreStream

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csc_matrix, csr_matrix

    from saeembed.labels.store import Labels


log = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9']+")
DROP_REASONS = ("same_or_adjacent_token", "decoder_cosine", "similar_labels")
# Co-occurrence counts held at once when a store of several parts is read (int32 cells: 256 MB): the blocks of
# latents whose counts fit are summed over one pass of the parts.
COOCCURRENCE_CELLS = 1 << 26


@dataclass
class CorrelationResult:
    """Significant, non-trivial latent pairs and an account of everything that was filtered."""

    table: pl.DataFrame
    """polars DataFrame: latent_a, label_a, latent_b, label_b, npmi, support, freq_a, freq_b, expected,
    lift, p, q, near_token_share, decoder_cosine; strongest NPMI first. `npmi`, `freq_*` are over all
    documents; `expected` is the shared count the null expects (length-adjusted: the sum over length
    bands of a_b c_b / N_b), `lift` = support / expected, and p, q are of the length-stratified test."""
    n_docs: int
    n_band: int
    """Latents inside the frequency band with at least `min_support` documents."""
    n_tested: int
    """Pairs with at least `min_support` shared documents: the pairs BH controls over."""
    n_significant: int
    dropped: dict[str, int] = field(default_factory=dict)
    """Significant pairs dropped as trivial, per reason (see DROP_REASONS)."""
    dropped_pairs: pl.DataFrame | None = None
    """The dropped pairs with their `reason`, for inspection."""
    notes: list[str] = field(default_factory=list)
    length_bands: int = 1
    """Length bands the documents were stratified into (1: the length-blind hypergeometric test)."""
    n_length_explained: int = 0
    """Pairs significant under the length-blind hypergeometric test but not once length is
    conditioned on: they co-occur only through length. Not reported."""
    document_sae: bool = False
    """The SAE encodes whole documents (every document has k latents): length links pairs through what
    longer documents say, not through more latents firing."""
    paired: bool = False
    """Cross correlations: the rows are pairs of documents (a latent of one side x a latent of the other)."""

    def summary(self) -> CorrelationSummary:
        """The record every renderer reads (`CorrelationSummary`)."""
        return CorrelationSummary(
            n_docs=self.n_docs, unit="pairs of documents" if self.paired else "documents", n_band=self.n_band,
            n_tested=self.n_tested, n_significant=self.n_significant,
            dropped={reason: n for reason, n in self.dropped.items() if n}, n_reported=len(self.table),
            length_bands=self.length_bands, n_length_explained=self.n_length_explained,
            document_sae=self.document_sae, notes=list(self.notes))


@dataclass(frozen=True)
class CorrelationSummary(Summary):
    """What `correlations` found, as one record (`saeembed.analysis.summaries`)."""

    n_docs: int
    unit: str
    """documents, or pairs of documents (cross correlations)"""
    n_band: int
    n_tested: int
    n_significant: int
    dropped: dict[str, int]
    """Significant pairs dropped as trivial, per reason (`DROP_REASONS`)."""
    n_reported: int
    length_bands: int
    n_length_explained: int
    """Pairs that co-occur only through length (not reported)."""
    document_sae: bool
    notes: list[str]

    def lines(self) -> list[str]:
        dropped = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in self.dropped.items())
        why = ("longer documents say more things, each kept among its k latents" if self.document_sae
               else "longer documents fire more latents")
        return [f"{self.n_docs:,} {self.unit}; {self.n_band:,} latents in the frequency band with enough support; "
                f"{self.n_tested:,} pairs tested; {self.n_significant:,} significant (Benjamini-Hochberg)"
                + (f", of which dropped as trivial: {dropped}" if dropped else "")
                + f"; {count(self.n_reported, 'pair')} reported",
                f"tested within {self.length_bands} length bands (Cochran-Mantel-Haenszel): "
                f"{self.n_length_explained:,} more pairs co-occur only through length ({why}); not reported"
                if self.length_bands > 1 else "one length band: the test ignores length (hypergeometric)"]


class _Null(NamedTuple):
    """What a pair's test needs besides its shared count: per length band, the documents and the
    documents each latent fires in. One band is the plain hypergeometric null."""

    sizes: np.ndarray
    """[bands] documents per band."""
    count_a: np.ndarray
    """[bands, latents of side a] documents of the band in which the latent fires."""
    count_b: np.ndarray
    """[bands, latents of side b], the same (the very array when both sides are one corpus)."""


def correlations(store: Store | StoreStream, config: CorrelationConfig | None = None, *, labels: Labels | None = None,
                 decoder: np.ndarray | None = None) -> CorrelationResult:
    """Latent pairs that co-occur in documents more than chance at equal length (NPMI + a
    Cochran-Mantel-Haenszel test over length bands + BH).

    Args:
        store: an embedded corpus, loaded or read part by part (`saeembed.stream.StoreStream`: the same
            pairs; the co-occurrence counts summed over passes of the parts).
        config: support, frequency band, length bands, alpha and the trivial-pair thresholds.
        labels: `saeembed.labels.Labels`; default the labels found for the store's SAE.
        decoder: [d_sae, d_in] decoder directions; default loaded from the store's SAE when it is
            reachable (else the decoder filter is skipped, and a note says so).

    Examples:
        >>> result = correlations(load_store("tweets.parquet"))  # doctest: +SKIP
        >>> result.table.head(10)  # doctest: +SKIP
    """
    from saeembed.labels import labels_for

    config = config or CorrelationConfig()
    labels = labels if labels is not None else labels_for(store)
    counts = store.counts if isinstance(store, StoreStream) else document_frequency(store.matrix)
    band = _band_of(counts, store.n_docs, config)
    null, notes = _null_of(store, band, config.length_bands)
    if isinstance(store, StoreStream):  # blocks summed over the parts, a group of blocks per pass
        pairs, n_tested = _test_blocks(_cooccurrence(store, band, config), null, config, same=True)
    else:  # one sparse product per block
        x = _binary_columns(store.matrix, band)
        pairs, n_tested = _pair_tests(x, x, null, config, same=True)
    result, n_length_explained = _finish(pairs, n_tested, band, band, store.n_docs, config, labels)
    decoder, decoder_notes = _decoder_or_note(decoder, store.meta)
    near = _near_token_share(store, band, result["i"], result["j"], result["support"])
    cosine = _cosine(decoder, band[result["i"]], band[result["j"]])
    found = _filter(result, near, cosine, labels, config, store.n_docs, len(band), n_tested, notes + decoder_notes)
    return replace(found, length_bands=len(null.sizes), n_length_explained=n_length_explained,
                   document_sae=store.meta["sae"].get("reads") == "document")


def _pair_best_work(chunk: Chunk, arg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, one part's strongest shared row (its larger smaller activation; -inf, -1 when none)."""
    from saeembed.store import column_entries

    latents, latent_a, latent_b = arg
    strength, best = np.full(len(latent_a), -np.inf), np.full(len(latent_a), -1, np.int64)
    rows, which, values = column_entries(chunk.matrix, latents)  # in row order
    positive = values > 0
    rows, which, values = rows[positive], which[positive], values[positive]
    order = np.argsort(which, kind="stable")  # grouped by latent, rows ascending within each
    bounds = np.searchsorted(which[order], np.arange(len(latents) + 1))
    for k, (a, b) in enumerate(zip(np.searchsorted(latents, latent_a), np.searchsorted(latents, latent_b))):
        span_a, span_b = order[bounds[a]:bounds[a + 1]], order[bounds[b]:bounds[b + 1]]
        shared, at_a, at_b = np.intersect1d(rows[span_a], rows[span_b], assume_unique=True, return_indices=True)
        if len(shared):
            both = np.minimum(values[span_a][at_a], values[span_b][at_b])
            strength[k], best[k] = both.max(), int(shared[np.argmax(both)])
    return strength, best


def pair_example_rows(store: Store | StoreStream, latent_a: np.ndarray, latent_b: np.ndarray) -> np.ndarray:
    """Per pair, the document where both latents fire most strongly (the larger of their two smaller
    activations; the first such row), or -1 when they share none: part by part."""
    latent_a, latent_b = np.asarray(latent_a, np.int64), np.asarray(latent_b, np.int64)
    best_value, best_row = np.full(len(latent_a), -np.inf), np.full(len(latent_a), -1, np.int64)
    latents = np.unique(np.concatenate([latent_a, latent_b]))
    parts = _part_rows(store)
    for start, (strength, row) in zip(parts, _each_part(store, _pair_best_work, [(latents, latent_a, latent_b)]
                                                        * (len(parts) - 1))):
        better = strength > best_value  # an earlier part keeps a tie: the first row
        best_value[better], best_row[better] = strength[better], row[better] + start
    return best_row


def _each_part(store: Store | StoreStream, work: Callable[[Chunk, Any], Any], args: list[Any]) -> Iterator[Any]:
    """`work(part, args[k])` over a store's parts in order (`StoreStream.map`); a loaded store is one part."""
    return (store if isinstance(store, StoreStream) else OnePart(store)).map(work, args)


def _part_rows(store: Store | StoreStream) -> np.ndarray:
    return store.part_rows if isinstance(store, StoreStream) else np.array([0, store.n_docs])


def cross_correlations(a: Store, b: Store, pair_on: str, config: CorrelationConfig | None = None, *,
                       labels: Labels | None = None, decoder: np.ndarray | None = None) -> CorrelationResult:
    """Latent of a's document x latent of b's partner document (e.g. prompt x response), on rows
    aligned by `pair_on`. A latent paired with itself, or with a near-duplicate direction, is the
    response echoing the prompt: dropped as trivial.

    The length bands are of b's document (the response): a's latents follow a's length and b's follow
    b's, and the two lengths are usually correlated (long prompts, long answers). Holding either
    length fixed cuts that path; the sum of the two would not (within a band of the sum, a long
    prompt still goes with a short response). One side keeps the bands as full as in `correlations`
    (a grid of both lengths would square their number)."""
    from saeembed.labels import labels_for

    config = config or CorrelationConfig()
    check_compatible([(str(a.path), a.meta), (str(b.path), b.meta)])
    labels = labels if labels is not None else labels_for(a)
    rows_a, rows_b = align_pairs([a, b], pair_on)
    ma, mb = a.matrix[rows_a], b.matrix[rows_b]
    band_a, band_b = _band(ma, config), _band(mb, config)
    xa, xb = _binary_columns(ma, band_a), _binary_columns(mb, band_b)
    null, notes = _null(xa, xb, b.frame["n_tokens"].to_numpy()[rows_b], config.length_bands)
    pairs, n_tested = _pair_tests(xa, xb, null, config, same=False)
    result, n_length_explained = _finish(pairs, n_tested, band_a, band_b, len(rows_a), config, labels)
    decoder, decoder_notes = _decoder_or_note(decoder, a.meta)
    latent_a, latent_b = band_a[result["i"]], band_b[result["j"]]
    cosine = _cosine(decoder, latent_a, latent_b)
    if cosine is None:  # without the decoder, at least the same latent on both sides is an echo
        cosine = np.where(latent_a == latent_b, 1.0, np.nan)
    near = np.full(len(latent_a), np.nan)
    found = _filter(result, near, cosine, labels, config, len(rows_a), len(band_a) + len(band_b), n_tested,
                    notes + decoder_notes)
    return replace(found, length_bands=len(null.sizes), n_length_explained=n_length_explained, paired=True)


def _band(matrix: csr_matrix, config: CorrelationConfig) -> np.ndarray:
    """Latents inside the frequency band that fire in at least `min_support` documents."""
    return _band_of(document_frequency(matrix), matrix.shape[0], config)


def _band_of(counts: np.ndarray, n_docs: int, config: CorrelationConfig) -> np.ndarray:
    freq = counts / max(n_docs, 1)
    return np.flatnonzero((freq >= config.min_freq) & (freq <= config.max_freq) & (counts >= config.min_support))


def _binary_columns(matrix: csr_matrix, columns: np.ndarray) -> csc_matrix:
    """docs x len(columns) CSC matrix of 0/1 presence, float32 (scipy multiplies floats fastest)."""
    return present(matrix[:, columns].tocsc())


def _null(xa: csc_matrix, xb: csc_matrix, n_tokens: np.ndarray, bands: int | None) -> tuple[_Null, list[str]]:
    """The documents' length bands and each latent's count per band (one sparse product per side)."""
    codes = length_bands(n_tokens, bands)
    n_bands = int(codes.max()) + 1 if len(codes) else 1
    count_a = band_counts(xa, codes, n_bands)
    count_b = count_a if xb is xa else band_counts(xb, codes, n_bands)
    return _Null(np.bincount(codes, minlength=n_bands), count_a, count_b), _band_notes(bands, n_bands)


def _null_of(store: Store | StoreStream, band: np.ndarray, bands: int | None) -> tuple[_Null, list[str]]:
    """`_null` of one store, its band latents' counts per length band summed over its parts."""
    codes = length_bands(store.n_tokens if isinstance(store, StoreStream) else store.frame["n_tokens"].to_numpy(),
                         bands)
    n_bands = int(codes.max()) + 1 if len(codes) else 1
    parts = _part_rows(store)
    args = [(band, codes[lo:hi], n_bands) for lo, hi in zip(parts[:-1], parts[1:])]
    count = sum(_each_part(store, _band_count_work, args), np.zeros((n_bands, len(band)), np.int64))
    return _Null(np.bincount(codes, minlength=n_bands), count, count), _band_notes(bands, n_bands)


def _band_count_work(chunk: Chunk, arg: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    band, codes, n_bands = arg
    return band_counts(_binary_columns(chunk.matrix, band), codes, n_bands)


def _band_notes(bands: int | None, n_bands: int) -> list[str]:
    if bands and bands > 1 and n_bands < bands:
        return [f"{n_bands} length band{'s' if n_bands > 1 else ''} instead of {bands}: documents of equal "
                f"length share a band, and a band needs enough documents"
                + ("; with one band the test ignores length" if n_bands == 1 else "")]
    return []


def _cooccurrence(store: StoreStream, band: np.ndarray,
                  config: CorrelationConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(first latent of the block, i, j, shared documents) of the band latents' co-occurring pairs, one block
    of `config.block` latents at a time, summed over the parts: the parts are read once per group of blocks
    whose counts fit in `COOCCURRENCE_CELLS` (a store of one part keeps its blocks' sparse products)."""
    starts = list(range(0, len(band), config.block))
    per_pass = max(1, COOCCURRENCE_CELLS // max(config.block * len(band), 1))
    n_parts = len(_part_rows(store)) - 1
    for first in range(0, len(starts), per_pass):
        group = starts[first:first + per_pass]
        total: dict[int, Any] = {}
        for blocks in store.map(_cooccurrence_work, [(band, group, config.block)] * n_parts):
            for start, block in zip(group, blocks):
                if start in total:  # another part: add up as dense int32 (a sum of sparse blocks fills in)
                    if not isinstance(total[start], np.ndarray):
                        total[start] = np.rint(total[start].toarray()).astype(np.int32)
                    total[start] += np.rint(block.toarray()).astype(np.int32)
                else:
                    total[start] = block
        for start in group:
            block = total.pop(start)
            if isinstance(block, np.ndarray):
                i, j = np.nonzero(block)
                yield start, i.astype(np.int64) + start, j.astype(np.int64), block[i, j].astype(np.int64)
            else:
                block = block.tocoo()
                yield (start, block.row.astype(np.int64) + start, block.col.astype(np.int64),
                       np.rint(block.data).astype(np.int64))


def _cooccurrence_work(chunk: Chunk, arg: tuple[np.ndarray, list[int], int]) -> list[csr_matrix]:
    """One part's shared-document counts of each block of band latents (rows) with every band latent."""
    band, group, block = arg
    x = _binary_columns(chunk.matrix, band)
    x_csr = x.tocsr()
    return [x[:, start:min(start + block, len(band))].T.tocsr() @ x_csr for start in group]


def _pair_tests(xa: csc_matrix, xb: csc_matrix, null: _Null, config: CorrelationConfig,
                same: bool) -> tuple[dict[str, np.ndarray], int]:
    """Co-occurrence counts block by block (a's latents x b's); see `_test_blocks`."""
    xb_csr = xb.tocsr()

    def blocks() -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        for start in range(0, xa.shape[1], config.block):
            stop = min(start + config.block, xa.shape[1])
            block = (xa[:, start:stop].T.tocsr() @ xb_csr).tocoo()
            yield (start, block.row.astype(np.int64) + start, block.col.astype(np.int64),
                   np.rint(block.data).astype(np.int64))
    return _test_blocks(blocks(), null, config, same)


def _test_blocks(blocks: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]], null: _Null,
                 config: CorrelationConfig, same: bool) -> tuple[dict[str, np.ndarray], int]:
    """Both nulls' p of every pair with enough support, block by block.

    Keeps only pairs with p <= alpha under either null (no pair above can reach q <= alpha), and
    returns how many pairs were tested in all, so the BH q-values of the kept ones stay exact.
    """
    kept: dict[str, list[np.ndarray]] = {key: [] for key in ("i", "j", "support", "expected", "p", "p_plain")}
    n_tested = 0
    for _, i, j, n in blocks:
        keep = n >= config.min_support
        if same:
            keep &= j > i
        n_tested += int(keep.sum())
        for key, value in _test_pairs(i[keep], j[keep], n[keep], null, config.alpha).items():
            kept[key].append(value)
    pairs = {k: np.concatenate(v) if v else np.zeros(0) for k, v in kept.items()}
    pairs["count_a"], pairs["count_b"] = null.count_a.sum(axis=0), null.count_b.sum(axis=0)
    return pairs, n_tested


def _test_pairs(i: np.ndarray, j: np.ndarray, n: np.ndarray, null: _Null, alpha: float) -> dict[str, np.ndarray]:
    """The length-blind hypergeometric p and the length-stratified p of pairs sharing n documents;
    only the pairs with either p <= alpha are returned."""
    n_docs = int(null.sizes.sum())
    ca, cb = null.count_a.sum(axis=0)[i], null.count_b.sum(axis=0)[j]
    p_plain = np.ones(len(n))
    above = n * n_docs > ca * cb  # only positive association can reach a small one-sided p
    p_plain[above] = stats.hypergeom_sf(n[above], n_docs, ca[above], cb[above], cutoff=alpha)
    if len(null.sizes) == 1:
        expected, p = ca * cb / max(n_docs, 1), p_plain
    else:
        expected, p = _cmh(i, j, n, null)
    small = (p <= alpha) | (p_plain <= alpha)
    return {"i": i[small], "j": j[small], "support": n[small], "expected": expected[small], "p": p[small],
            "p_plain": p_plain[small]}


def _cmh(i: np.ndarray, j: np.ndarray, n: np.ndarray, null: _Null,
         chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Length-adjusted expected shared count and one-sided CMH p of each pair; pairs in chunks so the
    [bands, pairs] gathers stay small. Pairs at or below their expectation keep p = 1 unexamined."""
    expected, p = np.empty(len(n)), np.ones(len(n))
    for start in range(0, len(n), chunk):
        part = slice(start, start + chunk)
        a, c = null.count_a[:, i[part]], null.count_b[:, j[part]]
        sizes = null.sizes[:, None].astype(float)
        expected[part] = (a * (c / sizes)).sum(axis=0)
        # the variance only where the count exceeds its expectation: a one-sided p is 1 elsewhere anyway
        up = np.flatnonzero(n[part] - 0.5 > expected[part])
        mean, variance, third = stats.cmh_moments(a[:, up], c[:, up], null.sizes)
        p[start + up] = stats.cmh_upper(n[part][up], mean, variance, third)
    return expected, p


def _finish(pairs: dict[str, np.ndarray], n_tested: int, band_a: np.ndarray, band_b: np.ndarray, n_docs: int,
            config: CorrelationConfig, labels: Labels | None) -> tuple[dict[str, np.ndarray], int]:
    """NPMI and q for the kept pairs; only the significant ones go on. Also returns how many pairs
    only the length-blind test calls significant."""
    m = max(n_tested, len(pairs["p"]))
    q = stats.benjamini_hochberg(pairs["p"], m=m)
    significant = q <= config.alpha
    n_length_explained = int(((stats.benjamini_hochberg(pairs["p_plain"], m=m) <= config.alpha) & ~significant).sum())
    i, j = pairs["i"][significant].astype(np.int64), pairs["j"][significant].astype(np.int64)
    support = pairs["support"][significant].astype(np.int64)
    ca, cb = pairs["count_a"][i], pairs["count_b"][j]
    return {"i": i, "j": j, "support": support, "count_a": ca, "count_b": cb, "p": pairs["p"][significant],
            "q": q[significant], "npmi": npmi(support, ca, cb, n_docs), "expected": pairs["expected"][significant],
            "latent_a": band_a[i].astype(np.int32), "latent_b": band_b[j].astype(np.int32)}, n_length_explained


def npmi(both: np.ndarray, count_a: np.ndarray, count_b: np.ndarray, n_docs: int) -> np.ndarray:
    """Normalised PMI in [-1, 1] from document counts: log(P(a,b) / P(a)P(b)) / -log P(a,b)."""
    p_ab = np.asarray(both, float) / n_docs
    pmi = np.log(np.maximum(p_ab, 1e-300) * n_docs * n_docs / (np.asarray(count_a, float) * count_b))
    denominator = -np.log(np.maximum(p_ab, 1e-300))
    return np.divide(pmi, denominator, out=np.ones_like(pmi), where=denominator > 0)


def _filter(result: dict[str, np.ndarray], near: np.ndarray, cosine: np.ndarray | None, labels: Labels,
            config: CorrelationConfig, n_docs: int, n_band: int, n_tested: int, notes: list[str]) -> CorrelationResult:
    import polars as pl

    la = [labels.get(int(x)) for x in result["latent_a"]]
    lb = [labels.get(int(x)) for x in result["latent_b"]]
    cosine = np.full(len(la), np.nan) if cosine is None else cosine
    reason = np.full(len(la), None, dtype=object)
    similar = _label_overlap(result["latent_a"], result["latent_b"], labels) >= config.max_label_overlap
    for name, hit in reversed(list(zip(DROP_REASONS, (near > config.max_near_token,
                                                      cosine > config.max_decoder_cosine, similar)))):
        reason[hit] = name  # reversed: a pair dropped for several reasons counts under the first
    table = pl.DataFrame({
        "latent_a": result["latent_a"], "label_a": pl.Series(la, dtype=pl.Utf8),
        "latent_b": result["latent_b"], "label_b": pl.Series(lb, dtype=pl.Utf8),
        "npmi": result["npmi"], "support": result["support"],
        "freq_a": result["count_a"] / n_docs, "freq_b": result["count_b"] / n_docs,
        "expected": result["expected"], "lift": result["support"] / np.maximum(result["expected"], 1e-12),
        "p": result["p"], "q": result["q"],
        "near_token_share": near, "decoder_cosine": cosine, "reason": pl.Series(reason.tolist(), dtype=pl.Utf8),
    }).with_columns(pl.col("near_token_share", "decoder_cosine").fill_nan(None)).sort(  # ties: by latent
        ["npmi", "latent_a", "latent_b"], descending=[True, False, False])
    dropped = table.filter(pl.col("reason").is_not_null())
    counts = {name: int((dropped["reason"] == name).sum()) for name in DROP_REASONS}
    return CorrelationResult(table.filter(pl.col("reason").is_null()).drop("reason"), n_docs, n_band, n_tested,
                             len(table), counts, dropped, notes)


def _near_token_share(store: Store | StoreStream, band: np.ndarray, i: np.ndarray, j: np.ndarray,
                      support: np.ndarray) -> np.ndarray:
    """Per pair, the share of shared documents where both latents peak on the same token or on two
    adjacent tokens (one's span ends where, or one character before, the other's begins); counted part
    by part."""
    if not len(i):
        return np.zeros(0)
    near = sum(_each_part(store, _near_counts, [(band, i, j)] * (len(_part_rows(store)) - 1)), np.zeros(len(i)))
    return near / np.maximum(support, 1)


def _near_counts(chunk: Chunk, arg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per pair (band positions i, j), the documents of one part where the two peak on the same or adjacent
    tokens. Counted with sparse products over (document, character position) keys, never per pair."""
    import scipy.sparse as sp

    band, i, j = arg
    m = chunk.matrix
    column = np.full(m.shape[1], -1)
    column[band] = np.arange(len(band))
    take = (column[m.indices] >= 0) & (m.data > 0)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))[take]
    cols = column[m.indices[take]]
    start, end = chunk.peak_start[take].astype(np.int64), chunk.peak_end[take].astype(np.int64)
    if not len(rows):
        return np.zeros(len(i))
    width = int(end.max(initial=0)) + 2
    keys, key_ids = np.unique(rows * width + start, return_inverse=True)

    def at(positions: np.ndarray) -> Any:
        """latents x keys: latent peaks at this (document, position) key."""
        wanted = rows * width + positions
        slot = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        hit = keys[slot] == wanted
        return sp.csr_matrix((np.ones(hit.sum(), np.float32), (cols[hit], slot[hit])), shape=(len(band), len(keys)))

    starts = sp.csr_matrix((np.ones(len(cols), np.float32), (cols, key_ids)), shape=(len(band), len(keys)))
    same = starts @ starts.T
    adjacent = (at(end) + at(end + 1)) @ starts.T  # [a, b]: a's span ends at (or just before) b's start
    near = (same + adjacent + adjacent.T).tocsr()
    return np.rint(np.asarray(near[i, j]).ravel())


def _decoder_or_note(decoder: np.ndarray | None, meta: dict[str, Any]) -> tuple[np.ndarray | None, list[str]]:
    """The caller's decoder, else the store's SAE's, else None with a note saying why the filter is off."""
    if decoder is not None:
        return decoder, []
    decoder, note = decoder_directions(meta)
    return decoder, [note] if note else []


def decoder_directions(meta: dict[str, Any]) -> tuple[np.ndarray | None, str | None]:
    """The SAE's decoder rows [d_sae, d_in] when its files can be found locally, else (None, why)."""
    from saeembed.errors import SaeEmbedError
    from saeembed.sae import load_sae

    info = meta.get("sae", {})
    try:
        # local_only: a store's metadata (anyone can edit it) must never send an analysis to the hub
        sae = load_sae(info.get("source", ""), layer=info.get("layer"), fmt=info.get("format"), local_only=True)
    except (SaeEmbedError, OSError, ValueError) as exc:
        return None, f"decoder-direction filter skipped: the SAE {info.get('source')!r} is not available here ({exc})"
    if info.get("fingerprint") and sae.info.fingerprint != info["fingerprint"]:
        return None, f"decoder-direction filter skipped: the SAE at {info.get('source')!r} changed since embedding"
    return sae.W_dec.float().numpy(), None


def _cosine(decoder: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    if decoder is None:
        return None
    out = np.empty(len(a))
    norms = np.linalg.norm(decoder, axis=1)
    for start in range(0, len(a), 65536):  # bounded memory: two [chunk, d_in] gathers at a time
        x, y = a[start:start + 65536], b[start:start + 65536]
        out[start:start + len(x)] = np.einsum("ij,ij->i", decoder[x], decoder[y]) / np.maximum(norms[x] * norms[y],
                                                                                                1e-12)
    return out


def _label_overlap(latents_a: np.ndarray, latents_b: np.ndarray, labels: Labels) -> np.ndarray:
    """Per pair, the Jaccard overlap of the two labels' words (0 when either is unlabelled)."""
    import scipy.sparse as sp

    vocab: dict[str, int] = {}
    rows, cols = [], []
    unique = np.unique(np.concatenate([latents_a, latents_b])) if len(latents_a) else np.zeros(0, int)
    slot = {int(latent): n for n, latent in enumerate(unique)}
    for latent, n in slot.items():
        for word in set(_WORD.findall((labels.get(latent) or "").lower())):
            rows.append(n)
            cols.append(vocab.setdefault(word, len(vocab)))
    words = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(unique), max(len(vocab), 1)))
    size = np.asarray(words.sum(axis=1)).ravel()
    ia = np.array([slot[int(x)] for x in latents_a], dtype=np.int64)
    ib = np.array([slot[int(x)] for x in latents_b], dtype=np.int64)
    shared = np.asarray(words[ia].multiply(words[ib]).sum(axis=1)).ravel()
    union = size[ia] + size[ib] - shared
    return np.divide(shared, union, out=np.zeros(len(ia)), where=(size[ia] > 0) & (size[ib] > 0))
