"""A store read as a stream of its parts: what an analysis needs of a store too large to load.

`load_store` reads every part into one CSR matrix and one frame (texts included), so its memory grows with
the documents. `StoreStream` keeps what is one number per document (`n_tokens`, ~8 bytes each) and the
latents' document counts, and runs each pass an analysis makes as work on one part at a time (`map`: a
part's vectors as a CSR matrix, or some of its fields), merged by the caller; the few documents it shows as
evidence are read by row (`fetch`), and a few latents' columns can be gathered and kept (`column_entries`,
within a budget). Opening a stream checks every part as `load_store` does, so bad input is refused before
any work; a part's check is cached, and a part unchanged since it was checked is not read again to open the
store.

Columns are read through each part's **latent index**: the part's entries turned by latent (each latent's rows
and values together), made the first time a column of the part is asked for and kept in the cache
(`<cache>/latent-index/`, about as large as the part's vectors; valid while the part file is the one indexed;
an index whose part file is gone is removed). A query then reads its latents' entries alone, memory-mapped,
not every part's matrix.

With `engine="ray"` the parts' work runs as Ray tasks (one CPU each) on the machines of a Ray cluster that see
the store's folder, as many at once as it has CPUs; the results come back to this process in part order, so
they merge exactly as they do here.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, NamedTuple, Sequence

import numpy as np

from saeembed.errors import StoreError
from saeembed.store import VECTOR_COLUMNS, Store, check_compatible, not_fields, read_meta, store_files

if TYPE_CHECKING:
    import pyarrow as pa
    from scipy.sparse import csr_matrix


class Chunk(NamedTuple):
    """The vectors of one part of a store (rows numbered within the part)."""

    matrix: csr_matrix
    peak_start: np.ndarray
    """Aligned with `matrix.data`, as `Store.peak_start`."""
    peak_end: np.ndarray


Engine = Literal["local", "ray"]

# Non-zeros of the latents analyses ask for by column (search's query and feedback latents) a stream keeps once
# gathered, so the percentiles, scores and rescoring of a query read the latent indexes once, not a time each (8
# bytes an entry kept, ~270 MB; a search using them holds about twice that again while it scores). Latents past it
# are read a group at a time (`column_groups`), each group within it, held while it is used.
KEPT_ENTRIES = 1 << 25


class StoreStream:
    """A store (a file or a folder of parts) read one part at a time; see the module docstring.

    It has what analyses read of a `Store` besides the matrix and frame: `path`, `meta`, `n_docs`, `d_sae`,
    `n_tokens`, and `counts` (each latent's documents).

    Args:
        on_progress: `on_progress(parts checked, parts)` while it is opened.
        engine: "local" (this process) or "ray" (Ray tasks; a Ray this process started or joined is used,
            else one is joined at `ray_address`, or started on this machine when that is None).

    Examples:
        >>> stream = StoreStream("big/")  # doctest: +SKIP
        >>> sum(stream.map(lambda chunk, _: chunk.matrix.nnz))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, on_progress: Callable[[int, int], None] | None = None, *,
                 engine: Engine = "local", ray_address: str | None = None) -> None:
        if engine not in ("local", "ray"):
            raise ValueError(f"engine must be local or ray, not {engine!r}")
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        self.files = store_files(self.path)
        self.engine, self.ray_address = engine, ray_address
        if len(self.files) > 1:  # as read_parts: the parts were embedded alike
            from saeembed.store import _file_meta

            check_compatible([(str(f), _file_meta(f)) for f in self.files])
        self.part_rows = np.zeros(1, np.int64)  # filled below; `map` needs it for the checking pass
        tokens: list[np.ndarray] = []
        self.counts = np.zeros(self.d_sae, np.int64)
        """Per latent, the documents it fires in (`store.document_frequency` of the whole store)."""
        schema: pa.Schema | None = None
        for done, (n_tokens, counts, fields) in enumerate(self._checked_parts(), 1):
            if schema is not None and not fields.equals(schema):  # checked where the parts are read
                raise StoreError(f"{self.path}: its part files have different fields ({self.files[done - 1].name} "
                                 f"differs from {self.files[0].name}); embed the corpus again into an empty folder")
            schema = fields
            tokens.append(n_tokens)
            self.counts += counts
            if on_progress:
                on_progress(done, len(self.files))
        self.n_tokens = np.concatenate(tokens).astype(np.int64)
        self.part_rows = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
        self.columns: list[str] = list(schema.names if schema is not None else [])
        """The fields every row has (id, n_tokens, text and the input's own)."""
        self.passes = 0
        """Passes `map` has made over the parts."""
        self.on_part: Callable[[int, int, int], None] | None = None
        """Called as `on_part(pass, parts done, parts)` after each part of each pass (a progress display)."""
        self._kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # latent -> its (rows, values), row order
        self._kept_entries = 0

    def _checked_parts(self) -> Iterator[tuple[np.ndarray, np.ndarray, pa.Schema]]:
        """Each part's `_checked_part`, in order: from the cache of checked parts where the file is the one
        checked before (`_identity`), else read, checked and cached."""
        before = [_identity(file) for file in self.files]  # taken before any read: a part replaced meanwhile
        cached = [_cached_check(file, self.d_sae, seen) for file, seen in zip(self.files, before)]  # is not cached
        fresh = self._map_files(_checked_part, [self.d_sae] * len(self.files),
                                [k for k, hit in enumerate(cached) if hit is None])
        for file, seen, hit in zip(self.files, before, cached):
            if hit is None:
                hit = next(fresh)
                if seen is not None and _identity(file) == seen:
                    _save_check(file, self.d_sae, seen, hit)
            yield hit

    @property
    def n_docs(self) -> int:
        return int(self.part_rows[-1])

    @property
    def d_sae(self) -> int:
        return int(self.meta["sae"]["d_sae"])

    def map(self, work: Callable[[Any, Any], Any], args: Sequence[Any] | None = None,
            columns: list[str] | None = None, skip: Sequence[bool] | None = None, *,
            peaks: bool = True, arrow: bool = False) -> Iterator[Any]:
        """`work(part, args[k])` for each part k, results in part order. `part` is the part's vectors (a
        `Chunk`; with `peaks=False` its peak spans are left unread and empty: work on the matrix alone reads
        half as much), or with `columns` a polars frame of those of its columns it has (with `arrow`, the Arrow
        table read, the store's metadata in its schema's). Only those columns are read (texts are the bulk of
        a part); the parts were checked when the stream was opened.
        Parts whose `skip` is true are not read (their result is None). `work` runs where the engine runs it
        (a Ray worker: define it at module level, pass what it needs in `args`)."""
        n = len(self.files)
        args = list(args) if args is not None else [None] * n
        skip = list(skip) if skip is not None else [False] * n
        specs = [(int(self.part_rows[k + 1] - self.part_rows[k]), self.d_sae, columns, peaks, arrow, work)
                 for k in range(n)]
        wanted = [k for k in range(n) if not skip[k]]
        self.passes += 1
        results = self._map_files(_run_part, [(specs[k], args[k]) for k in wanted], wanted)
        for k in range(n):
            result = None if skip[k] else next(results)
            if self.on_part:
                self.on_part(self.passes, k + 1, n)
            yield result

    def column_entries(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The non-zeros of `latents` (distinct) in the whole store, as `store.column_entries` gives them of a
        loaded one: (row, index into `latents`, value) by row, then latent. Those not read yet are gathered from
        the parts' latent indexes and kept for the next call (`keep`); None (nothing read) when keeping them
        would pass `KEPT_ENTRIES`: the caller then works part by part."""
        latents = np.asarray(latents, np.int64)
        if len(np.unique(latents)) != len(latents):
            raise ValueError("column_entries takes distinct latents")
        if not self.keep(latents):
            return None
        by_id = np.argsort(latents, kind="stable")
        held = [self._kept[latent] for latent in latents[by_id].tolist()]
        if not held:
            return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        rows = np.concatenate([r for r, _ in held])
        # a loaded store's order, by row, then latent: the runs are in latent order, so a stable sort by row
        order = np.argsort(rows, kind="stable")
        which = np.repeat(by_id.astype(np.int32), [len(r) for r, _ in held])[order]
        return rows[order], which, np.concatenate([v for _, v in held])[order]

    def column_values(self, latents: np.ndarray) -> list[np.ndarray] | None:
        """Each of `latents`' non-zero values (in row order), kept as `column_entries` keeps them; None (nothing
        read) past `KEPT_ENTRIES`. What a per-latent statistic reads without sorting the entries by row."""
        latents = np.asarray(latents, np.int64)
        if not self.keep(np.unique(latents)):
            return None
        return [self._kept[latent][1] for latent in latents.tolist()]

    def keep(self, latents: np.ndarray) -> bool:
        """Gather the entries of those of `latents` not kept yet from each part's latent index (made where there
        is none: one read of the part) and keep them (rows and values, each latent's in row order); False
        (nothing read) when that would pass `KEPT_ENTRIES`."""
        missing = np.setdiff1d(np.asarray(latents, np.int64), np.fromiter(self._kept, np.int64, len(self._kept)))
        if not len(missing):
            return True
        if self._kept_entries + int(self.counts[missing].sum()) > KEPT_ENTRIES:
            return False
        rows, which, values = self._indexed(missing, np.int32 if self.n_docs < 2**31 else np.int64)  # 4 bytes less
        order = np.argsort(which, kind="stable")  # by latent, each in row order
        bounds = np.searchsorted(which[order], np.arange(len(missing) + 1))
        for j, latent in enumerate(missing.tolist()):
            at = order[bounds[j]: bounds[j + 1]]
            self._kept[latent] = (rows[at], values[at])
            self._kept_entries += len(at)
        return True

    def column_groups(self, latents: np.ndarray
                      ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """The entries of `latents` a group at a time, each group's within `KEPT_ENTRIES` (a latent past it on its
        own: its entries are held whole), read from the parts' latent indexes and not kept: (the group's positions
        in `latents`, its entries: row, index into the group, value, in no set order). What a caller reads where
        `column_entries` would keep too many."""
        latents = np.asarray(latents, np.int64)
        sizes = self.counts[latents]
        start = 0
        while start < len(latents):
            end, total = start + 1, int(sizes[start])
            while end < len(latents) and total + int(sizes[end]) <= KEPT_ENTRIES:
                total += int(sizes[end])
                end += 1
            entries = self._indexed(latents[start:end], np.int64)  # one copy held while the caller uses it
            yield np.arange(start, end), entries
            del entries
            start = end

    def _indexed(self, latents: np.ndarray, row_type: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`latents`' entries in the whole store from the parts' latent indexes, in one pass: (row, index into
        `latents`, value), part by part, each latent's in row order within a part."""
        gathered = self._each_part(_indexed_entries, [(int(self.part_rows[k + 1] - self.part_rows[k]), self.d_sae,
                                                       latents) for k in range(len(self.files))])
        rows = np.concatenate([(r + first).astype(row_type) for (r, _, _), first in zip(gathered, self.part_rows)])
        which = np.concatenate([w for _, w, _ in gathered])
        values = np.concatenate([v for _, _, v in gathered])
        return rows, which, values

    def _each_part(self, run: Callable[[str, Any], Any], args: list[Any]) -> list[Any]:
        """`run(file, args[k])` for each part k where the engine runs it, as a pass (counted, its progress
        reported)."""
        self.passes += 1
        results = []
        for k, result in enumerate(self._map_files(run, args)):
            results.append(result)
            if self.on_part:
                self.on_part(self.passes, k + 1, len(self.files))
        return results

    def release_columns(self) -> None:
        """Forget the columns `keep` kept (a search does when it is done)."""
        self._kept.clear()
        self._kept_entries = 0

    def _map_files(self, run: Callable[[str, Any], Any], args: list[Any],
                   which: list[int] | None = None) -> Iterator[Any]:
        files = [str(self.files[k]) for k in (which if which is not None else range(len(self.files)))]
        if self.engine == "local":
            for file, arg in zip(files, args):
                yield run(file, arg)
            return
        yield from _on_ray(run, files, args, self.ray_address)

    def fetch(self, rows: np.ndarray, fields: list[str] | None = None) -> Store:
        """The documents `rows` (any order, repeats allowed) as a small in-memory Store in that order:
        their vectors, peaks and every field (or only `fields` and `n_tokens`: `[]` when only the vectors are
        wanted; texts are the bulk of a row group). Reads only the row groups that hold them."""
        import polars as pl
        import pyarrow.parquet as pq
        import scipy.sparse as sp

        from saeembed.store import DocVectors, _frame, _table_meta

        rows = np.asarray(rows, np.int64)
        wanted = np.unique(rows)
        if not len(wanted):  # the fields of no document
            table = pq.ParquetFile(self.files[0]).schema_arrow.empty_table()
            empty = table.drop_columns([c for c in table.column_names if c in not_fields(_table_meta(table))])
            return Store(self.path, sp.csr_matrix((0, self.d_sae), dtype=np.float32), _frame(empty, self.files[0]),
                         self.meta, np.zeros(0, np.int32), np.zeros(0, np.int32))
        part_of = np.searchsorted(self.part_rows, wanted, side="right") - 1
        taken: list[Store] = []
        for k in np.unique(part_of):
            file = pq.ParquetFile(self.files[k])
            sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            group_rows = np.concatenate([[0], np.cumsum(sizes)])
            local = wanted[part_of == k] - self.part_rows[k]
            groups = np.unique(np.searchsorted(group_rows, local, side="right") - 1)
            names = None if fields is None else [c for c in file.schema_arrow.names
                                                 if c in VECTOR_COLUMNS or c in fields]
            table = file.read_row_groups(groups.tolist(), columns=names)
            first = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])
            at = np.searchsorted(group_rows[groups], local, side="right") - 1  # which read group
            in_table = first[at] + local - group_rows[groups][at]
            v = DocVectors.from_arrow(table)
            matrix = sp.csr_matrix((v.values, v.indices, v.offsets), shape=(len(v), self.d_sae))
            kept = table.drop_columns([c for c in table.column_names if c in not_fields(_table_meta(table))])
            taken.append(Store(self.path, matrix, _frame(kept, self.files[k]), self.meta, v.peak_start,
                               v.peak_end).take(in_table))
        fetched = Store(self.path, sp.vstack([s.matrix for s in taken]).tocsr(),
                        pl.concat([s.frame for s in taken], how="vertical_relaxed"), self.meta,
                        np.concatenate([s.peak_start for s in taken]), np.concatenate([s.peak_end for s in taken]))
        return fetched.take(np.searchsorted(wanted, rows))



class OnePart(StoreStream):
    """A loaded store as a stream of one part, so a pass written for parts reads it too (a diff of a loaded
    store with one read by parts; an analysis written once for both)."""

    def __init__(self, store: Store) -> None:  # noqa: D107 - nothing is read: the store is in memory
        from saeembed.store import document_frequency

        self.store, self.path, self.meta = store, store.path, store.meta
        self.files = [store.path]
        self.engine, self.ray_address = "local", None
        self.n_tokens = store.frame["n_tokens"].to_numpy().astype(np.int64)
        self.part_rows = np.array([0, store.n_docs], np.int64)
        self.counts = document_frequency(store.matrix)
        self.columns = list(store.frame.columns)
        self.passes, self.on_part = 0, None

    def map(self, work: Callable[[Any, Any], Any], args: Sequence[Any] | None = None,
            columns: list[str] | None = None, skip: Sequence[bool] | None = None, *,
            peaks: bool = True, arrow: bool = False) -> Iterator[Any]:
        self.passes += 1
        if skip is not None and skip[0]:
            yield None
            return
        arg = args[0] if args is not None else None
        if columns is None:
            yield work(Chunk(self.store.matrix, self.store.peak_start, self.store.peak_end), arg)
        elif not arrow:
            yield work(self.store.frame.select([c for c in columns if c in self.columns]), arg)
        else:  # as read from a file: the fields and form columns asked for, the metadata in the schema
            import json

            import pyarrow as pa

            from saeembed.store import META_KEY

            fields = self.store.frame.select([c for c in columns if c in self.columns]).to_arrow()
            form = self.store.form
            table = pa.table({**{name: fields.column(name) for name in fields.column_names},
                              **{c: form.column(c) for c in columns if form is not None and c in form.column_names}})
            yield work(table.replace_schema_metadata({META_KEY: json.dumps(self.meta)}), arg)

    def column_entries(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from saeembed.store import column_entries

        return column_entries(self.store.matrix, latents)

    def keep(self, latents: np.ndarray) -> bool:
        return True  # every column is in memory

    def column_values(self, latents: np.ndarray) -> list[np.ndarray]:
        from saeembed.store import column_entries

        _, which, values = column_entries(self.store.matrix, latents)
        order = np.argsort(which, kind="stable")  # each latent's in row order
        bounds = np.searchsorted(which[order], np.arange(len(latents) + 1))
        return [values[order[bounds[j]: bounds[j + 1]]] for j in range(len(latents))]

    def column_groups(self, latents: np.ndarray
                      ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        from saeembed.store import column_entries

        yield np.arange(len(latents)), column_entries(self.store.matrix, latents)  # in memory: one group

    def release_columns(self) -> None:
        pass

    def fetch(self, rows: np.ndarray, fields: list[str] | None = None) -> Store:
        return self.store.take(np.asarray(rows, np.int64))


def read_chunk(file: str | Path, rows: int, d_sae: int, peaks: bool = True) -> Chunk:
    """The vectors of one part file (its vector columns only), which has `rows` documents; with `peaks=False`
    only its matrix (the peak spans empty)."""
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from saeembed.store import DocVectors

    v = DocVectors.from_arrow(pq.read_table(file, columns=list(VECTOR_COLUMNS) if peaks else ["indices", "values"]))
    if len(v) != rows:
        raise StoreError(f"{file}: changed while it was read (it had {rows} rows, now {len(v)}); run the analysis "
                         f"again")
    return Chunk(sp.csr_matrix((v.values, v.indices, v.offsets), shape=(len(v), d_sae)), v.peak_start, v.peak_end)


def _run_part(file: str, spec_and_arg: tuple[tuple[Any, ...], Any]) -> Any:
    """One part's work (`StoreStream.map`), wherever it runs."""
    (rows, d_sae, columns, peaks, arrow, work), arg = spec_and_arg
    if columns is None:
        return work(read_chunk(file, rows, d_sae, peaks), arg)
    import pyarrow.parquet as pq

    from saeembed.store import _frame

    names = pq.read_schema(file).names
    table = pq.read_table(file, columns=[c for c in columns if c in names])
    if table.num_rows != rows and table.num_columns:
        raise StoreError(f"{file}: changed while it was read (it had {rows} rows, now {table.num_rows}); run the "
                         f"analysis again")
    return work(table if arrow else _frame(table, Path(file)), arg)


def _checked_part(file: str, d_sae: int) -> tuple[np.ndarray, np.ndarray, pa.Schema]:
    """A part read and checked as `load_store` checks it: its lengths, its latents' document counts and its
    fields' schema."""
    from saeembed.store import _read_part, check_fields

    part = _read_part(Path(file), d_sae)
    check_fields(part)
    v = part.vectors
    return v.n_tokens, np.bincount(v.indices[v.values > 0], minlength=d_sae), part.fields.schema.remove_metadata()


CHECKED_FORMAT = 2
"""The layout of a cached check and the rules it was checked by: raise it when `_checked_part` checks more, so
parts checked under the old rules are read again."""


def _identity(file: Path) -> tuple[int, ...] | None:
    """What tells one version of a file from another: size, inode, modification and change times (None where
    they cannot be read: then it is not cached)."""
    try:
        stat = file.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def _check_path(file: Path, d_sae: int) -> Path:
    """Where the check of `file` is cached: one entry a file (a new version's check replaces the old one's)."""
    from saeembed.cache_root import default_cache_root
    from saeembed.hashing import text_key

    return default_cache_root() / "checked-parts" / f"{text_key(f'{CHECKED_FORMAT}|{file.resolve()}|{d_sae}')}.npz"


def _cached_check(file: Path, d_sae: int, seen: tuple[int, ...] | None
                  ) -> tuple[np.ndarray, np.ndarray, pa.Schema] | None:
    """A part's check from the cache if it was made of the file as it is now (`seen`), else None; a cache
    entry that cannot be read as one (damaged, or a folder this user cannot read) is None too: the part is
    checked again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if seen is None:
        return None
    try:
        with np.load(_check_path(file, d_sae), allow_pickle=False) as saved:  # arrays only: nothing unpickled
            identity, n_tokens, counts, schema = saved["identity"], saved["n_tokens"], saved["counts"], saved["schema"]
        if tuple(identity.tolist()) != seen or counts.shape != (d_sae,) or n_tokens.ndim != 1 \
                or schema.dtype != np.uint8 or len(n_tokens) != pq.ParquetFile(file).metadata.num_rows:
            return None
        return n_tokens.astype(np.int64), counts.astype(np.int64), pa.ipc.read_schema(pa.py_buffer(schema.tobytes()))
    except Exception:  # noqa: BLE001 - any unreadable entry (zipfile, numpy, arrow, OS errors): check the part
        return None


def _save_check(file: Path, d_sae: int, seen: tuple[int, ...], check: tuple[np.ndarray, np.ndarray, pa.Schema]
                ) -> None:
    """Cache a part's check of the file as it was when read (`seen`); best effort: a cache that cannot be
    written only means reading the part again next time."""
    from saeembed.atomic import atomic_write

    n_tokens, counts, schema = check
    blob = np.frombuffer(schema.serialize().to_pybytes(), np.uint8)

    def write(target: Path) -> None:
        with open(target, "wb") as fh:  # a file object: np.savez would add .npz to a temporary name
            np.savez_compressed(fh, identity=np.array(seen, np.int64), n_tokens=n_tokens.astype(np.int32),
                                counts=counts.astype(np.int64), schema=blob)

    try:
        path = _check_path(file, d_sae)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        pass


# -- the latent index: each part's entries by latent, so a query reads its latents' entries alone -------------

INDEX_FORMAT = 1
"""The layout of a part's latent index; raise it when it changes, so indexes of the old layout are built again."""


def _index_dir(file: Path, d_sae: int) -> Path:
    """Where the latent index of `file` is kept: one folder a part file (a new version's replaces the old one's)."""
    from saeembed.cache_root import default_cache_root
    from saeembed.hashing import text_key

    return default_cache_root() / "latent-index" / text_key(f"{INDEX_FORMAT}|{file.resolve()}|{d_sae}")


def _indexed_entries(file: str, arg: tuple[int, int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of `latents` in one part, from its latent index (made first, and kept, where there is none of
    the file as it is now): (row in the part, index into `latents`, value), each latent's in row order."""
    rows_n, d_sae, latents = arg
    path = Path(file)
    index = _open_index(path, d_sae)
    found = None if index is None else _slices(index, latents, rows_n)
    if found is None:  # no index of the file as it is now, or a damaged one
        found = _slices(_build_index(path, d_sae, rows_n), latents, rows_n)
        assert found is not None  # made from the part just read
    return found


def _slices(index: tuple[np.ndarray, np.ndarray, np.ndarray], latents: np.ndarray, rows_n: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`latents`' entries in a part's latent index (contiguous slices of the memory-mapped arrays: only theirs are
    read from disk); None if they are not a part of `rows_n` rows' (a damaged index)."""
    indptr, rows, values = index
    bounds = list(zip(indptr[latents].tolist(), indptr[latents + 1].tolist()))
    if any(not 0 <= s <= e <= len(rows) for s, e in bounds):
        return None
    found_rows = np.concatenate([rows[s:e] for s, e in bounds] or [np.zeros(0, np.int32)]).astype(np.int64)
    found_values = np.concatenate([values[s:e] for s, e in bounds] or [np.zeros(0, np.float32)]).astype(np.float32)
    if len(found_rows) and (found_rows.min() < 0 or found_rows.max() >= rows_n
                            or (np.diff(found_rows) <= 0).sum() > len(bounds) - 1
                            or not np.isfinite(found_values).all()):
        return None
    which = np.repeat(np.arange(len(latents), dtype=np.int32), [e - s for s, e in bounds])
    return found_rows, which, found_values


_INDEX_ARRAYS = ("identity", "indptr", "rows", "values")


def _open_index(file: Path, d_sae: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The part's latent index, memory-mapped, if it was made of the file as it is now; else None (any entry
    that cannot be read as one is None too: it is made again)."""
    seen = _identity(file)
    if seen is None:
        return None
    folder = _index_dir(file, d_sae)
    try:
        identity = np.load(folder / "identity.npy", allow_pickle=False)
        if tuple(identity.tolist()) != seen:
            return None
        indptr = np.load(folder / "indptr.npy", mmap_mode="r", allow_pickle=False)
        rows = np.load(folder / "rows.npy", mmap_mode="r", allow_pickle=False)
        values = np.load(folder / "values.npy", mmap_mode="r", allow_pickle=False)
        if indptr.shape != (d_sae + 1,) or rows.ndim != 1 or values.shape != rows.shape or indptr[-1] != len(rows) \
                or indptr[0] != 0 or not np.issubdtype(rows.dtype, np.integer) \
                or not np.issubdtype(indptr.dtype, np.integer):
            return None  # (what a query reads is checked as it reads it: no whole array is read here)
        return indptr, rows, values
    except Exception:  # noqa: BLE001 - a damaged or unreadable entry: made again
        return None


def _build_index(file: Path, d_sae: int, rows_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make a part's latent index (its matrix read once and turned by latent), keep it where it can be kept
    (best effort), and give it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    seen = _identity(file)
    chunk = read_chunk(file, rows_n, d_sae, peaks=False)
    by_latent = chunk.matrix.tocsc()  # a counting sort: each latent's rows stay in row order
    indptr = by_latent.indptr.astype(np.int64)
    rows = by_latent.indices.astype(np.int32 if rows_n < 2**31 else np.int64)
    values = by_latent.data
    if pq.read_schema(file).field("values").type.value_type == pa.float16():  # the default: kept so, exactly
        values = values.astype(np.float16)
    if seen is not None and _identity(file) == seen:
        _save_index(file, d_sae, seen, indptr, rows, values)
    return indptr, rows, values


def _save_index(file: Path, d_sae: int, seen: tuple[int, ...], indptr: np.ndarray, rows: np.ndarray,
                values: np.ndarray) -> None:
    """Keep a part's latent index of the file as it was when read (`seen`): written into a new folder, then
    renamed into place whole; best effort (an index that cannot be kept is made again next time). Indexes of
    part files that no longer exist are removed first: the folder holds about as much as the stores it serves."""
    import os
    import shutil
    import tempfile

    folder = _index_dir(file, d_sae)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.parent not in _PRUNED:  # once a process: a build of many parts does not re-read every entry
            _PRUNED.add(folder.parent)
            _prune_indexes(folder.parent)
        fresh = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            for name, array in (("indptr", indptr), ("rows", rows), ("values", values),
                                ("identity", np.array(seen, np.int64))):
                np.save(fresh / f"{name}.npy", array, allow_pickle=False)
            (fresh / "source.txt").write_text(f"{file.resolve()}\n{INDEX_FORMAT}", encoding="utf-8")
            if folder.exists():  # a stale index of an earlier version of the file
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(fresh, folder)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)  # gone unless the rename failed
    except OSError:
        pass


_PRUNED: set[Path] = set()  # index folders this process has pruned


def _prune_indexes(root: Path) -> None:
    """Remove the indexes whose part file is gone, those of another layout (`INDEX_FORMAT`), and folders a build
    stopped an hour ago or more left; best effort, entry by entry (one that cannot be read is left)."""
    import shutil

    for entry in root.iterdir():
        try:
            if entry.name.startswith("."):
                stale = entry.stat().st_mtime < time.time() - 3600  # a stopped build's folder
            else:
                source, _, layout = (entry / "source.txt").read_text(encoding="utf-8").partition("\n")
                stale = layout != str(INDEX_FORMAT) or not Path(source).exists()
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # gone meanwhile (another process), unreadable, or a file system that will not say
            continue


_SESSIONS = contextlib.ExitStack()  # a Ray started by a stream (not by the caller) stays up until exit


def _on_ray(run: Callable[[str, Any], Any], files: list[str], args: list[Any], address: str | None) -> Iterator[Any]:
    """`run(file, arg)` per file as Ray tasks of one CPU, as many in flight as the cluster has CPUs (at least
    2), results in order."""
    import ray

    from saeembed.ray_runtime import require_ray, user_error

    require_ray()
    if not ray.is_initialized():  # kept for this process (`ray_session` scopes one to a run), shut at exit
        from saeembed.ray_runtime import ray_session

        _SESSIONS.enter_context(ray_session(address))
        atexit.register(_SESSIONS.close)
    pending: deque[Any] = deque()
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(run)
        window = max(2, int(ray.cluster_resources().get("CPU", 2)))
        for file, arg in zip(files, args):
            pending.append(remote.remote(file, arg))
            if len(pending) >= window:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    except Exception as exc:  # a task's error (a damaged part), or Ray's: one line
        if isinstance(exc, ray.exceptions.RayError) or type(exc).__module__.startswith("ray"):
            raise user_error(exc, "run the analysis again") from None
        raise
    finally:
        for ref in pending:
            ray.cancel(ref)
