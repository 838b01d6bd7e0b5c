"""The Parquet store: schema, self-describing metadata, atomic writes, loading into CSR + polars."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saeembed.errors import StoreError

META_KEY = b"saeembed"
STORE_VERSION = 1
VECTOR_COLUMNS = ("indices", "values", "peak_start", "peak_end", "n_tokens")
# Per document, statistics over its pooled tokens of the number of latents active on each token: the
# concept counts that hallucination-risk probes read ("From Noise to Narrative").
COUNT_STATS = ("concepts_mean", "concepts_max", "concepts_p10", "concepts_p50", "concepts_p90")
RESERVED = ("id", "text", "dense", *VECTOR_COLUMNS, *COUNT_STATS)
# Fields that decide whether two stores' vectors are comparable: same reader, layer, SAE, pooling.
COMPAT_FIELDS = (("model", "id"), ("model", "fingerprint"), ("model", "layer"), ("sae", "fingerprint"),
                 ("sae", "d_sae"), ("pooling",), ("pool_roles",))


@dataclass
class DocVectors:
    """Pooled SAE codes of a batch of documents, flat with offsets (CSR-like, ascending latents)."""

    offsets: np.ndarray  # int64 [n_docs + 1]
    indices: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    peak_start: np.ndarray  # int32 [nnz] character span in `text` of the token where the latent peaked
    peak_end: np.ndarray  # int32 [nnz]
    n_tokens: np.ndarray  # int32 [n_docs]
    concept_counts: np.ndarray | None = None  # float32 [n_docs, len(COUNT_STATS)]; None: all zero

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def empty(n_docs: int, n_tokens: np.ndarray | None = None) -> "DocVectors":
        """`n_docs` documents with no active latent."""
        none = np.zeros(0, np.int32)
        tokens = np.zeros(n_docs, np.int32) if n_tokens is None else n_tokens
        return DocVectors(np.zeros(n_docs + 1, np.int64), none, np.zeros(0, np.float32), none, none, tokens,
                          np.zeros((n_docs, len(COUNT_STATS)), np.float32))

    def arrow_columns(self, values_dtype: str = "float16") -> dict[str, pa.Array]:
        """The vector columns as zero-copy Arrow list arrays."""
        offsets = pa.array(self.offsets.astype(np.int32))

        def as_list(flat: np.ndarray) -> pa.Array:
            return pa.ListArray.from_arrays(offsets, pa.array(flat))

        counts = self.concept_counts if self.concept_counts is not None else \
            np.zeros((len(self), len(COUNT_STATS)), np.float32)
        return {"indices": as_list(self.indices),
                "values": as_list(self.values.astype(np.float16 if values_dtype == "float16" else np.float32)),
                "peak_start": as_list(self.peak_start), "peak_end": as_list(self.peak_end),
                "n_tokens": pa.array(self.n_tokens),
                **{name: pa.array(counts[:, i].astype(np.float32)) for i, name in enumerate(COUNT_STATS)}}

    @staticmethod
    def from_arrow(table: pa.Table) -> "DocVectors":
        """Read the vector columns of a store or cache table (any chunking) into flat arrays."""
        if not table.num_rows:
            return DocVectors.empty(0)
        table = table.combine_chunks()
        lists = {name: table.column(name).chunk(0) for name in VECTOR_COLUMNS[:4]}
        offsets = lists["indices"].offsets.to_numpy().astype(np.int64)
        base = offsets[0]

        def flat(name: str, dtype: type) -> np.ndarray:
            return lists[name].values.to_numpy(zero_copy_only=False)[base: offsets[-1]].astype(dtype, copy=False)

        counts = np.zeros((table.num_rows, len(COUNT_STATS)), np.float32)
        for i, name in enumerate(COUNT_STATS):
            if name in table.column_names:  # stores written before these columns existed have none
                counts[:, i] = table.column(name).to_numpy()
        return DocVectors(offsets - base, flat("indices", np.int32), flat("values", np.float32),
                          flat("peak_start", np.int32), flat("peak_end", np.int32),
                          table.column("n_tokens").to_numpy().astype(np.int32), counts)


def atomic_write_table(table: pa.Table, path: Path, row_group_size: int = 65536) -> None:
    """Write a Parquet file under a temporary name, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class StoreWriter:
    """Streams row groups into a store file that appears, atomically, only on `close()`."""

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict[str, Any], buffer_bytes: int = 64 << 20):
        self.path = path
        self.schema = schema.with_metadata({META_KEY: json.dumps(metadata).encode()})
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self._buffer: list[pa.Table] = []
        self._bytes, self.buffer_bytes = 0, buffer_bytes

    def write(self, table: pa.Table) -> None:
        # Each write call makes at least one row group: buffer so row groups stay large, by bytes
        # rather than rows so memory does not grow with the corpus.
        self._buffer.append(table.cast(self.schema))
        self._bytes += table.nbytes
        if self._bytes >= self.buffer_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer))
            self._buffer, self._bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class Store:
    """An embedded corpus: `.matrix` (scipy CSR docs x latents), `.frame` (polars), `.meta`.

    `.peak_start` / `.peak_end` are aligned with `.matrix.data`: the character span in the
    document's `text` of the token where each active latent peaked.
    """

    path: Path
    matrix: Any  # scipy.sparse.csr_matrix, float32
    frame: Any  # polars.DataFrame: id, n_tokens, text and the input's other fields
    meta: dict[str, Any]
    peak_start: np.ndarray
    peak_end: np.ndarray

    @property
    def n_docs(self) -> int:
        return self.matrix.shape[0]

    @property
    def d_sae(self) -> int:
        return self.matrix.shape[1]

    def take(self, rows: Any) -> "Store":
        """The store restricted to `rows` (indices into its documents), peaks kept aligned."""
        rows = np.asarray(rows, dtype=np.int64)
        indptr = self.matrix.indptr
        lengths = indptr[rows + 1] - indptr[rows]
        positions = np.repeat(indptr[rows] - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(lengths.sum())
        return Store(self.path, self.matrix[rows], self.frame[rows], self.meta, self.peak_start[positions],
                     self.peak_end[positions])


def column_entries(matrix: Any, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zeros of a few columns of a CSR matrix: (row, index into `latents`, value), in row order.

    One pass over the indices with a lookup table: several times faster than scipy's column slicing
    on a million-row store.
    """
    slot = np.full(matrix.shape[1], -1, np.int64)
    slot[np.asarray(latents)] = np.arange(len(latents))
    at = np.flatnonzero(slot[matrix.indices] >= 0)
    rows = np.searchsorted(matrix.indptr, at, side="right") - 1
    return rows, slot[matrix.indices[at]], matrix.data[at]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The saeembed metadata of a store file, without reading its rows."""
    path = Path(path)
    files = store_files(path)
    try:
        raw = pq.read_schema(files[0]).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"{path}: not a readable Parquet store ({exc})") from None
    if META_KEY not in raw:
        raise StoreError(f"{path} has no saeembed metadata; it was not written by `saeembed embed`")
    return json.loads(raw[META_KEY])


def is_store(path: str | Path) -> bool:
    """True for a store written by `saeembed embed` (a file or a folder of parts), False for anything
    else, e.g. a corpus in Parquet, JSONL or CSV."""
    path = Path(path)
    try:
        files = store_files(path)
        return META_KEY in (pq.read_schema(files[0]).metadata or {})
    except (StoreError, OSError, pa.ArrowInvalid):
        return False


def load_store(path: str | Path) -> Store:
    """Load a store (a file or a folder of part files) into a CSR matrix and a polars frame.

    Examples:
        >>> store = load_store("tweets.parquet")  # doctest: +SKIP
        >>> store.matrix.shape  # doctest: +SKIP
        (3467, 8192)
    """
    import polars as pl
    import scipy.sparse as sp

    path = Path(path)
    meta = read_meta(path)
    try:
        table = pa.concat_tables(pq.read_table(f) for f in store_files(path))
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: cannot read the store ({exc}); embed the corpus again") from None
    vectors = DocVectors.from_arrow(table)
    matrix = sp.csr_matrix((vectors.values, vectors.indices, vectors.offsets),
                           shape=(len(vectors), int(meta["sae"]["d_sae"])))
    frame = pl.from_arrow(table.drop_columns(list(VECTOR_COLUMNS[:4])))
    return Store(path, matrix, frame, meta, vectors.peak_start, vectors.peak_end)


def check_compatible(metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Refuse to mix stores whose vectors are not comparable, naming the field that differs."""
    metas = list(metas)
    first_name, first = metas[0]
    for name, meta in metas[1:]:
        for field_path in COMPAT_FIELDS:
            a, b = _dig(first, field_path), _dig(meta, field_path)
            if a != b:
                raise StoreError(f"{first_name} and {name} were embedded differently ({'.'.join(field_path)}: "
                                 f"{a!r} vs {b!r}); embed both with the same model, layer, SAE and pooling")


def _dig(meta: dict[str, Any], field_path: tuple[str, ...]) -> Any:
    value: Any = meta
    for key in field_path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def store_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise StoreError(f"{path} holds no .parquet files")
        return files
    if not path.exists():
        raise StoreError(f"store not found: {path}; create it with `saeembed embed CORPUS -o {path}`")
    return [path]
