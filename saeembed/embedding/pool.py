"""Pooling token codes into one sparse vector per chunk, keeping where each latent peaked."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from saeembed.embedding.config import Pooling
from saeembed.embedding.reader import Chunk, Reader
from saeembed.sae import SAE
from saeembed.store import COUNT_STATS, DocVectors

# Elements of one [tokens, d_sae] pre-activation chunk: 16 MB in fp32 on CPU (cache-sized chunks make
# top-k ~5% faster there), 1 GB on GPU.
_CPU_CHUNK_ELEMENTS = 1 << 22
_GPU_CHUNK_ELEMENTS = 1 << 28


def encode_chunks(x: torch.Tensor, segment: torch.Tensor, batch: list[Chunk], sae: SAE,
                  pooling: Pooling) -> tuple[DocVectors, np.ndarray]:
    """Pool the SAE codes of each chunk's pooled tokens.

    Args:
        x, segment: the pooled tokens' activations [n, d_model] and each one's chunk in `batch`
            (`Reader.token_activations`).
        batch: the chunks.
        pooling: max, sum, count (tokens on which the latent fires), or mean (returned as the
            sum here; `merge_chunks` divides once a document's chunks are all in).

    Returns:
        (vectors, peak values): one row per chunk; the peak values (the largest activation of each
        active latent) let chunks of one document be merged.
    """
    device = x.device
    n_tokens = np.array([len(c.pooled) for c in batch], dtype=np.int32)
    spans = np.concatenate([c.spans for c in batch])
    step = max(1, (_GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS) // sae.d_sae)
    keys, values, tokens = [], [], []
    for start in range(0, x.shape[0], step):
        r, latent, value = sae.encode_sparse(x[start: start + step])
        keys.append(segment[start + r] * sae.d_sae + latent)
        values.append(value.float())
        tokens.append(start + r)
    if not keys:
        return DocVectors.empty(len(batch), n_tokens), np.zeros(0, np.float32)  # no token fired anything
    key, value, token = torch.cat(keys), torch.cat(values), torch.cat(tokens)
    unique, inverse = torch.unique(key, return_inverse=True)  # sorted: by chunk, then latent
    peak = torch.zeros(len(unique), device=device).scatter_reduce_(0, inverse, value, "amax", include_self=False)
    at_peak = value == peak[inverse]
    peak_token = torch.full((len(unique),), x.shape[0], device=device, dtype=torch.long)
    peak_token.scatter_reduce_(0, inverse[at_peak], token[at_peak], "amin")
    if pooling == "max":
        pooled = peak
    elif pooling == "count":
        pooled = torch.bincount(inverse, minlength=len(unique)).float()
    else:
        pooled = torch.zeros(len(unique), device=device).index_add_(0, inverse, value)
    unique_np, peak_token_np = unique.cpu().numpy(), peak_token.cpu().numpy()
    chunk_of = unique_np // sae.d_sae
    offsets = np.searchsorted(chunk_of, np.arange(len(batch) + 1)).astype(np.int64)
    per_token = np.bincount(token.cpu().numpy(), minlength=x.shape[0])
    vectors = DocVectors(offsets, (unique_np % sae.d_sae).astype(np.int32), pooled.cpu().numpy(),
                         spans[peak_token_np, 0], spans[peak_token_np, 1], n_tokens,
                         count_stats(per_token, segment.cpu().numpy(), len(batch)))
    return vectors, peak.cpu().numpy()


def count_stats(per_token: np.ndarray, segment: np.ndarray, n_chunks: int) -> np.ndarray:
    """[n_chunks, 5]: mean, max, 10th, 50th and 90th percentile of the active latents per token (numpy's
    linear percentiles, computed for every chunk at once: one sort instead of a loop of percentile calls)."""
    out = np.zeros((n_chunks, len(COUNT_STATS)), np.float32)
    order = np.lexsort((per_token, segment))
    counts, chunks = per_token[order].astype(np.float64), segment[order]
    bounds = np.searchsorted(chunks, np.arange(n_chunks + 1))
    sizes = np.diff(bounds)
    has = sizes > 0
    first, size = bounds[:-1][has], sizes[has]
    out[has, 0] = np.add.reduceat(counts, first) / size
    out[has, 1] = counts[first + size - 1]
    for column, q in zip((2, 3, 4), (0.1, 0.5, 0.9)):
        position = q * (size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        out[has, column] = counts[first + low] + (position - low) * (counts[first + high] - counts[first + low])
    return out


def merge_chunks(parts: list[tuple[DocVectors, np.ndarray, int]], pooling: Pooling) -> tuple:
    """Merge the chunk rows (vectors, peaks, row) of one document into (indices, values, starts, ends, n,
    concept-count statistics). Across chunks the count statistics are token-weighted means (the max a
    max): exact for the mean and max, an approximation for the percentiles."""
    n = int(sum(v.n_tokens[r] for v, _, r in parts))
    weights = np.array([v.n_tokens[r] for v, _, r in parts], np.float64)
    chunk_stats = []
    for v, _, r in parts:
        assert v.concept_counts is not None  # encode_chunks, which makes these rows, always fills them
        chunk_stats.append(v.concept_counts[r])
    stats = np.stack(chunk_stats)
    merged_stats = (weights @ stats / max(weights.sum(), 1)).astype(np.float32)
    merged_stats[1] = stats[:, 1].max()
    if len(parts) == 1 and pooling != "mean":
        v, _, r = parts[0]
        sl = slice(v.offsets[r], v.offsets[r + 1])
        return v.indices[sl], v.values[sl], v.peak_start[sl], v.peak_end[sl], n, merged_stats
    cat = {name: np.concatenate([getattr(v, name)[v.offsets[r]: v.offsets[r + 1]] for v, _, r in parts])
           for name in ("indices", "values", "peak_start", "peak_end")}
    peaks = np.concatenate([p[v.offsets[r]: v.offsets[r + 1]] for v, p, r in parts])
    latents, inverse = np.unique(cat["indices"], return_inverse=True)
    if pooling == "max":
        values = np.zeros(len(latents), np.float32)
        np.maximum.at(values, inverse, cat["values"])
    else:
        values = np.bincount(inverse, weights=cat["values"], minlength=len(latents)).astype(np.float32)
        if pooling == "mean":
            values /= max(n, 1)
    # The peak span is the one of the chunk where the latent's activation was largest.
    order = np.lexsort((-peaks, inverse))
    first = order[np.searchsorted(inverse[order], np.arange(len(latents)))]
    return latents.astype(np.int32), values, cat["peak_start"][first], cat["peak_end"][first], n, merged_stats



# -- document-level SAEs ---------------------------------------------------------------------------

class DocumentParts(NamedTuple):
    """What a document-level SAE needs of each chunk of a batch until all of a document's chunks are in."""

    sums: np.ndarray
    """float32 [chunks, d_in]: sum of the pooled tokens' activations."""
    n_tokens: np.ndarray
    """int32 [chunks]: tokens pooled."""
    peak_value: np.ndarray
    """float32 [chunks, d_sae]: per latent, the largest token contribution `prepare(x_t) @ W_enc`."""
    peak_token: np.ndarray
    """int32 [chunks, d_sae]: the pooled token (row of the chunk's `spans`) where it was largest."""
    spans: list[np.ndarray]
    """Each chunk's [n, 2] character spans of its pooled tokens."""


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero): what a document-level SAE reads and is trained on,
    as sentence-transformers normalise their mean-pooled embeddings."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def document_parts(x: torch.Tensor, segment: torch.Tensor, batch: list[Chunk], sae: SAE) -> DocumentParts:
    """Per chunk: the token sum (the document vector is their mean) and, for every latent, the token
    that pushes its encoder pre-activation most: the document code is linear in the tokens before the
    SAE's rule, so that token is where the concept sits in the text (the peak span stores show)."""
    n_chunks = len(batch)
    sums = torch.zeros(n_chunks, x.shape[1], device=x.device, dtype=torch.float32)
    sums.index_add_(0, segment, x.float())
    bounds = np.concatenate([[0], np.cumsum([len(c.pooled) for c in batch])])
    peak_value = np.zeros((n_chunks, sae.d_sae), np.float32)
    peak_token = np.zeros((n_chunks, sae.d_sae), np.int32)
    prepared = sae.prepare(x)
    for row in range(n_chunks):
        if bounds[row + 1] > bounds[row]:
            best = (prepared[bounds[row]: bounds[row + 1]] @ sae.W_enc).max(dim=0)
            peak_value[row], peak_token[row] = best.values.float().cpu().numpy(), best.indices.cpu().numpy()
    return DocumentParts(sums.cpu().numpy(), np.diff(bounds).astype(np.int32), peak_value, peak_token,
                         [c.spans for c in batch])


def document_vectors(parts: list[list[tuple[DocumentParts, int]]], sae: SAE) -> DocVectors:
    """Encode each document's mean activation (over all its chunks, L2-normalised) with a document-level
    SAE; `parts[d]` lists (parts of a batch, row) of document d's chunks."""
    d_in = sae.d_in
    n_tokens = np.array([sum(int(p.n_tokens[r]) for p, r in doc) for doc in parts], np.int32)
    means = np.zeros((len(parts), d_in), np.float32)
    for d, doc in enumerate(parts):
        if doc:
            means[d] = sum(p.sums[r] for p, r in doc) / max(n_tokens[d], 1)
    rows, latents, values = (t.cpu().numpy() for t in sae.encode_sparse(
        unit_rows(torch.from_numpy(means)).to(sae.device, sae.W_enc.dtype)))
    order = np.lexsort((latents, rows))
    # A document with nothing to pool has no code (not the code of a zero vector).
    order = order[n_tokens[rows[order]] > 0]
    rows, latents, values = rows[order], latents[order].astype(np.int32), values[order].astype(np.float32)
    starts, ends = np.zeros(len(rows), np.int32), np.zeros(len(rows), np.int32)
    for i, (d, latent) in enumerate(zip(rows, latents)):
        chunk, r = max(parts[d], key=lambda item: item[0].peak_value[item[1], latent])
        starts[i], ends[i] = chunk.spans[r][chunk.peak_token[r, latent]]
    offsets = np.searchsorted(rows, np.arange(len(parts) + 1)).astype(np.int64)
    return DocVectors(offsets, latents, values, starts, ends, n_tokens,
                      np.zeros((len(parts), len(COUNT_STATS)), np.float32))


def document_means(reader: Reader, batches: list[list], n_docs: int) -> torch.Tensor:
    """Unit-norm mean activation of each document (chunks' `doc` slots 0..n_docs-1) that has tokens to
    pool: what a document-level SAE reads."""
    sums = torch.zeros(n_docs, reader.spec.hidden_size)
    counts = torch.zeros(n_docs)
    for batch in batches:
        x, segment = reader.token_activations(batch)
        doc = torch.tensor([c.doc for c in batch])[segment.cpu()]
        sums.index_add_(0, doc, x.float().cpu())
        counts.index_add_(0, doc, torch.ones(len(doc)))
    keep = counts > 0
    return unit_rows(sums[keep] / counts[keep, None])
