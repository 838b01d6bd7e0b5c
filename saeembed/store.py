"""The Parquet store: schema, self-describing metadata, atomic writes, loading into CSR + polars."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saeembed import atomic
from saeembed.errors import StoreError, first_line
from saeembed.form_counts import STORED_COLUMNS

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix, spmatrix

META_KEY = b"saeembed"
STORE_VERSION = 1
VECTOR_COLUMNS = ("indices", "values", "peak_start", "peak_end", "n_tokens")
# Per document, statistics over its pooled tokens of the number of latents active on each token: the
# concept counts that hallucination-risk probes read ("From Noise to Narrative").
COUNT_STATS = ("concepts_mean", "concepts_max", "concepts_p10", "concepts_p50", "concepts_p90")
# Per document, how its text is written, counted when it was stored (`STORED_COLUMNS`): derived from the text,
# kept beside the vectors, not among the fields.
RESERVED = ("id", "text", "dense", *VECTOR_COLUMNS, *COUNT_STATS, *STORED_COLUMNS)
# Fields that decide whether two stores' vectors are comparable: same reader, layer, SAE, pooling.
COMPAT_FIELDS = (("model", "id"), ("model", "fingerprint"), ("model", "layer"), ("sae", "fingerprint"),
                 ("sae", "d_sae"), ("sae", "compute_dtype"), ("pooling",), ("pool_roles",))


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
                "values": as_list(_stored_values(self.values, values_dtype)),
                "peak_start": as_list(self.peak_start), "peak_end": as_list(self.peak_end),
                "n_tokens": pa.array(self.n_tokens),
                **{name: pa.array(counts[:, i].astype(np.float32)) for i, name in enumerate(COUNT_STATS)}}

    @staticmethod
    def from_arrow(table: pa.Table) -> "DocVectors":
        """Read the vector columns of a store or cache table (any chunking) into flat arrays. A table of only
        `indices` and `values` (a read of the matrix alone) gives empty peak spans and zero lengths."""
        if not table.num_rows:
            return DocVectors.empty(0)
        table = table.combine_chunks()
        lists = {name: table.column(name).chunk(0) for name in VECTOR_COLUMNS[:4] if name in table.column_names}
        offsets = lists["indices"].offsets.to_numpy().astype(np.int64)
        base = offsets[0]

        def flat(name: str, dtype: type) -> np.ndarray:
            if name not in lists:
                return np.zeros(0, dtype)
            return lists[name].values.to_numpy(zero_copy_only=False)[base: offsets[-1]].astype(dtype, copy=False)

        counts = np.zeros((table.num_rows, len(COUNT_STATS)), np.float32)
        for i, name in enumerate(COUNT_STATS):
            if name in table.column_names:  # stores written before these columns existed have none
                counts[:, i] = table.column(name).to_numpy()
        return DocVectors(offsets - base, flat("indices", np.int32), flat("values", np.float32),
                          flat("peak_start", np.int32), flat("peak_end", np.int32),
                          table.column("n_tokens").to_numpy().astype(np.int32) if "n_tokens" in table.column_names
                          else np.zeros(table.num_rows, np.int32), counts)


# Rows a store's row group holds at most: the documents shown as evidence (`StoreStream.fetch`) are read a row
# group whole, and ten results in ten groups read 0.16 s at 16,384 rows where they read 0.42 s at ~85,000 (a 250k
# part, `benchmarks/RESULTS.md`); a whole part reads no slower.
ROW_GROUP_ROWS = 16384


def atomic_write_table(table: pa.Table, path: Path, row_group_size: int = ROW_GROUP_ROWS) -> None:
    """Write a Parquet file atomically (`saeembed.atomic`)."""
    atomic.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                         row_group_size=row_group_size))


class StoreWriter:
    """Streams row groups into a store file that appears, atomically, only on `close()`."""

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict[str, Any], buffer_bytes: int = 64 << 20):
        self.path = path
        self.schema = schema.with_metadata({META_KEY: json.dumps(metadata).encode()})
        self.tmp = atomic.begin(path)  # also sweeps what killed writers of this store left behind
        try:
            self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        except BaseException:
            atomic.discard(self.tmp)
            raise
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
            self._writer.write_table(pa.concat_tables(self._buffer), row_group_size=ROW_GROUP_ROWS)
            self._buffer, self._bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        atomic.commit(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        atomic.discard(self.tmp)


@dataclass
class Store:
    """An embedded corpus: `.matrix` (scipy CSR docs x latents), `.frame` (polars), `.meta`.

    `.peak_start` / `.peak_end` are aligned with `.matrix.data`: the character span in the
    document's `text` of the token where each active latent peaked.
    """

    path: Path
    matrix: csr_matrix  # float32
    frame: pl.DataFrame  # id, n_tokens, text and the input's other fields
    meta: dict[str, Any]
    peak_start: np.ndarray
    peak_end: np.ndarray
    form: pa.Table | None = None
    """Each document's form counts as stored (`saeembed.form_counts.stored_form`), or None: the form layer
    counts the texts."""

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
                     self.peak_end[positions], None if self.form is None else self.form.take(rows))


FLOAT16_MAX = float(np.finfo(np.float16).max)


def _stored_values(values: np.ndarray, values_dtype: str) -> np.ndarray:
    """Values as stored: float16 saturates at its largest finite value (65504) rather than becoming inf,
    which `sum` or `count` pooling over long documents can reach and the store reader would refuse."""
    if values_dtype != "float16":
        return values.astype(np.float32)
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def present(matrix: spmatrix, dtype: type = np.float32) -> spmatrix:
    """The one definition of "a latent is present in a document" every analysis uses: its stored value is
    above zero (an entry whose float16 value rounded to 0 is not). A 0/1 matrix of the same shape (CSR
    in, CSR out; CSC in, CSC out)."""
    out = matrix.copy()
    out.data = (out.data > 0).astype(dtype)
    out.eliminate_zeros()
    return out


def document_frequency(matrix: spmatrix) -> np.ndarray:
    """Per latent, the documents in which it is present (`present`): one bincount, no copy when every
    stored value is positive."""
    if matrix.format == "csc":
        return np.diff(present(matrix).indptr).astype(np.int64)
    positive = matrix.data > 0
    indices = matrix.indices if positive.all() else matrix.indices[positive]
    return np.bincount(indices, minlength=matrix.shape[1]).astype(np.int64)


def column_entries(matrix: csr_matrix, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zeros of a few columns of a CSR matrix: (row, index into `latents`, value), in row order.

    One pass over the indices with a lookup table: several times faster than scipy's column slicing
    on a million-row store.
    """
    latents = np.asarray(latents, np.int64)
    wanted = np.zeros(matrix.shape[1], bool)  # a byte per non-zero in the pass, not an int64 slot
    wanted[latents] = True
    at = np.flatnonzero(wanted[matrix.indices])
    slot = np.full(matrix.shape[1], -1, np.int64)
    slot[latents] = np.arange(len(latents))
    rows = np.searchsorted(matrix.indptr, at, side="right") - 1
    return rows, slot[matrix.indices[at]], matrix.data[at]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The saeembed metadata of a store file (the first part of a folder), checked, without reading
    its rows. Raises StoreError naming the file when it is not a readable Parquet file, was not
    written by `saeembed embed`, or its metadata is not a JSON object with the fields analyses read."""
    path = Path(path)
    return _file_meta(store_files(path)[0])


def is_store(path: str | Path) -> bool:
    """True for a store written by `saeembed embed` (a file or a folder of parts), False for anything
    else, e.g. a corpus in Parquet, JSONL or CSV."""
    path = Path(path)
    try:
        files = store_files(path)
        return META_KEY in (pq.read_schema(files[0]).metadata or {})
    except (StoreError, OSError, ValueError, pa.ArrowException):
        return False


def load_store(path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> Store:
    """Load a store (a file or a folder of part files) into a CSR matrix and a polars frame;
    `on_progress(parts read, parts)` after each part (a folder of many parts takes a while).

    Every part is checked before any analysis sees it (vectorised over the flat arrays, so cheap on a
    million rows): its metadata (see `read_meta`), then its rows: latent indices within 0..d_sae-1
    and ascending in each row, as many values and peak spans as indices, finite values, peak spans
    within the text, no missing cells. A store that fails raises one StoreError line naming the
    file, the row (0-based, with its id) and the field.

    Examples:
        >>> store = load_store("tweets.parquet")  # doctest: +SKIP
        >>> store.matrix.shape  # doctest: +SKIP
        (3467, 8192)
    """
    import scipy.sparse as sp

    path = Path(path)
    meta = read_meta(path)
    d_sae = int(meta["sae"]["d_sae"])
    tables, parts, forms = [], [], []
    for part in read_parts(path, on_progress):  # refuses parts whose fields differ
        parts.append(part.vectors)
        tables.append(part.fields)
        forms.append(part.form)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    vectors = _concat_vectors(parts)
    matrix = sp.csr_matrix((vectors.values, vectors.indices, vectors.offsets), shape=(len(vectors), d_sae))
    form = None if any(f is None for f in forms) else pa.concat_tables(forms)
    return Store(path, matrix, _frame(table, path), meta, vectors.peak_start, vectors.peak_end, form)


class StorePart(NamedTuple):
    """One part file of a store, read and checked (`read_parts`)."""

    file: Path
    vectors: DocVectors
    fields: pa.Table
    """Every column but the vectors and the form counts: id, n_tokens, text and the input's other fields."""
    form: pa.Table | None = None
    """The part's form counts, where it has them as this saeembed counts them (`form_counts.stored_form`)."""


def read_parts(path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> Iterator[StorePart]:
    """The parts of a store one at a time, each read and checked as `load_store` checks it (the parts'
    metadata and fields agree; a part's rows hold possible latents, values and spans; `check_fields` checks
    that a part's fields fit a polars table), so a pass over a store of any size holds one part in memory.
    `on_progress(parts read, parts)` after each."""
    path = Path(path)
    files = store_files(path)
    meta = _file_meta(files[0])
    if len(files) > 1:
        check_compatible([(str(files[0]), meta), *((str(f), _file_meta(f)) for f in files[1:])])
    d_sae = int(meta["sae"]["d_sae"])
    schema = None
    for done, file in enumerate(files, 1):
        part = _read_part(file, d_sae)
        fields = part.fields.schema.remove_metadata()
        if schema is not None and not fields.equals(schema):
            raise StoreError(f"{path}: its part files have different fields ({file.name} differs from "
                             f"{files[0].name}); embed the corpus again into an empty folder")
        schema = fields
        yield part
        del part  # before the next part is read: one part in memory at a time (the caller drops its own)
        if on_progress:
            on_progress(done, len(files))


def _read_part(file: Path, d_sae: int) -> StorePart:
    try:
        table = pq.read_table(file)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"{file}: cannot read the store ({first_line(exc)}); the file is damaged or "
                         f"truncated: embed the corpus again") from None
    from saeembed.form_counts import stored_form

    vectors = _checked_vectors(table, file, d_sae)
    meta = _table_meta(table)
    return StorePart(file, vectors, table.drop_columns([c for c in not_fields(meta) if c in table.column_names]),
                     stored_form(table, meta))


def not_fields(meta: dict[str, Any]) -> tuple[str, ...]:
    """The columns of a store file that are not among its fields (its frame's): the vectors' lists, and the form
    columns where its metadata says it has them (an older store's input field of that name is a field)."""
    return (*VECTOR_COLUMNS[:4], *(STORED_COLUMNS if "form" in meta else ()))


def _table_meta(table: pa.Table) -> dict[str, Any]:
    """The saeembed metadata of a table read from a store file (checked when the file's was read), {} if none."""
    try:
        meta = json.loads((table.schema.metadata or {})[META_KEY])
    except (KeyError, ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _frame(table: pa.Table, path: Path) -> pl.DataFrame:
    """The fields as a polars frame, or one StoreError line when polars cannot hold them."""
    import polars as pl

    # The Parquet metadata stays out of polars (it panics on metadata that is not UTF-8); the store's
    # own is in `meta`.
    table = pa.Table.from_arrays(table.columns, schema=pa.schema([f.remove_metadata() for f in table.schema]))
    try:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a Table always gives a frame (a Series comes of an Array)
    except BaseException as exc:  # polars raises its own errors for types it cannot hold, or panics
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        raise StoreError(f"{path}: cannot read its fields into a table ({type(exc).__name__}: "
                         f"{first_line(exc)}); embed the corpus again") from None
    return frame


def check_fields(part: StorePart) -> None:
    """Refuse a part whose fields polars cannot hold, as `load_store` would (one StoreError line)."""
    _frame(part.fields, part.file)


# -- checks on reading -----------------------------------------------------------------------------

# What every store's metadata holds, as `saeembed embed` writes it, with the types analyses rely on.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")  # the SAE fingerprint names a labels file
MAX_D_SAE = 2**31 - 1  # latent indices are int32


def _starts_as_parquet(file: Path) -> bool:
    """Whether the file begins with Parquet's magic bytes (a truncated store still does; a JSONL or CSV
    corpus does not). Unreadable files count as Parquet, so the reader's own error names the problem."""
    try:
        with open(file, "rb") as fh:
            return fh.read(4) in (b"PAR1", b"")
    except OSError:
        return True


def _file_meta(file: Path) -> dict[str, Any]:
    """The checked metadata of one store file."""
    if file.suffix.lower() != ".parquet" and not _starts_as_parquet(file):  # a corpus given where a store goes
        raise StoreError(f"{file} is not a store (a Parquet file that `saeembed embed` writes); make one with "
                         f"`saeembed embed {file} -o {file.with_suffix('.parquet').name}`") from None
    try:
        raw = pq.read_schema(file).metadata or {}
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"{file}: not a readable Parquet store ({first_line(exc)}); if it is a store it is "
                         f"damaged or truncated: embed the corpus again") from None
    if META_KEY not in raw:
        raise StoreError(f"{file} has no saeembed metadata; it was not written by `saeembed embed` "
                         f"(give a corpus file to embed it, or a store)")
    try:
        meta = json.loads(raw[META_KEY])
    except (ValueError, RecursionError):
        raise StoreError(f"{file}: its saeembed metadata is not JSON; the store is damaged: "
                         f"embed the corpus again") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{file}: its saeembed metadata is a JSON {_json_kind(meta)}, not an object; the "
                         f"store is damaged: embed the corpus again")
    version = meta.get("store_version")
    if _is_int(version) and version > STORE_VERSION:
        raise StoreError(f"{file} was written by a newer saeembed (store version {version}; this one reads "
                         f"{STORE_VERSION}): upgrade saeembed")
    problem = _meta_problem(meta)
    if problem:
        raise StoreError(f"{file}: its saeembed metadata {problem}; the store is damaged or was not written "
                         f"by `saeembed embed`: embed the corpus again")
    return meta


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a store's metadata (the first thing found), None when nothing is."""
    def text(value: Any) -> bool:
        return isinstance(value, str)

    def text_or_none(value: Any) -> bool:
        return value is None or isinstance(value, str)

    required = (
        (("store_version",), lambda v: _is_int(v) and 1 <= v <= STORE_VERSION, f"an integer 1..{STORE_VERSION}"),
        (("model",), lambda v: isinstance(v, dict), "an object"),
        (("model", "id"), lambda v: text(v) and v != "", "a model name"),
        (("model", "fingerprint"), text, "a string"),
        (("model", "layer"), lambda v: v is None or (_is_int(v) and v >= 0), "a layer number"),
        (("sae",), lambda v: isinstance(v, dict), "an object"),
        (("sae", "d_sae"), lambda v: _is_int(v) and 1 <= v <= MAX_D_SAE, "a positive integer (the SAE's width)"),
        (("sae", "fingerprint"), lambda v: text(v) and bool(_SAFE_NAME.fullmatch(v)),
         "a fingerprint (letters, digits, . _ -)"),
        (("sae", "source"), text, "a string"),
        (("sae", "format"), text, "a string"),
        (("sae", "architecture"), text, "a string"),
        (("pooling",), text, "a string"),
    )
    optional = (
        (("model", "revision"), text_or_none, "a string or null"),
        (("model", "hook"), text_or_none, "a string or null"),
        (("sae", "reads"), lambda v: v in ("tokens", "document"), "tokens or document"),
        (("pool_roles",), lambda v: v is None or (isinstance(v, list) and all(map(text, v))),
         "a list of role names or null"),
        (("versions",), lambda v: isinstance(v, dict), "an object"),
        (("n_tokens",), lambda v: v is None or _is_int(v), "an integer"),
        (("dense",), lambda v: v is None or isinstance(v, dict), "an object or null"),
    )
    for needed, (fields, ok, what) in [(True, field) for field in required] + [(False, field) for field in optional]:
        parent: Any = meta
        for key in fields[:-1]:
            parent = parent[key]  # the parents of optional fields are required ones, checked first
        name = ".".join(fields)
        if fields[-1] not in parent:
            if needed:
                return f"lacks {name}"
            continue
        value = parent[fields[-1]]
        if not ok(value):
            shown = json.dumps(value)
            return f"has {name} = {shown if len(shown) <= 40 else shown[:40] + '…'}, not {what}"
    return None


def _row_name(table: pa.Table, row: int) -> str:
    """`row 12 (id 'doc-12')`: a row of a store file, 0-based, with its id when it has a readable one."""
    try:
        value = table.column("id")[row].as_py()
    except (KeyError, IndexError, ValueError, pa.ArrowException):
        value = None
    shown = repr(value) if value is not None else ""
    return f"row {row}" + (f" (id {shown if len(shown) <= 40 else shown[:40] + '…'})" if shown else "")


def _checked_vectors(table: pa.Table, file: Path, d_sae: int) -> DocVectors:
    """The vector columns of one store file as flat arrays, after checking every row."""
    import pyarrow.compute as pc

    def refuse(row: int | None, what: str) -> StoreError:
        where = f"{file}, {_row_name(table, row)}" if row is not None else str(file)
        return StoreError(f"{where}: {what}; the store is damaged: embed the corpus again")

    missing = [name for name in ("id", "text", *VECTOR_COLUMNS) if name not in table.column_names]
    if missing:
        raise refuse(None, f"no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}")
    kinds = {"indices": pa.types.is_integer, "values": pa.types.is_floating, "peak_start": pa.types.is_integer,
             "peak_end": pa.types.is_integer}
    lists: dict[str, Any] = {}
    for name, is_kind in kinds.items():
        kind = table.schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not is_kind(kind.value_type):
            raise refuse(None, f"column {name} holds {kind}, not lists of "
                               f"{'integers' if is_kind is pa.types.is_integer else 'numbers'}")
        lists[name] = table.column(name).combine_chunks() if table.num_rows else None
    for name, is_kind in (("n_tokens", pa.types.is_integer), ("text", _is_text),
                          *((name, _is_number) for name in COUNT_STATS if name in table.column_names)):
        kind = table.schema.field(name).type
        if not is_kind(kind) and not pa.types.is_null(kind):  # all null: refused below unless there are no rows
            raise refuse(None, f"column {name} holds {kind}, not {'text' if name == 'text' else 'numbers'}")
    n = table.num_rows
    if not n:
        return DocVectors.empty(0)
    for name in ("id", "text", "n_tokens", *VECTOR_COLUMNS[:4],
                 *(name for name in COUNT_STATS if name in table.column_names)):
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
            raise refuse(row, f"{name} is missing (null)")
    offsets = lists["indices"].offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    flat: dict[str, np.ndarray] = {}
    for name, array in lists.items():
        other = np.diff(array.offsets.to_numpy().astype(np.int64))
        if name != "indices" and (other != lengths).any():
            row = int(np.flatnonzero(other != lengths)[0])
            raise refuse(row, f"{lengths[row]} latent indices but {other[row]} {name}")
        values = array.flatten()
        if values.null_count:
            at = int(np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))[0])
            raise refuse(_row_of(offsets, at), f"a missing (null) entry in {name}")
        flat[name] = values.to_numpy(zero_copy_only=False)

    def first_bad(bad: np.ndarray) -> int:
        return _row_of(offsets, int(np.flatnonzero(bad)[0]))

    # Each check is a reduction first (min, max: fast, no temporary array); only a store that fails
    # pays for finding the first bad entry.
    indices = flat["indices"]
    if len(indices) and (indices.min() < 0 or indices.max() >= d_sae):
        at = int(np.flatnonzero((indices < 0) | (indices >= d_sae))[0])
        raise refuse(_row_of(offsets, at), f"latent index {int(indices[at])} is outside 0..{d_sae - 1} "
                                           f"(the SAE's width sae.d_sae = {d_sae})")
    indices = indices.astype(np.int32, copy=False)
    if len(indices) > 1:
        unordered = np.diff(indices) <= 0
        starts = offsets[1:-1]
        unordered[starts[(starts > 0) & (starts < len(indices))] - 1] = False  # across rows: any order
        if unordered.any():
            raise refuse(first_bad(unordered), "latent indices not strictly ascending (repeated or unsorted)")
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused just below
        values = flat["values"].astype(np.float32)
    if len(values) and not (np.isfinite(values.min()) and np.isfinite(values.max())):  # NaN propagates
        at = int(np.flatnonzero(~np.isfinite(values))[0])
        raise refuse(_row_of(offsets, at), f"a value that is not a finite number ({values[at]}) for latent "
                                           f"{int(indices[at])}")
    start, end = flat["peak_start"], flat["peak_end"]
    row_length = pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False).astype(np.int64)
    filled = lengths > 0  # each row's last peak end against its text's length: no per-entry copy of the lengths
    last_end = np.maximum.reduceat(end, (offsets[:-1] - offsets[0])[filled]) if len(end) else np.zeros(0, end.dtype)
    if len(start) and (start.min() < 0 or (end - start).min() < 0 or (last_end > row_length[filled]).any()):
        text_length = np.repeat(row_length, lengths)
        at = int(np.flatnonzero((start < 0) | (end < start) | (end > text_length))[0])
        raise refuse(_row_of(offsets, at), f"the peak span {int(start[at])}..{int(end[at])} of latent "
                                           f"{int(indices[at])} is not within its text of {text_length[at]} "
                                           f"characters")
    n_tokens = table.column("n_tokens").to_numpy()
    if ((n_tokens < 0) | (n_tokens > np.iinfo(np.int32).max)).any():
        raise refuse(int(np.flatnonzero((n_tokens < 0) | (n_tokens > np.iinfo(np.int32).max))[0]),
                     "n_tokens is not a token count")
    counts = np.zeros((n, len(COUNT_STATS)), np.float32)
    for i, name in enumerate(COUNT_STATS):
        if name in table.column_names:  # stores written before these columns existed have none
            counts[:, i] = table.column(name).to_numpy()
            if not np.isfinite(counts[:, i]).all():
                raise refuse(int(np.flatnonzero(~np.isfinite(counts[:, i]))[0]), f"{name} is not a finite number")
    if "dense" in table.column_names:
        _check_dense(table, refuse)
    return DocVectors(offsets - offsets[0], indices, values, start.astype(np.int32), end.astype(np.int32),
                      n_tokens.astype(np.int32), counts)


def _check_dense(table: pa.Table, refuse: Any) -> None:
    """The optional `dense` column: one finite vector of the same length per row."""
    import pyarrow.compute as pc

    column = table.column("dense")
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
            or not pa.types.is_floating(kind.value_type):
        raise refuse(None, f"column dense holds {kind}, not lists of numbers")
    if column.null_count:
        raise refuse(int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0]), "dense is missing")
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise refuse(row, f"a dense vector of {lengths[row]} numbers where the first row has {lengths[0]}")
    values = pc.list_flatten(column.combine_chunks())
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32) if len(values) else np.zeros(0, np.float32)
    if values.null_count or not np.isfinite(flat).all():
        raise refuse(int(np.flatnonzero(~np.isfinite(flat))[0] // max(int(lengths[0]), 1)),
                     "dense holds a value that is not a finite number")


def _row_of(offsets: np.ndarray, at: int) -> int:
    """The row that flat entry `at` belongs to (offsets relative to the flat arrays' start)."""
    return int(np.searchsorted(offsets - offsets[0], at, side="right") - 1)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _concat_vectors(parts: list[DocVectors]) -> DocVectors:
    """The documents of several parts, one after the other."""
    if len(parts) == 1:
        return parts[0]
    shift = np.cumsum([0] + [len(p.indices) for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shift)]).astype(np.int64)
    indices, values, peak_start, peak_end, n_tokens = (
        np.concatenate([getattr(p, name) for p in parts])
        for name in ("indices", "values", "peak_start", "peak_end", "n_tokens"))
    return DocVectors(offsets, indices, values, peak_start, peak_end, n_tokens,
                      np.concatenate([p.concept_counts for p in parts]))


def check_compatible(metas: Iterable[tuple[str, dict[str, Any]]],
                     fields: tuple[tuple[str, ...], ...] = COMPAT_FIELDS) -> None:
    """Refuse to mix stores whose vectors are not comparable (differ in one of `fields`), naming the field."""
    metas = list(metas)
    first_name, first = metas[0]
    for name, meta in metas[1:]:
        for field_path in fields:
            a, b = _dig(first, field_path), _dig(meta, field_path)
            if a != b:
                raise StoreError(f"{first_name} and {name} were embedded differently ({'.'.join(field_path)}: "
                                 f"{a!r} vs {b!r}); embed both with the same model, layer, SAE, pooling and "
                                 f"--sae-dtype")


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
