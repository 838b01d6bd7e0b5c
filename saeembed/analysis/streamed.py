"""A diff of stores read part by part (`saeembed.stream.StoreStream`): the same statistics, themes and examples
as of the loaded stores, from passes over the parts, so memory follows the latents and findings, not the
documents.

- The tests read a side through `StreamSide`: per-latent counts, counts per length band and sums, each a sum
  over the parts (`saeembed.analysis.compare.Side` is the same for one matrix).
- Themes read the findings' co-occurrence counts (findings x findings), summed over the parts.
- Examples: the strongest document of each finding is kept while passing; the document without it is found
  by the same search as for a loaded store (`evidence.ByLength`), which asks whether a latent fires on a
  few documents near a length: those are read in a pass when it asks (two or three passes in all); then the
  few documents shown are fetched by row.

Pairs (`pair_on`) need both sides' rows side by side and are not read this way: load the stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from saeembed.analysis.evidence import ByLength, _plain
from saeembed.analysis.length_adjust import Sums, matrix_sums
from saeembed.analysis.themes import links_of, presence, themes_of
from saeembed.store import document_frequency
from saeembed.stream import StoreStream

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix

    from saeembed.analysis.config import DiffConfig
    from saeembed.analysis.form import TextBatches


class StreamSide:
    """The documents `rows` (ascending) of a store read by parts, as the tests read a side (`compare.Side`)."""

    def __init__(self, stream: StoreStream, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if len(rows) > 1 and (np.diff(rows) <= 0).any():
            raise ValueError("a side of a streamed store takes its rows in ascending order")
        self.stream, self.rows = stream, rows
        self.n_tokens = stream.n_tokens[rows]
        self._counts: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def matrix(self) -> csr_matrix:
        raise TypeError("pairs need both stores' rows side by side: load the stores (saeembed.load_store)")

    @property
    def counts(self) -> np.ndarray:
        """Documents in which each latent fires."""
        if self._counts is None:
            self._counts = sum((document_frequency(m) for _, m in self._pieces()),
                               np.zeros(self.stream.d_sae, np.int64))
        return self._counts

    def band_presence(self, codes: np.ndarray, n_bands: int) -> np.ndarray:
        from saeembed.analysis.length_adjust import band_presence

        out = np.zeros((n_bands, self.stream.d_sae), np.int64)
        for span, matrix in self._pieces():
            out += band_presence(matrix, codes[span], n_bands)
        return out

    def sums(self, x: np.ndarray | None = None) -> Sums:
        parts = [matrix_sums(m, None if x is None else x[span]) for span, m in self._pieces()]
        if not parts:
            return matrix_sums(np.zeros((0, self.stream.d_sae)), x)
        return Sums(*(np.sum([getattr(p, f) for p in parts], axis=0) for f in Sums._fields))

    def _pieces(self) -> Iterator[tuple[slice, csr_matrix]]:
        """(positions among `rows`, their vectors) part by part."""
        for chunk in self.stream.chunks():
            stop = chunk.start + chunk.matrix.shape[0]
            lo, hi = np.searchsorted(self.rows, [chunk.start, stop])
            if lo == hi:
                continue
            local = self.rows[lo:hi] - chunk.start
            whole = hi - lo == chunk.matrix.shape[0]  # ascending and distinct: every row of the part
            yield slice(int(lo), int(hi)), chunk.matrix if whole else chunk.matrix[local]


def text_batches(stream: StoreStream) -> TextBatches:
    """The form layer's texts of a streamed store (`form.counted_texts`), one batch per part."""
    from saeembed.analysis.form import texts_of

    return lambda: (texts_of(frame, stream.meta) for frame in stream.frames(["text", "messages"]))


class StreamTexts(Sequence[str]):
    """The form layer's text of a streamed store's row, read when asked (the part last read is kept)."""

    def __init__(self, stream: StoreStream) -> None:
        self.stream = stream
        self._part, self._texts = -1, list[str]()

    def __len__(self) -> int:
        return self.stream.n_docs

    def __getitem__(self, row: Any) -> Any:
        from saeembed.analysis.form import texts_of

        row = int(row)
        part = int(np.searchsorted(self.stream.part_rows, row, side="right")) - 1
        if part != self._part:
            import pyarrow.parquet as pq

            from saeembed.store import _frame

            file = self.stream.files[part]
            columns = [c for c in ("text", "messages") if c in self.stream.columns]
            self._part, self._texts = part, texts_of(_frame(pq.read_table(file, columns=columns), file),
                                                     self.stream.meta)
        return self._texts[row - int(self.stream.part_rows[part])]


def evidence(table: pl.DataFrame, stores: Sequence[StoreStream], config: DiffConfig, rng: np.random.Generator,
             decoder: np.ndarray | None) -> pl.DataFrame:
    """Themes and examples of the findings of an unpaired diff of streamed stores (every row compared),
    equal to `diff._evidence` of the loaded stores."""
    import polars as pl

    findings = table.filter(pl.col("significant"))
    latents = findings["latent"].to_numpy().astype(np.int64)
    signs = np.sign(findings["diff"].to_numpy())
    passed = _FindingPass(latents, len(stores))
    for k, store in enumerate(stores):
        passed.read(k, store)
    theme = themes_of(links_of(passed.size.astype(np.float32), passed.shared.astype(np.float32),
                               passed.same.astype(np.float32), sum(s.n_docs for s in stores), signs, config),
                      signs, config, decoder, latents) if len(latents) else np.zeros(0, np.int32)
    theme_of = np.zeros(len(table), np.int32)
    theme_of[:len(findings)] = theme  # findings come first in the ordered table
    table = table.with_columns(theme=pl.Series(theme_of, dtype=pl.Int32).replace(0, None))
    if config.examples:
        table = _examples(table, findings, stores, passed, rng)
    return table


class _FindingPass:
    """What one pass over each store learns of the findings' latents: co-occurrence counts (documents firing
    each, firing together, peaking on the same token) and each latent's strongest document per store."""

    def __init__(self, latents: np.ndarray, n_stores: int) -> None:
        n = len(latents)
        self.latents = latents
        self.size = np.zeros(n)
        self.shared = np.zeros((n, n))
        self.same = np.zeros((n, n))
        self.best_value = np.full((n_stores, n), -np.inf, np.float32)
        self.best_row = np.full((n_stores, n), -1, np.int64)

    def read(self, k: int, store: StoreStream) -> None:
        n = len(self.latents)
        if not n:
            return
        slot = np.full(store.d_sae, -1, np.int64)
        slot[self.latents] = np.arange(n)
        for chunk in store.chunks():
            m = chunk.matrix
            at = np.flatnonzero(slot[m.indices] >= 0)
            at = at[m.data[at] > 0]
            doc = np.searchsorted(m.indptr, at, side="right") - 1
            which = slot[m.indices[at]]
            fires, peaks = presence(doc, which, chunk.peak_start[at].astype(np.int64), m.shape[0], n)
            self.size += np.asarray(fires.sum(axis=0)).ravel()
            self.shared += (fires.T.tocsr() @ fires).toarray()
            self.same += (peaks.T.tocsr() @ peaks).toarray()
            values = m.data[at]
            order = np.lexsort((doc, -values, which))  # per latent: largest value, then the first row
            first = order[np.r_[True, which[order][1:] != which[order][:-1]]] if len(order) else order
            w, v = which[first], values[first]
            better = v > self.best_value[k, w]  # an earlier part keeps a tie: the first row, as argmax
            self.best_value[k, w[better]] = v[better]
            self.best_row[k, w[better]] = doc[first][better] + chunk.start


class _Missing(Exception):
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows


class _Firing:
    """Whether a latent fires on given rows of a store, learnt by reading them (`learn`) when asked."""

    def __init__(self) -> None:
        self.known: dict[int, dict[int, bool]] = {}

    def asker(self, latent: int) -> Any:
        known = self.known.setdefault(latent, {})

        def fires(rows: np.ndarray) -> np.ndarray:
            missing = [int(r) for r in rows if int(r) not in known]
            if missing:
                raise _Missing(np.asarray(missing, np.int64))
            return np.fromiter((known[int(r)] for r in rows), bool, len(rows))
        return fires

    def learn(self, store: StoreStream, asked: list[tuple[int, np.ndarray]]) -> None:
        """One pass over the parts holding the asked (latent, rows)."""
        latent = np.concatenate([np.full(len(rows), lt, np.int64) for lt, rows in asked])
        row = np.concatenate([rows for _, rows in asked])
        order = np.argsort(row, kind="stable")
        latent, row = latent[order], row[order]
        for chunk in store.chunks():
            m = chunk.matrix
            lo, hi = np.searchsorted(row, [chunk.start, chunk.start + m.shape[0]])
            if lo == hi:
                continue
            local, lat = row[lo:hi] - chunk.start, latent[lo:hi]
            sub = m[np.unique(local)]
            sub_rows = np.repeat(np.unique(local), np.diff(sub.indptr))
            on = sub.data > 0
            firing = set((sub_rows[on] * store.d_sae + sub.indices[on]).tolist())
            for r, lt in zip((local + chunk.start).tolist(), lat.tolist()):
                self.known[lt][r] = (r - chunk.start) * store.d_sae + lt in firing


def _examples(table: pl.DataFrame, findings: pl.DataFrame, stores: Sequence[StoreStream], passed: _FindingPass,
              rng: np.random.Generator) -> pl.DataFrame:
    """`evidence.diff_examples` (unpaired) over streamed stores: the same documents, the same draws."""
    import polars as pl

    from saeembed.spans import marked_context, peak_span

    tokens = [s.n_tokens for s in stores]
    by_length = [ByLength.of(t, rng) for t in tokens]
    plan: list[tuple[int, int, int, int, int]] = []  # (table row, more, less, row with, latent)
    index = {int(latent): i for i, latent in enumerate(table["latent"])}
    for j, (latent, d, vs) in enumerate(zip(findings["latent"], findings["diff"], findings["vs"])):
        more, less = (0, 1 + vs) if d > 0 else (1 + vs, 0)
        if passed.best_row[more, j] >= 0:
            plan.append((index[int(latent)], more, less, int(passed.best_row[more, j]), int(latent)))
    firing = [_Firing() for _ in stores]
    nearest: dict[int, int | None] = {}
    while len(nearest) < len(plan):  # rounds: each reads the rows the searches asked about
        questions: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, more, less, row, latent in plan:
            if i in nearest:
                continue
            try:
                nearest[i] = by_length[less].nearest_lacking(int(tokens[more][row]), firing[less].asker(latent))
            except _Missing as missing:
                questions.setdefault(less, []).append((latent, missing.rows))
        for less, asked in questions.items():
            firing[less].learn(stores[less], asked)
    shown = [(i, more, less, row, nearest[i], latent) for i, more, less, row, latent in plan]
    wanted: list[list[int]] = [[] for _ in stores]
    for _, more, less, row, partner, _ in shown:
        wanted[more].append(row)
        if partner is not None:
            wanted[less].append(partner)
    fetched = {k: (np.unique(rows), stores[k].fetch(np.unique(rows))) for k, rows in enumerate(wanted) if rows}

    def document(k: int, row: int) -> tuple[Any, int]:
        rows, store = fetched[k]
        return store, int(np.searchsorted(rows, row))

    columns: dict[str, dict[int, Any]] = {"example_with_id": {}, "example_with": {},
                                          "example_without_id": {}, "example_without": {}}
    for i, more, less, row, partner, latent in shown:
        store, at = document(more, row)
        text = store.frame["text"][at]
        span = peak_span(store, at, latent)
        columns["example_with_id"][i] = str(store.frame["id"][at])
        columns["example_with"][i] = marked_context(text, span) if span else _plain(text)
        if partner is not None:
            other, at = document(less, partner)
            columns["example_without_id"][i] = str(other.frame["id"][at])
            columns["example_without"][i] = _plain(other.frame["text"][at])
    return table.with_columns(pl.Series(name, [values.get(i) for i in range(len(table))], dtype=pl.Utf8)
                              for name, values in columns.items())
