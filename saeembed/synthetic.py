"""Synthetic stores with planted structure: real Parquet stores written by `StoreWriter` whose latents
fire on documents chosen in advance, so an analysis's answer is known before it runs. The tests and the
analysis benchmarks build their stores here; a user can check a pipeline the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from saeembed.store import DocVectors, StoreWriter, load_store


def fake_meta(d_sae: int, fingerprint: str = "fake-sae", **overrides: Any) -> dict[str, Any]:
    """Store metadata as `saeembed embed` writes it, for a made-up reader and SAE."""
    meta: dict[str, Any] = {
        "store_version": 1, "model": {"id": "fake-model", "fingerprint": "fake", "layer": 0},
        "sae": {"source": "", "fingerprint": fingerprint, "d_sae": d_sae, "format": "fake", "architecture": "topk"},
        "pooling": "max", "pool_roles": None}
    for key, value in overrides.items():
        if isinstance(value, dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    return meta


def random_columns(n_docs: int, rates: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each latent, the rows where it fires: independent Bernoulli(rate) per document."""
    counts = rng.binomial(n_docs, np.clip(rates, 0, 1))
    return [np.sort(rng.choice(n_docs, size=k, replace=False)) for k in counts]


def vectors_from_columns(n_docs: int, columns: list[np.ndarray], rng: np.random.Generator,
                         text_length: int = 40) -> DocVectors:
    """DocVectors with latent j firing (value in [0.5, 3)) on rows `columns[j]`, each peaking on a
    random 3-character span within the first `text_length` characters."""
    lengths = np.array([len(c) for c in columns])
    rows = np.concatenate(columns).astype(np.int64) if len(columns) else np.zeros(0, np.int64)
    latents = np.repeat(np.arange(len(columns)), lengths)
    csc = sp.csc_matrix((np.ones(len(rows), np.float32), (rows, latents)), shape=(n_docs, len(columns)))
    csr = csc.tocsr()
    csr.sort_indices()
    nnz = csr.nnz
    starts = rng.integers(0, max(text_length - 3, 1), nnz).astype(np.int32)
    return DocVectors(csr.indptr.astype(np.int64), csr.indices.astype(np.int32),
                      rng.uniform(0.5, 3.0, nnz).astype(np.float32), starts, starts + 3,
                      np.full(n_docs, 12, np.int32))


def write_store(path: Path, vectors: DocVectors, fields: dict[str, list] | None = None,
                meta: dict[str, Any] | None = None, d_sae: int | None = None, form: bool = True) -> Path:
    """Write a real store; `text` defaults to a filler sentence per document, `id` to the row. With `form`, the
    texts' form counts too, as `embed` writes them (without: a store as written before them)."""
    from saeembed.form_counts import counted_text, form_meta, stored_columns

    n = len(vectors)
    fields = dict(fields or {})
    fields.setdefault("id", [str(i) for i in range(n)])
    fields.setdefault("text", [f"document number {i} of the fake corpus, with filler" for i in range(n)])
    meta = dict(meta or fake_meta(d_sae or int(vectors.indices.max(initial=0)) + 1))
    columns: dict[str, Any] = {}
    if form:  # as embed does, an input field named like a form column is kept under another name
        for name in [name for name in fields if name in ("form_counts", "openings")]:
            fields[f"input_{name}"] = fields.pop(name)
        roles, chats = meta.get("pool_roles"), fields.get("messages") or [None] * n
        columns = stored_columns([counted_text(t, m, roles) for t, m in zip(fields["text"], chats)])
        meta["form"] = form_meta()
    table = pa.table({**{k: v for k, v in fields.items()}, **vectors.arrow_columns("float32"), **columns})
    writer = StoreWriter(path, table.schema, meta)
    writer.write(table)
    writer.close()
    return path


def planted_store(path: Path, n_docs: int, rates: list[float] | np.ndarray, seed: int = 0,
                  fields: dict[str, list] | None = None, **meta: Any):
    """A loaded store whose latent j fires on each document with probability rates[j]."""
    rng = np.random.default_rng(seed)
    rates = np.asarray(rates, float)
    vectors = vectors_from_columns(n_docs, random_columns(n_docs, rates, rng), rng)
    write_store(path, vectors, fields, fake_meta(len(rates), **meta))
    return load_store(path)


def logit_store(path: Path, n_tokens: np.ndarray, logits: np.ndarray, seed: int = 0,
                fields: dict[str, list] | None = None):
    """A loaded store of len(n_tokens) documents whose latent j fires on document i with probability
    sigmoid(logits[i, j]): lets a test make firing depend on length (logits built from n_tokens)."""
    rng = np.random.default_rng(seed)
    fires = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
    vectors = vectors_from_columns(len(n_tokens), [np.flatnonzero(column) for column in fires.T], rng)
    vectors.n_tokens = np.asarray(n_tokens, np.int32)
    write_store(path, vectors, fields, fake_meta(logits.shape[1]))
    return load_store(path)
