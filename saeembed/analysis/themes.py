"""Themes: findings that say the same thing, grouped so a diff reads as a few concepts, not a flood.

An SAE splits one concept over several latents (feature splitting, near-duplicate directions), and a
difference in one concept moves all of them. Two findings in the same direction are linked when
their latents fire on nearly the same documents (Jaccard of their document sets among the compared
documents, corrected for chance), peak on the same token in most documents they share, or have
nearly the same decoder direction. Themes are grown greedily: the strongest finding not yet placed
leads a theme of every unplaced finding linked to it, so each member is directly like its lead (no
chains of look-alikes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from saeembed.analysis.config import DiffConfig
from saeembed.analysis.evidence import Entries

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix, spmatrix


# Findings compared per block of the co-occurrence products: memory ~ BLOCK x findings.
BLOCK = 512
# Dense co-occurrence products up to this many findings, when they fill this share of the
# documents x findings matrix (sparse products cost ~ share^2 as many, but each ~100x a BLAS step);
# DENSE_CELLS bounds the documents x findings chunk converted at a time.
DENSE_FINDINGS = 4096
DENSE_SHARE = 0.1
DENSE_CELLS = 1 << 24
# Fewest shared documents before "peaks on the same token in most of them" means anything, and the
# least share of the rarer latent's documents they must share (else they mostly fire apart).
MIN_SHARED = 5
MIN_SHARED_SHARE = 0.2


def assign_themes(entries: Sequence[Entries], sizes: Sequence[int], signs: np.ndarray, config: DiffConfig,
                  decoder: np.ndarray | None = None, latents: np.ndarray | None = None) -> np.ndarray:
    """Theme id (1, 2, ...) of each finding; findings ordered strongest first, `entries[k]` of corpus
    k built over them in that order, `sizes[k]` its compared documents. `decoder` (rows = latents,
    with `latents` the findings' ids) adds the decoder-direction link."""
    n = len(signs)
    if not n:
        return np.zeros(0, np.int32)
    fires, peaks = _presence(entries, sizes, n)
    size = np.asarray(fires.sum(axis=0)).ravel()
    blocks = ((begin, shared, same) for (begin, shared), (_, same) in zip(_gram_blocks(fires), _gram_blocks(peaks)))
    return themes_of(_links(blocks, size, max(int(sum(sizes)), 1), signs, config), signs, config, decoder, latents)


def themes_of(links: spmatrix, signs: np.ndarray, config: DiffConfig, decoder: np.ndarray | None,
              latents: np.ndarray | None) -> np.ndarray:
    """Themes from the co-firing links, with the decoder-direction link added when a decoder is given."""
    if decoder is not None and latents is not None:
        links = links + _near_directions(decoder, latents, signs, config.theme_cosine)
    return _greedy(links.tocsr(), len(signs))


def _presence(entries: Sequence[Entries], sizes: Sequence[int], n: int) -> tuple[Any, Any]:
    """Documents x findings (fires) and (document, peak character) keys x findings (peaks there),
    over the compared documents of every corpus."""

    offsets = np.concatenate([[0], np.cumsum(sizes)])
    doc = np.concatenate([e.doc + offsets[k] for k, e in enumerate(entries)])
    which = np.concatenate([e.which for e in entries])
    start = np.concatenate([e.start for e in entries])
    return presence(doc, which, start, int(offsets[-1]), n)


def presence(doc: np.ndarray, which: np.ndarray, start: np.ndarray, n_docs: int, n: int) -> tuple[Any, Any]:
    """(fires, peaks) of findings' entries: `doc` (0..n_docs-1), `which` finding, `start` its peak's character."""
    import scipy.sparse as sp

    ones = np.ones(len(doc), np.float32)
    fires = sp.csr_matrix((ones, (doc, which)), shape=(n_docs, n))
    _, key = np.unique(doc * (int(start.max(initial=0)) + 1) + start, return_inverse=True)
    peaks = sp.csr_matrix((ones, (key.ravel(), which)), shape=(int(key.max(initial=-1)) + 1, n))
    return fires, peaks


def links_of(size: np.ndarray, shared: Any, same: Any, n_docs: int, signs: np.ndarray,
             config: DiffConfig) -> spmatrix:
    """The links from whole co-occurrence counts (findings x findings, dense or sparse), compared as float32
    like the blocks of `_gram_blocks`, so a store read by parts links exactly as one loaded."""
    def rows(counts: Any, begin: int) -> np.ndarray:
        block = counts[begin:begin + BLOCK]
        return (block.toarray() if hasattr(block, "toarray") else np.asarray(block)).astype(np.float32)

    blocks = ((begin, rows(shared, begin), rows(same, begin)) for begin in range(0, len(size), BLOCK))
    return _links(blocks, np.asarray(size, np.float32), max(n_docs, 1), signs, config)


def _links(blocks: Iterable[tuple[int, np.ndarray, np.ndarray]], size: np.ndarray, n_docs: int, signs: np.ndarray,
           config: DiffConfig) -> spmatrix:
    """Symmetric sparse matrix of linked finding pairs: co-firing or same-token peaks, same sign. `blocks`
    gives rows `begin...` of the documents-shared and same-peak counts."""
    import scipy.sparse as sp

    n = len(signs)
    rows, cols = [], []
    for begin, shared, same in blocks:
        i = np.arange(begin, begin + len(shared))[:, None]
        a, b = size[i], size[None, :]
        keep = _beyond_chance_jaccard(shared, a, b, n_docs) >= config.theme_jaccard
        together = (shared >= MIN_SHARED) & (shared >= MIN_SHARED_SHARE * np.minimum(a, b))
        keep |= together & (same >= config.theme_same_peak * shared)
        keep &= (i < np.arange(n)[None, :]) & (signs[i] == signs[None, :])
        r, c = np.nonzero(keep)
        rows.append(r + begin)
        cols.append(c)
    i, j = np.concatenate(rows), np.concatenate(cols)
    half = sp.coo_matrix((np.ones(len(i), np.float32), (i, j)), shape=(n, n))
    return (half + half.T).tocsr()


def _beyond_chance_jaccard(shared: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Jaccard of two document sets corrected for chance, as Cohen's kappa corrects agreement:
    (J - J0) / (1 - J0), J0 the Jaccard of independent sets of these sizes. Two latents that each
    fire on 70% of the documents overlap on half of them by chance alone (J ~ 0.54): not a theme."""
    jaccard = shared / np.maximum(a + b - shared, 1)
    expected = a * b / n
    chance = expected / np.maximum(a + b - expected, 1e-12)
    return (jaccard - chance) / np.maximum(1 - chance, 1e-12)


def _gram_blocks(matrix: spmatrix) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, dense block) of matrix.T @ matrix, BLOCK rows at a time. A dense product (in
    chunks of documents) when the findings are few enough and fire often together, as on long
    documents where sparse products slow to a crawl; else sparse products per block."""
    n_docs, n = matrix.shape
    if n <= DENSE_FINDINGS and matrix.nnz > DENSE_SHARE * n_docs * n:
        gram = np.zeros((n, n), np.float32)
        step = max(1, DENSE_CELLS // max(n, 1))
        for start in range(0, n_docs, step):
            chunk = matrix[start:start + step].toarray()
            gram += chunk.T @ chunk
        for begin in range(0, n, BLOCK):
            yield begin, gram[begin:begin + BLOCK]
        return
    transposed = matrix.T.tocsr()
    for begin in range(0, n, BLOCK):
        yield begin, (transposed[begin:begin + BLOCK] @ matrix).toarray()


def _near_directions(decoder: np.ndarray, latents: np.ndarray, signs: np.ndarray, threshold: float) -> csr_matrix:
    """Symmetric sparse matrix of finding pairs (same sign) whose decoder directions have cosine > threshold."""
    import scipy.sparse as sp

    rows = np.asarray(decoder[latents], np.float32)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    pairs_i, pairs_j = [], []
    for begin in range(0, len(rows), BLOCK):
        cosine = rows[begin:begin + BLOCK] @ rows.T
        i, j = np.nonzero(cosine > threshold)
        i += begin
        keep = (i != j) & (signs[i] == signs[j])
        pairs_i.append(i[keep])
        pairs_j.append(j[keep])
    i, j = np.concatenate(pairs_i), np.concatenate(pairs_j)
    return sp.csr_matrix((np.ones(len(i), np.float32), (i, j)), shape=(len(rows), len(rows)))


def _greedy(links: csr_matrix, n: int) -> np.ndarray:
    """Strongest unplaced finding first: it and its unplaced neighbours form the next theme."""
    theme = np.zeros(n, np.int32)
    next_id = 1
    for lead in range(n):
        if theme[lead]:
            continue
        members = links.indices[links.indptr[lead]:links.indptr[lead + 1]]
        theme[members[theme[members] == 0]] = next_id
        theme[lead] = next_id
        next_id += 1
    return theme


def theme_table(findings: pl.DataFrame, names: Sequence[str], measure: str) -> pl.DataFrame:
    """One row per theme, from the findings (strongest first, `theme` set): its lead's numbers and
    examples, how many latents it holds and the others' labels."""
    import polars as pl

    if not len(findings):
        return pl.DataFrame(schema={"theme": pl.Int32, "more_in": pl.Utf8, "n_latents": pl.Int64,
                                    "lead": pl.Int32, "label": pl.Utf8, "diff": pl.Float64})
    side = ["mean_a", "mean_b"] if measure == "mean" else ["freq_a", "freq_b"]
    optional = [c for c in ("label_score", "effect", "replicated", "diff_holdout", "q_holdout", "example_with_id",
                            "example_with",
                            "example_without_id", "example_without") if c in findings.columns]
    members = findings.group_by("theme", maintain_order=True).agg(
        n_latents=pl.len(), latents=pl.col("latent"), related=pl.col("label").slice(1).drop_nulls())
    leads = findings.group_by("theme", maintain_order=True).first().select(
        "theme", pl.col("latent").alias("lead"), "label", "vs", *side, "diff", "ci_low", "ci_high", "q", "test",
        *optional)
    table = leads.join(members, on="theme", how="left").with_columns(
        more_in=pl.when(pl.col("diff") > 0).then(pl.lit(names[0])).otherwise(pl.col("vs")))
    first = ["theme", "more_in", "n_latents", "lead", "label", *side, "diff", "ci_low", "ci_high", "q"]
    return table.select(first + [c for c in table.columns if c not in first]).sort("theme")
