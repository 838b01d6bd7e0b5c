"""A diff of stores read part by part (`saeembed.stream.StoreStream`): the same statistics, themes and examples
as of the loaded stores, from passes over the parts, so memory follows the latents and findings, not the
documents.

- The tests read a side through `StreamSide`: per-latent counts, counts per length band and sums, each a sum
  over the parts (`saeembed.analysis.compare.Side` is the same for one matrix).
- Themes read the findings' co-occurrence counts (findings x findings), summed over the parts.
- Examples: the strongest document of each finding is kept while passing, with how many documents of each
  length fire; the document without it is found by the same search as for a loaded store
  (`evidence.ByLength`): lengths where every document fires are skipped, and it asks whether the latent
  fires on a window of documents of the nearest length where one lacks it, read in a pass over the parts
  that hold them (usually one round); then the few documents shown are fetched by row.

Pairs (`pair_on`) need both sides' rows side by side and are not read this way: load the stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from saeembed.analysis.evidence import ByLength, one_line
from saeembed.analysis.length_adjust import Sums, matrix_sums
from saeembed.analysis.themes import DENSE_FINDINGS, links_of, presence, themes_of
from saeembed.form_counts import STORED_COLUMNS
from saeembed.store import document_frequency
from saeembed.stream import Chunk, StoreStream

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    from scipy.sparse import csr_matrix

    from saeembed.analysis.config import DiffConfig
    from saeembed.form_counts import FeatureCounter, OpeningTally


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
            self._counts = sum(self.stream.map(_counts_work, self._per_part()), np.zeros(self.stream.d_sae, np.int64))
        return self._counts

    def band_presence(self, codes: np.ndarray, n_bands: int) -> np.ndarray:
        args = [(rows, codes[span], n_bands) for (rows, span) in zip(self._per_part(), self._spans())]
        return sum(self.stream.map(_band_work, args), np.zeros((n_bands, self.stream.d_sae), np.int64))

    def sums(self, x: np.ndarray | None = None) -> Sums:
        args = [(rows, None if x is None else x[span]) for rows, span in zip(self._per_part(), self._spans())]
        total = Sums(np.zeros(self.stream.d_sae), np.zeros(self.stream.d_sae), np.zeros(self.stream.d_sae))
        for part in self.stream.map(_sums_work, args):  # in part order: the same float sums wherever run
            total = Sums(*(t + p for t, p in zip(total, part)))
        return total

    def _spans(self) -> list[slice]:
        """Per part, the positions among `rows` of its rows."""
        bounds = np.searchsorted(self.rows, self.stream.part_rows)
        return [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _per_part(self) -> list[np.ndarray | None]:
        """Per part, its rows to read (numbered within the part); None for every row."""
        out: list[np.ndarray | None] = []
        for k, span in enumerate(self._spans()):
            local = self.rows[span] - self.stream.part_rows[k]
            whole = len(local) == self.stream.part_rows[k + 1] - self.stream.part_rows[k]  # ascending, distinct
            out.append(None if whole else local)
        return out


def _rows_of(chunk: Chunk, rows: np.ndarray | None) -> csr_matrix:
    return chunk.matrix if rows is None else chunk.matrix[rows]


def _counts_work(chunk: Chunk, rows: np.ndarray | None) -> np.ndarray:
    return document_frequency(_rows_of(chunk, rows))


def _band_work(chunk: Chunk, arg: tuple[np.ndarray | None, np.ndarray, int]) -> np.ndarray:
    from saeembed.analysis.length_adjust import band_presence

    rows, codes, n_bands = arg
    return band_presence(_rows_of(chunk, rows), codes, n_bands)


def _sums_work(chunk: Chunk, arg: tuple[np.ndarray | None, np.ndarray | None]) -> Sums:
    rows, x = arg
    return matrix_sums(_rows_of(chunk, rows), x)


class StreamForm:
    """The form layer's documents of a streamed store as a `form.FormSource`: each part's openings tallied and
    features counted where the part is read, from its form columns (`form_counts.stored_form`), or from its
    texts (`form.counted_texts`) in a part that has none."""

    def __init__(self, stream: StoreStream) -> None:
        self.stream = stream

    def tallies(self) -> Iterable[OpeningTally]:
        return self._per_part(_stored_tally_work, _tally_work, self.stream.meta)

    def counts(self, counter: FeatureCounter) -> Iterable[csr_matrix]:
        return self._per_part(_stored_count_work, _count_work, (self.stream.meta, counter))

    def _per_part(self, stored: Callable[[Any, Any], Any], counted: Callable[[Any, Any], Any], arg: Any) -> list[Any]:
        from saeembed.form_counts import FORM_FINGERPRINT

        n = len(self.stream.files)
        results: list[Any] = [None] * n
        if (self.stream.meta.get("form") or {}).get("fingerprint") == FORM_FINGERPRINT:  # else none has them
            results = list(self.stream.map(stored, [arg] * n, columns=list(STORED_COLUMNS), arrow=True))
        missing = [result is None for result in results]
        if any(missing):  # parts written before the form columns, or counted with other features: their texts
            from_texts = self.stream.map(counted, [arg] * n, columns=TEXT_COLUMNS, skip=[not m for m in missing])
            results = [text if m else result for result, text, m in zip(results, from_texts, missing)]
        return results


TEXT_COLUMNS = ["text", "messages"]  # what `form.texts_of` reads


def _stored_tally_work(table: pa.Table, _: Any) -> OpeningTally | None:
    """A part's `tally_openings` from its form columns (their own metadata says what they were counted with);
    None where it has none this saeembed can read."""
    from saeembed.form_counts import stored_form, stored_tally
    from saeembed.store import _table_meta

    form = stored_form(table, _table_meta(table))
    return None if form is None else stored_tally(form)


def _stored_count_work(table: pa.Table, arg: tuple[dict[str, Any], FeatureCounter]) -> csr_matrix | None:
    """A part's counts (`FeatureCounter.stored`) from its form columns; None as `_stored_tally_work`."""
    from saeembed.form_counts import stored_form
    from saeembed.store import _table_meta

    form = stored_form(table, _table_meta(table))
    return None if form is None else arg[1].stored(form)


def _tally_work(frame: pl.DataFrame, meta: dict[str, Any]) -> OpeningTally:
    from saeembed.form_counts import tally_openings, texts_of

    return tally_openings(texts_of(frame, meta))


def _count_work(frame: pl.DataFrame, arg: tuple[dict[str, Any], FeatureCounter]) -> csr_matrix:
    from saeembed.form_counts import texts_of

    meta, counter = arg
    return counter(texts_of(frame, meta))


class StreamTexts(Sequence[str]):
    """The form layer's text of a streamed store's row, read when asked (the part last read is kept)."""

    def __init__(self, stream: StoreStream) -> None:
        self.stream = stream
        self._part, self._texts = -1, list[str]()

    def __len__(self) -> int:
        return self.stream.n_docs

    def __getitem__(self, row: Any) -> Any:
        from saeembed.form_counts import texts_of

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
    passed = _FindingPass(latents, stores)
    for k, store in enumerate(stores):
        passed.read(k, store)
    theme = themes_of(links_of(passed.size, passed.shared, passed.same, sum(s.n_docs for s in stores), signs, config),
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

    def __init__(self, latents: np.ndarray, stores: Sequence[StoreStream]) -> None:
        n, n_stores = len(latents), len(stores)
        self.latents = latents
        # per store, its documents' lengths as codes into its distinct lengths, and per finding and length the
        # documents that fire (the contrast search skips lengths where every document does)
        self.lengths = [np.unique(s.n_tokens, return_inverse=True) for s in stores]
        self.firing = [np.zeros((n, len(values)), np.int64) for values, _ in self.lengths]
        self.size = np.zeros(n, np.int64)
        # findings x findings counts: dense up to DENSE_FINDINGS findings, sparse beyond (n^2 would not fit)
        self.shared: Any = np.zeros((n, n), np.int64) if n <= DENSE_FINDINGS else None
        self.same: Any = np.zeros((n, n), np.int64) if n <= DENSE_FINDINGS else None
        self.best_value = np.full((n_stores, n), -np.inf, np.float32)
        self.best_row = np.full((n_stores, n), -1, np.int64)

    def read(self, k: int, store: StoreStream) -> None:
        n = len(self.latents)
        if not n:
            return
        values, codes = self.lengths[k]
        parts = store.part_rows
        args = [(self.latents, codes[lo:hi], len(values)) for lo, hi in zip(parts[:-1], parts[1:])]
        for start, (size, shared, same, firing, latent, value, row) in zip(parts, store.map(_finding_work, args)):
            self.size += size
            self.shared = shared if self.shared is None else self.shared + shared
            self.same = same if self.same is None else self.same + same
            self.firing[k] += firing
            better = value > self.best_value[k, latent]  # an earlier part keeps a tie: the first row, as argmax
            self.best_value[k, latent[better]] = value[better]
            self.best_row[k, latent[better]] = row[better] + start

    def lacking(self, k: int, j: int) -> Callable[[int], int]:
        """For store k and finding j: length -> its documents of that length that lack the latent."""
        values, codes = self.lengths[k]
        return _lacking_of(values, np.bincount(codes, minlength=len(values)), self.firing[k][j])


def _lacking_of(values: np.ndarray, docs: np.ndarray, firing: np.ndarray) -> Callable[[int], int]:
    """length -> documents of that length lacking the latent (`firing`: per length code, those that have it)."""
    def lacking(length: int) -> int:
        at = int(np.searchsorted(values, length))
        return int(docs[at] - firing[at]) if at < len(values) and values[at] == length else 0
    return lacking


def _finding_work(chunk: Chunk, arg: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """One part's co-occurrence counts of the findings' latents, per finding and length code the documents
    firing, and each finding's strongest row (first of a tie): (size, shared, same, firing, finding, value,
    row)."""
    latents, codes, n_lengths = arg
    n = len(latents)
    m = chunk.matrix
    slot = np.full(m.shape[1], -1, np.int64)
    slot[latents] = np.arange(n)
    at = np.flatnonzero(slot[m.indices] >= 0)
    at = at[m.data[at] > 0]
    doc = np.searchsorted(m.indptr, at, side="right") - 1
    which = slot[m.indices[at]]
    fires, peaks = presence(doc, which, chunk.peak_start[at].astype(np.int64), m.shape[0], n)
    values = m.data[at]
    order = np.lexsort((doc, -values, which))  # per latent: largest value, then the first row
    first = order[np.r_[True, which[order][1:] != which[order][:-1]]] if len(order) else order
    firing = np.bincount(which * n_lengths + codes[doc], minlength=n * n_lengths).reshape(n, n_lengths)
    shared, same = ((x.T.tocsr() @ x).astype(np.int64) for x in (fires, peaks))
    if n <= DENSE_FINDINGS:
        shared, same = shared.toarray(), same.toarray()
    return (np.asarray(fires.sum(axis=0)).ravel().astype(np.int64), shared, same, firing, which[first],
            values[first], doc[first])


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
        bounds = np.searchsorted(row, store.part_rows)
        args = [(row[lo:hi] - start, latent[lo:hi]) for lo, hi, start in zip(bounds[:-1], bounds[1:], store.part_rows)]
        skip = [not len(local) for local, _ in args]  # parts nothing was asked of are not read
        for (local, lat), start, fires in zip(args, store.part_rows, store.map(_firing_work, args, skip=skip)):
            if fires is not None:
                for r, lt, f in zip((local + start).tolist(), lat.tolist(), fires.tolist()):
                    self.known[lt][r] = f


def _firing_work(chunk: Chunk, arg: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Whether latent[i] fires on row[i] of this part (rows numbered within it)."""
    rows, latents = arg
    if not len(rows):
        return np.zeros(0, bool)
    unique = np.unique(rows)
    sub = chunk.matrix[unique]
    on = sub.data > 0
    firing = np.repeat(unique, np.diff(sub.indptr))[on] * chunk.matrix.shape[1] + sub.indices[on]
    return np.isin(rows * chunk.matrix.shape[1] + latents, firing)


def _examples(table: pl.DataFrame, findings: pl.DataFrame, stores: Sequence[StoreStream], passed: _FindingPass,
              rng: np.random.Generator) -> pl.DataFrame:
    """`evidence.diff_examples` (unpaired) over streamed stores: the same documents, the same draws."""
    import polars as pl

    from saeembed.spans import marked_context, peak_span

    tokens = [s.n_tokens for s in stores]
    by_length = [ByLength.of(t, rng) for t in tokens]
    plan: list[tuple[int, int, int, int, int]] = []  # (table row, more, less, row with, latent)
    finding: list[int] = []  # each planned example's finding
    index = {int(latent): i for i, latent in enumerate(table["latent"])}
    for j, (latent, d, vs) in enumerate(zip(findings["latent"], findings["diff"], findings["vs"])):
        more, less = (0, 1 + vs) if d > 0 else (1 + vs, 0)
        if passed.best_row[more, j] >= 0:
            plan.append((index[int(latent)], more, less, int(passed.best_row[more, j]), int(latent)))
            finding.append(j)
    firing = [_Firing() for _ in stores]
    nearest: dict[int, int | None] = {}
    while len(nearest) < len(plan):  # rounds: each reads the rows the searches asked about
        questions: dict[int, list[tuple[int, np.ndarray]]] = {}
        for j, (i, more, less, row, latent) in enumerate(plan):
            if i in nearest:
                continue
            try:
                nearest[i] = by_length[less].nearest_lacking(int(tokens[more][row]), firing[less].asker(latent),
                                                             passed.lacking(less, finding[j]))
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
        columns["example_with"][i] = marked_context(text, span) if span else one_line(text)
        if partner is not None:
            other, at = document(less, partner)
            columns["example_without_id"][i] = str(other.frame["id"][at])
            columns["example_without"][i] = one_line(other.frame["text"][at])
    return table.with_columns(pl.Series(name, [values.get(i) for i in range(len(table))], dtype=pl.Utf8)
                              for name, values in columns.items())
