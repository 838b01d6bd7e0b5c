"""Length strata for tests that condition on document length.

With max pooling a longer document fires more latents, so in a corpus of mixed lengths any two
latents fire together more often than independence predicts: long documents fire both. Comparing
documents only with documents of similar length removes that: the tests stratify the documents
into bands of n_tokens (quantiles) and combine the bands (Cochran-Mantel-Haenszel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import spmatrix

MIN_BAND_DOCS = 50
"""Fewest documents of a length band: a smaller band says little about how often a latent fires at
that length, so it is pooled with its neighbour (ties in n_tokens easily make such bands)."""


def length_bands(n_tokens: np.ndarray, bands: int | None, min_docs: int = MIN_BAND_DOCS) -> np.ndarray:
    """Band of every document, 0 (shortest) .. n_bands - 1: `bands` quantiles of n_tokens, merged so
    each band holds at least `min_docs` documents. Documents of equal length always share a band, so
    equal lengths (or `bands` of 1 / None) give a single band.

    Examples:
        >>> length_bands(np.repeat([5, 10, 20, 40], 60), 4).tolist() == np.repeat([0, 1, 2, 3], 60).tolist()
        True
    """
    n_tokens = np.asarray(n_tokens)
    if not bands or bands <= 1 or not len(n_tokens):
        return np.zeros(len(n_tokens), np.int64)
    edges = np.unique(np.quantile(n_tokens, np.linspace(0, 1, bands + 1)[1:-1]))
    codes = np.searchsorted(edges, n_tokens, side="right")
    merged = _merge_small(np.bincount(codes, minlength=len(edges) + 1), min_docs)[codes]
    return np.unique(merged, return_inverse=True)[1].astype(np.int64)  # numbered 0.. without gaps


def _merge_small(sizes: np.ndarray, min_docs: int) -> np.ndarray:
    """Band -> merged band: consecutive bands are pooled, shortest first, until they hold `min_docs`
    documents; a remainder too small to stand alone joins the band before it."""
    target = np.empty(len(sizes), np.int64)
    current = held = 0
    for k, size in enumerate(sizes):
        target[k] = current
        held += int(size)
        if held >= min_docs:
            current, held = current + 1, 0
    if held and current > 0:
        target[target == current] = current - 1
    return target


def band_counts(binary: spmatrix, codes: np.ndarray, n_bands: int) -> np.ndarray:
    """[n_bands, columns] documents of each band in which each column is present, from a docs x
    columns 0/1 sparse matrix: one sparse product with the bands' indicator matrix."""
    import scipy.sparse as sp

    indicator = sp.csr_matrix((np.ones(len(codes), np.float32), (codes, np.arange(len(codes)))),
                              shape=(n_bands, len(codes)))
    # float32 counts are exact below 2**24 documents per band
    return np.rint((indicator @ binary).toarray()).astype(np.int64)
