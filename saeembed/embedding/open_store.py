"""Where analyses get their stores: a store is loaded as it is, a corpus file is embedded first
(through the content-addressed cache, so the second analysis of the same file costs no model run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, cast

from saeembed.embedding.config import EmbedConfig, Pooling
from saeembed.store import Store, is_store, load_store
from saeembed.stream import StoreStream


def open_store(source: str | Path | Store, config: EmbedConfig | None = None,
               on_progress: Callable[[Any], None] | None = None,
               on_read: Callable[[int, int], None] | None = None) -> Store:
    """The store `source` names, embedding it first with `config` (default: the offline preset)
    when it is a corpus (JSONL, CSV, Parquet without saeembed metadata, TXT). `on_progress` follows the
    embedding (`EmbedProgress`), `on_read(parts read, parts)` the reading of a store of several parts.

    Examples:
        >>> tweets = open_store("examples/sarcastic.jsonl")  # doctest: +SKIP
    """
    if isinstance(source, Store):
        return source
    path = Path(source)
    if is_store(path):
        return load_store(path, on_read)
    from saeembed.embedding.pipeline import Embedder, scratch_folder

    with scratch_folder() as tmp:
        out = Path(tmp) / "store.parquet"
        Embedder(config=config).embed_files([str(path)], out, on_progress=on_progress)
        store = load_store(out)
    store.path = path  # name the corpus the user gave, not the temporary file
    return store


def embed_records(records: list[dict[str, Any]], config: EmbedConfig,
                  on_progress: Callable[[Any], None] | None = None) -> Store:
    """A store of in-memory documents (`{"text": ..., other fields}`), embedded through the cache."""
    from saeembed.embedding.pipeline import Embedder

    return Embedder(config=config).embed(records, on_progress=on_progress)


def config_of(store: Store | StoreStream) -> EmbedConfig:
    """The EmbedConfig that reads new text exactly as `store` was read (reader, layer, SAE, pooling)."""
    meta = store.meta
    return EmbedConfig(model=meta["model"]["id"], sae=meta["sae"]["source"], layer=meta["model"].get("layer"),
                       sae_format=meta["sae"].get("format"), revision=meta["model"].get("revision"),
                       pooling=_token_pooling(meta.get("pooling")), as_chat=meta.get("as_chat"),
                       max_tokens=meta.get("max_tokens"), long=meta.get("long", "chunk"),
                       sae_dtype=meta["sae"].get("compute_dtype", "auto"))


def _token_pooling(pooling: str | None) -> Pooling:
    """The EmbedConfig pooling behind a store's recorded one (`document`: the SAE pools by itself)."""
    # cast, not a check: EmbedConfig (check_fields) refuses a recorded value that is not a Pooling, naming it
    return "max" if pooling in (None, "document") else cast(Pooling, pooling)
