"""The n-gram scrambling sanity check of "From Noise to Narrative": as text loses its structure, more
concepts fire. Each document is cut into word n-grams; at level p a share p of them swap places."""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import numpy as np

from saeembed.embedding.config import EmbedConfig
from saeembed.store import present

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def scramble_text(text: str, level: float, n: int = 3, rng: random.Random | None = None) -> str:
    """`text` with a share `level` of its word n-grams permuted among themselves (0: unchanged)."""
    rng = rng or random.Random(0)
    words = text.split()
    grams = [words[i:i + n] for i in range(0, len(words), n)]
    chosen = sorted(rng.sample(range(len(grams)), int(round(level * len(grams)))))
    moved = chosen[:]
    rng.shuffle(moved)
    out = list(grams)
    for src, dst in zip(chosen, moved):
        out[dst] = grams[src]
    return " ".join(word for gram in out for word in gram)


def scramble_check(texts: Sequence[str], config: EmbedConfig, levels: Sequence[float] = LEVELS, n: int = 3,
                   seed: int = 0, on_progress: Callable[[Any], None] | None = None) -> Any:
    """polars DataFrame, one row per level: documents, the mean over documents of their concept-count
    statistics (active latents per token), of the active latents per document, and of the Jaccard overlap
    of each scrambled document's latents with its original's (`overlap`): with a document-level SAE every
    document has k latents at any level, so what moves is which ones."""
    import polars as pl

    from saeembed.embedding.open_store import embed_records
    from saeembed.store import COUNT_STATS

    rng = random.Random(seed)
    rows = [{"text": scramble_text(t, level, n, rng), "level": level} for level in levels for t in texts]
    store = embed_records(rows, config, on_progress)
    frame = store.frame.select("level", *COUNT_STATS).with_columns(
        active_latents=pl.Series(np.diff(store.matrix.indptr).astype(np.float64)),
        overlap=pl.Series(_overlap_with_original(store.matrix, len(texts))))
    return frame.group_by("level").agg(pl.len().alias("docs"), pl.exclude("level").mean()).sort("level")


def _overlap_with_original(matrix: Any, n_texts: int) -> np.ndarray:
    """Per row, the Jaccard overlap of its active latents with the same text's unscrambled row (rows are
    level-major: the first `n_texts` rows are the originals)."""
    binary = present(matrix.tocsr(), np.float64)
    original = binary[np.arange(binary.shape[0]) % n_texts]
    shared = np.asarray(binary.multiply(original).sum(1)).ravel()
    union = np.asarray(binary.sum(1)).ravel() + np.asarray(original.sum(1)).ravel() - shared
    return np.divide(shared, union, out=np.ones_like(shared), where=union > 0)
