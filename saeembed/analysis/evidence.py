"""Evidence for findings: a document that shows the concept, its peak marked, beside one that lacks it."""

from __future__ import annotations

from typing import Any

import numpy as np

from saeembed.labels import marked_context, peak_span
from saeembed.store import Store, column_entries

PLAIN_CHARS = 200


def diff_examples(table: Any, stores: list[Store], rows: list[np.ndarray], paired: bool,
                  rng: np.random.Generator) -> Any:
    """Add `example_with[_id]` (a document of the side with more of the latent, where it fires
    strongest, peak marked `<< >>`) and `example_without[_id]` (one of the other side where it does
    not fire: for paired data, the same item's partner) to the significant rows of a diff table."""
    import polars as pl

    columns: dict[str, dict[int, Any]] = {"example_with_id": {}, "example_with": {},
                                          "example_without_id": {}, "example_without": {}}
    found = table.filter(pl.col("significant"))
    wanted = found["latent"].to_numpy()
    # Only the findings' columns are gathered: (compared row, activation) per latent and store.
    where = [_latent_rows(store.matrix, r, wanted) for store, r in zip(stores, rows)]
    shuffled = [rng.permutation(len(r)) for r in rows]
    index = {int(latent): i for i, latent in enumerate(table["latent"])}
    for latent, d, vs in zip(found["latent"], found["diff"], found["vs"]):
        more, less = (0, 1 + vs) if d > 0 else (1 + vs, 0)
        with_rows, values = where[more].get(int(latent), (np.zeros(0, np.int64), np.zeros(0)))
        without_rows = where[less].get(int(latent), (np.zeros(0, np.int64), None))[0]
        if paired:  # the item where `more` has the latent and its partner lacks it, strongest first
            keep = ~np.isin(with_rows, without_rows)
            with_rows, values = with_rows[keep], values[keep]
        if not len(with_rows):
            continue
        pick = int(with_rows[np.argmax(values)])
        if paired:
            partner = pick
        else:
            lacking = shuffled[less][~np.isin(shuffled[less], without_rows)]
            partner = int(lacking[0]) if len(lacking) else None
        i = index[int(latent)]
        row = int(rows[more][pick])
        text = stores[more].frame["text"][row]
        span = peak_span(stores[more], row, int(latent))
        columns["example_with_id"][i] = str(stores[more].frame["id"][row])
        columns["example_with"][i] = marked_context(text, span) if span else _plain(text)
        if partner is not None:
            other = int(rows[less][partner])
            columns["example_without_id"][i] = str(stores[less].frame["id"][other])
            columns["example_without"][i] = _plain(stores[less].frame["text"][other])
    return table.with_columns(pl.Series(name, [values.get(i) for i in range(len(table))], dtype=pl.Utf8)
                              for name, values in columns.items())


def _latent_rows(matrix: Any, rows: np.ndarray, latents: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """latent -> (positions in `rows` of the documents where it fires, activations), for `latents` only."""
    doc, which, values = column_entries(matrix, latents)
    position = np.full(matrix.shape[0], -1, np.int64)
    position[rows] = np.arange(len(rows))
    keep = (position[doc] >= 0) & (values > 0)
    doc, which, values = position[doc[keep]], which[keep], values[keep]
    return {int(latent): (doc[which == j], values[which == j]) for j, latent in enumerate(latents)}


def _plain(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= PLAIN_CHARS else text[:PLAIN_CHARS] + "…"
