"""Evidence for findings: a document that shows the concept, its peak marked, beside one that lacks it."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from saeembed.spans import marked_context, peak_span
from saeembed.store import Store

if TYPE_CHECKING:
    import polars as pl

PLAIN_CHARS = 200


class Entries(NamedTuple):
    """The non-zeros of a few latents (the findings) among the compared documents of one store,
    grouped by latent: what the examples and the themes are built from, gathered once."""

    doc: np.ndarray
    """Position of the document among the store's compared rows."""
    which: np.ndarray
    """Index into the latents asked for (ascending)."""
    value: np.ndarray
    start: np.ndarray
    """Character where the latent peaked in that document."""
    bounds: np.ndarray
    """Entries of latent j: bounds[j]:bounds[j + 1]."""

    def of(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, activations) of the j-th latent."""
        span = slice(self.bounds[j], self.bounds[j + 1])
        return self.doc[span], self.value[span]


def finding_entries(store: Store, rows: np.ndarray, latents: np.ndarray) -> Entries:
    """The entries of `latents` (distinct) in the documents `rows` of `store`: one pass over the
    store's indices with a boolean lookup table (no copy of the matrix, no column slicing)."""
    matrix = store.matrix
    wanted = np.zeros(matrix.shape[1], bool)
    wanted[latents] = True
    at = np.flatnonzero(wanted[matrix.indices])
    at = at[matrix.data[at] > 0]
    position = np.full(matrix.shape[0], -1, np.int64)
    position[rows] = np.arange(len(rows))
    doc = position[np.searchsorted(matrix.indptr, at, side="right") - 1]
    at, doc = at[doc >= 0], doc[doc >= 0]
    slot = np.full(matrix.shape[1], -1, np.int64)
    slot[latents] = np.arange(len(latents))
    which = slot[matrix.indices[at]]
    # stable: documents stay in row order within a latent; radix sort on 16-bit keys is much faster
    order = np.argsort(which.astype(np.int16) if len(latents) < 2**15 else which, kind="stable")
    which = which[order]
    return Entries(doc[order], which, matrix.data[at][order], store.peak_start[at][order].astype(np.int64),
                   np.searchsorted(which, np.arange(len(latents) + 1)))


def diff_examples(table: pl.DataFrame, stores: list[Store], rows: list[np.ndarray], entries: list[Entries],
                  paired: bool, rng: np.random.Generator) -> pl.DataFrame:
    """Add `example_with[_id]` (a document of the side with more of the latent, where it fires
    strongest, peak marked `<< >>`) and `example_without[_id]` to the significant rows of a diff
    table. `entries[k]` holds the findings' latents in the order of the significant rows.

    The document without the latent is chosen per finding: for pairs the same item's partner; else
    a document of the other side lacking the latent and as close as possible in length to the one
    with it (of equally near ones, the first in a random order drawn once per side), so the contrast is the
    concept, not the length, and not the same shortest document for every finding.
    """
    import polars as pl

    columns: dict[str, dict[int, Any]] = {"example_with_id": {}, "example_with": {},
                                          "example_without_id": {}, "example_without": {}}
    found = table.filter(pl.col("significant"))
    tokens = [store.frame["n_tokens"].to_numpy()[r] for store, r in zip(stores, rows)]
    by_length = [ByLength.of(t, rng) for t in tokens]
    index = {int(latent): i for i, latent in enumerate(table["latent"])}
    for j, (latent, d, vs) in enumerate(zip(found["latent"], found["diff"], found["vs"])):
        more, less = (0, 1 + vs) if d > 0 else (1 + vs, 0)
        with_docs, values = entries[more].of(j)
        without_docs = np.sort(entries[less].of(j)[0])
        if paired:  # the item where `more` has the latent and its partner lacks it, strongest first
            keep = ~_contains(without_docs, with_docs)
            with_docs, values = with_docs[keep], values[keep]
        if not len(with_docs):
            continue
        pick = int(with_docs[np.argmax(values)])
        partner = pick if paired else by_length[less].nearest_lacking(tokens[more][pick],
                                                                      partial(_contains, without_docs))
        i = index[int(latent)]
        row = int(rows[more][pick])
        text = stores[more].frame["text"][row]
        span = peak_span(stores[more], row, int(latent))
        columns["example_with_id"][i] = str(stores[more].frame["id"][row])
        columns["example_with"][i] = marked_context(text, span) if span else one_line(text)
        if partner is not None:
            other = int(rows[less][partner])
            columns["example_without_id"][i] = str(stores[less].frame["id"][other])
            columns["example_without"][i] = one_line(stores[less].frame["text"][other])
    return table.with_columns(pl.Series(name, [values.get(i) for i in range(len(table))], dtype=pl.Utf8)
                              for name, values in columns.items())


class ByLength(NamedTuple):
    """The compared documents of one side sorted by length, documents of the same length in a random order
    drawn once (`key`)."""

    order: np.ndarray
    tokens: np.ndarray
    key: np.ndarray

    @classmethod
    def of(cls, tokens: np.ndarray, rng: np.random.Generator) -> "ByLength":
        key = rng.random(len(tokens))
        order = np.lexsort((key, tokens))
        return cls(order, tokens[order], key[order])

    def nearest_lacking(self, target: int, fires: Callable[[np.ndarray], np.ndarray],
                        lacking: Callable[[int], int] | None = None) -> int | None:
        """The document (position) lacking the latent whose length is nearest `target`; of equally near ones
        the first in the random order. `fires(positions)` says which documents have the latent; it is asked
        about a few documents at a time, the nearest lengths first, so a caller that learns it by reading a
        store (and raises until it has) asks little and gets the same answer as one that knows it.
        `lacking(length)`, when known, says how many documents of that length lack it: lengths where none
        does are not asked about, and the first window is sized to find one (the answer is the same)."""
        n = len(self.order)
        lo = hi = int(np.searchsorted(self.tokens, target))  # examined so far: [lo, hi), whole lengths
        while lo > 0 or hi < n:
            below = target - int(self.tokens[lo - 1]) if lo > 0 else None
            above = int(self.tokens[hi]) - target if hi < n else None
            gap = min(g for g in (below, above) if g is not None)
            found = []
            if below == gap:
                start = int(np.searchsorted(self.tokens, self.tokens[lo - 1]))
                found.append(self._first_lacking(start, lo, fires, lacking))
                lo = start
            if above == gap:
                stop = int(np.searchsorted(self.tokens, self.tokens[hi], side="right"))
                found.append(self._first_lacking(hi, stop, fires, lacking))
                hi = stop
            found = [f for f in found if f is not None]
            if found:
                return int(self.order[min(found, key=lambda at: self.key[at])])
        return None

    def _first_lacking(self, start: int, stop: int, fires: Callable[[np.ndarray], np.ndarray],
                       lacking: Callable[[int], int] | None) -> int | None:
        """The first of sorted positions start..stop-1 (documents of one length) whose document lacks the latent,
        asking a few at a time."""
        width = 32
        if lacking is not None:
            missing = lacking(int(self.tokens[start]))
            if not missing:
                return None
            width = max(width, -(-4 * (stop - start) // missing))  # about four lacking ones expected
        while start < stop:
            without = np.flatnonzero(~fires(self.order[start:min(stop, start + width)]))
            if len(without):
                return start + int(without[0])
            start, width = start + width, width * 4
        return None


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values in sorted_values, elementwise."""
    if not len(sorted_values):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def one_line(text: str) -> str:
    """A document shown as evidence: on one line, cut at PLAIN_CHARS."""
    text = text.replace("\n", " ")
    return text if len(text) <= PLAIN_CHARS else text[:PLAIN_CHARS] + "…"
