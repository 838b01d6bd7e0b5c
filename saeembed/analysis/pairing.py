"""Row alignment across stores: the same item (a prompt id, a pair id) in every corpus."""

from __future__ import annotations

import numpy as np

from saeembed.errors import SaeEmbedError
from saeembed.store import Store


def align_pairs(stores: list[Store], key: str) -> list[np.ndarray]:
    """For each store, the row of every key present in all of them, in the first store's order.

    Raises SaeEmbedError when a store lacks the column or repeats a key (pairing needs one row each).
    """
    import polars as pl

    joined = None
    for i, store in enumerate(stores):
        if key not in store.frame.columns:
            fields = ", ".join(c for c in store.frame.columns if c not in ("text", "n_tokens"))
            raise SaeEmbedError(f"{store.path}: no column {key!r} to pair on; its fields are: {fields}")
        keys = store.frame.select(pl.col(key).cast(pl.Utf8).alias("key")).with_row_index(f"row{i}")
        repeated = keys.filter(pl.col("key").is_duplicated())
        if len(repeated):
            raise SaeEmbedError(f"{store.path}: {key} {repeated['key'][0]!r} appears on {len(repeated)} rows; "
                                f"pairing needs each {key} once per corpus")
        keys = keys.filter(pl.col("key").is_not_null())
        joined = keys if joined is None else joined.join(keys, on="key", how="inner")
    if joined is None or not len(joined):
        raise SaeEmbedError(f"no {key} value is shared by all corpora: nothing to pair")
    joined = joined.sort("row0")
    return [joined[f"row{i}"].to_numpy().astype(np.int64) for i in range(len(stores))]
