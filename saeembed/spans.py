"""Where a latent peaked in a document and how evidence is marked: the character span of its peak
token in the stored text, the documents where it is strongest, and the text around a span with the
span marked `<< >>` (the paper's convention). Every analysis, label and report highlights through here."""

from __future__ import annotations

import numpy as np

from saeembed.store import Store

MARK_OPEN, MARK_CLOSE = "<<", ">>"


def top_documents(store: Store, latent: int, n: int = 10) -> list[tuple[int, float]]:
    """(row, activation) of the documents where `latent` is strongest, strongest first."""
    column = store.matrix.getcol(int(latent)).tocoo()
    order = np.argsort(-column.data)[:n]
    return [(int(column.row[i]), float(column.data[i])) for i in order]


def peak_span(store: Store, row: int, latent: int) -> tuple[int, int] | None:
    """Character span in `text` of the token where `latent` peaked in document `row`."""
    start, stop = store.matrix.indptr[row], store.matrix.indptr[row + 1]
    at = np.searchsorted(store.matrix.indices[start:stop], latent)
    if at < stop - start and store.matrix.indices[start + at] == latent:
        return int(store.peak_start[start + at]), int(store.peak_end[start + at])
    return None


def marked_context(text: str, span: tuple[int, int], width: int = 80) -> str:
    """The text around a span, with the span marked << >> (the paper's convention)."""
    start, end = span
    left, right = max(0, start - width), min(len(text), end + width)
    return (("…" if left else "") + text[left:start] + MARK_OPEN + text[start:end] + MARK_CLOSE
            + text[end:right] + ("…" if right < len(text) else "")).replace("\n", " ")
