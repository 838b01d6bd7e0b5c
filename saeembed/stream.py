"""A store read as a stream of its parts: what an analysis needs of a store too large to load.

`load_store` reads every part into one CSR matrix and one frame (texts included), so its memory grows with
the documents. `StoreStream` keeps only what is one number per document (`n_tokens`, ~4 bytes each) and
reads the parts again for each pass an analysis makes (`chunks`: a part's vectors as a CSR matrix, its
texts dropped at once), and the few documents it shows as evidence by row (`fetch`). Opening a stream makes
the first pass, checking every part as `load_store` does, so bad input is refused before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import numpy as np

from saeembed.store import VECTOR_COLUMNS, Store, read_meta, read_parts, store_files

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix


class Chunk(NamedTuple):
    """The vectors of one part of a store."""

    start: int
    """Row of the store where this part begins."""
    matrix: csr_matrix
    peak_start: np.ndarray
    """Aligned with `matrix.data`, as `Store.peak_start`."""
    peak_end: np.ndarray


class StoreStream:
    """A store (a file or a folder of parts) read one part at a time; see the module docstring.

    It has what analyses read of a `Store` besides the matrix and frame: `path`, `meta`, `n_docs`, `d_sae`,
    `n_tokens`.

    Examples:
        >>> stream = StoreStream("big/")  # doctest: +SKIP
        >>> sum(chunk.matrix.nnz for chunk in stream.chunks())  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = read_meta(self.path)
        self.files = store_files(self.path)
        tokens, columns = [], None
        self.counts = np.zeros(self.d_sae, np.int64)
        """Per latent, the documents it fires in (`store.document_frequency` of the whole store)."""
        for part in read_parts(self.path, on_progress):  # checked: bad input is refused before any work
            tokens.append(part.vectors.n_tokens)
            columns = part.fields.column_names
            v = part.vectors
            self.counts += np.bincount(v.indices[v.values > 0], minlength=self.d_sae)
        self.n_tokens = np.concatenate(tokens).astype(np.int64)
        self.part_rows = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
        self.columns: list[str] = list(columns or [])
        """The fields every row has (id, n_tokens, text and the input's own)."""

    @property
    def n_docs(self) -> int:
        return int(self.part_rows[-1])

    @property
    def d_sae(self) -> int:
        return int(self.meta["sae"]["d_sae"])

    def chunks(self) -> Iterator[Chunk]:
        """Each part's vectors in row order, one part in memory at a time. Only the vector columns are read
        (texts are the bulk of a part); the parts were checked when the stream was opened."""
        import pyarrow.parquet as pq
        import scipy.sparse as sp

        from saeembed.errors import StoreError
        from saeembed.store import DocVectors

        for k, file in enumerate(self.files):
            v = DocVectors.from_arrow(pq.read_table(file, columns=list(VECTOR_COLUMNS)))
            rows = int(self.part_rows[k + 1] - self.part_rows[k])
            if len(v) != rows:
                raise StoreError(f"{file}: changed while it was read (it had {rows} rows, now {len(v)}); "
                                 f"run the analysis again")
            matrix = sp.csr_matrix((v.values, v.indices, v.offsets), shape=(len(v), self.d_sae))
            yield Chunk(int(self.part_rows[k]), matrix, v.peak_start, v.peak_end)
            del v, matrix

    def frames(self, columns: list[str]) -> Iterator[pl.DataFrame]:
        """Each part's `columns` (those it has) as a polars frame, in row order; nothing else is read."""
        import pyarrow.parquet as pq

        from saeembed.store import _frame

        wanted = [c for c in columns if c in self.columns]
        for file in self.files:
            yield _frame(pq.read_table(file, columns=wanted), file)

    def fetch(self, rows: np.ndarray) -> Store:
        """The documents `rows` (any order, repeats allowed) as a small in-memory Store in that order:
        their vectors, peaks and every field. Reads only the row groups that hold them."""
        import polars as pl
        import pyarrow.parquet as pq
        import scipy.sparse as sp

        from saeembed.store import DocVectors, _frame

        rows = np.asarray(rows, np.int64)
        wanted = np.unique(rows)
        if not len(wanted):
            raise IndexError("no rows to fetch")
        part_of = np.searchsorted(self.part_rows, wanted, side="right") - 1
        taken: list[Store] = []
        for k in np.unique(part_of):
            file = pq.ParquetFile(self.files[k])
            sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            group_rows = np.concatenate([[0], np.cumsum(sizes)])
            local = wanted[part_of == k] - self.part_rows[k]
            groups = np.unique(np.searchsorted(group_rows, local, side="right") - 1)
            table = file.read_row_groups(groups.tolist())
            first = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])
            at = np.searchsorted(group_rows[groups], local, side="right") - 1  # which read group
            in_table = first[at] + local - group_rows[groups][at]
            v = DocVectors.from_arrow(table)
            matrix = sp.csr_matrix((v.values, v.indices, v.offsets), shape=(len(v), self.d_sae))
            fields = table.drop_columns([c for c in table.column_names if c in VECTOR_COLUMNS[:4]])
            taken.append(Store(self.path, matrix, _frame(fields, self.files[k]), self.meta, v.peak_start,
                               v.peak_end).take(in_table))
        fetched = Store(self.path, sp.vstack([s.matrix for s in taken]).tocsr(),
                        pl.concat([s.frame for s in taken], how="vertical_relaxed"), self.meta,
                        np.concatenate([s.peak_start for s in taken]), np.concatenate([s.peak_end for s in taken]))
        return fetched.take(np.searchsorted(wanted, rows))


def is_streamed(store: object) -> bool:
    """A store read part by part (`StoreStream`) rather than loaded."""
    return isinstance(store, StoreStream)
