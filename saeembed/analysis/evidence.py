"""Evidence for findings: a document that shows the concept, its peak marked, beside one that lacks it."""

from __future__ import annotations

from typing import Any

import numpy as np

from saeembed.labels import marked_context, peak_span
from saeembed.store import Store

PLAIN_CHARS = 200


def diff_examples(table: Any, stores: list[Store], rows: list[np.ndarray], paired: bool,
                  rng: np.random.Generator) -> Any:
    """Add `example_with[_id]` (a document of the side with more of the latent, where it fires
    strongest, peak marked `<< >>`) and `example_without[_id]` (one of the other side where it does
    not fire: for paired data, the same item's partner) to the significant rows of a diff table."""
    import polars as pl

    columns: dict[str, dict[int, Any]] = {"example_with_id": {}, "example_with": {},
                                          "example_without_id": {}, "example_without": {}}
    csc: dict[int, Any] = {}

    def column(side: int, latent: int) -> tuple[np.ndarray, np.ndarray]:
        if side not in csc:
            csc[side] = stores[side].matrix[rows[side]].tocsc()
        m = csc[side]
        start, stop = m.indptr[latent], m.indptr[latent + 1]
        return m.indices[start:stop], m.data[start:stop]

    shuffled = [rng.permutation(len(r)) for r in rows]
    for i, (latent, d, vs, found) in enumerate(zip(table["latent"], table["diff"], table["vs"], table["significant"])):
        if not found:
            continue
        more, less = (0, 1 + vs) if d > 0 else (1 + vs, 0)
        with_rows, values = column(more, latent)
        without_rows, _ = column(less, latent)
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


def _plain(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= PLAIN_CHARS else text[:PLAIN_CHARS] + "…"
