"""Streams of reader activations for SAE training: per window of documents, cached, shuffled.

Memory stays bounded by one window of documents plus the shuffle buffer, whatever the corpus size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from saeembed.atomic import atomic_write
from saeembed.embedding.corpus import Document
from saeembed.embedding.pool import document_means
from saeembed.embedding.reader import Reader, length_sorted_batches
from saeembed.hashing import text_key
from saeembed.sae.model import Reads


class ActivationCache:
    """Float16 activation shards on disk, one per window of documents, so later epochs and runs
    (another layer choice aside) read them instead of running the model again."""

    def __init__(self, folder: Path, reader: Reader, docs: list[Document], window_docs: int,
                 reads: Reads = "tokens"):
        key = text_key(json.dumps({"model": reader.spec.model, "fingerprint": reader.fingerprint,
                                   "layer": reader.spec.layer, "max_tokens": reader.max_tokens,
                                   "window_docs": window_docs, "reads": reads}), *(doc.text or "" for doc in docs))
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)

    def load(self, window: int) -> torch.Tensor | None:
        path = self.folder / f"window-{window:06d}.npy"
        return torch.from_numpy(np.load(path).astype(np.float32)) if path.exists() else None

    def save(self, window: int, activations: torch.Tensor) -> None:
        path = self.folder / f"window-{window:06d}.npy"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, activations.numpy().astype(np.float16))

        atomic_write(path, write)


def window_activations(reader: Reader, docs: list[Document], *, window_docs: int, batch_tokens: int,
                       max_batch_docs: int, start_window: int = 0, cache: ActivationCache | None = None,
                       reads: Reads = "tokens") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (window index, float32 CPU activations [n, d_model]) of each window's pooled tokens, or with
    `reads="document"` one row per document: the unit-norm mean over its pooled tokens."""
    for window, start in enumerate(range(0, len(docs), window_docs)):
        if window < start_window:
            continue
        acts = cache.load(window) if cache else None
        if acts is None:
            chunks = [c for slot, doc in enumerate(docs[start: start + window_docs])
                      for c in reader.prepare(doc, doc_slot=slot).chunks if len(c.pooled)]
            batches = length_sorted_batches(chunks, batch_tokens, max_batch_docs, reader.device)
            if reads == "document":
                acts = document_means(reader, batches, min(window_docs, len(docs) - start))
            else:
                parts = [reader.token_activations(batch)[0].float().cpu() for batch in batches]
                acts = torch.cat(parts) if parts else torch.zeros(0, reader.spec.hidden_size)
            if cache:
                cache.save(window, acts)
                acts = acts.half().float()  # train on exactly what later runs will read back
        yield window, acts


class ShuffleBuffer:
    """Mixes activations from many documents before they form batches: when full, it shuffles
    and hands out half of itself as batches, keeping the other half to mix with what comes next."""

    def __init__(self, capacity: int, batch_size: int, generator: torch.Generator):
        if capacity < 2 * batch_size:
            raise ValueError(f"the shuffle buffer ({capacity}) must hold at least two batches ({batch_size})")
        self.capacity, self.batch_size, self.generator = capacity, batch_size, generator
        self._parts: list[torch.Tensor] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, activations: torch.Tensor) -> Iterator[torch.Tensor]:
        self._parts.append(activations)
        self._size += len(activations)
        while self._size >= self.capacity:
            yield from self._emit(keep=self.capacity // 2)

    def drain(self) -> Iterator[torch.Tensor]:
        """Everything left, in full batches (a last partial batch is dropped)."""
        yield from self._emit(keep=0)

    def _emit(self, keep: int) -> Iterator[torch.Tensor]:
        pool = torch.cat(self._parts)
        pool = pool[torch.randperm(len(pool), generator=self.generator)]
        n_out = (len(pool) - keep) // self.batch_size * self.batch_size
        self._parts, self._size = [pool[n_out:]], len(pool) - n_out
        for start in range(0, n_out, self.batch_size):
            yield pool[start: start + self.batch_size]
        if keep == 0:
            self._parts, self._size = [], 0
