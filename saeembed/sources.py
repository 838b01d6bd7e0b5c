"""Where analyses get their stores: a store is loaded as it is, a corpus file is embedded first
(through the content-addressed cache, so the second analysis of the same file costs no model run)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from saeembed.config import EmbedConfig
from saeembed.errors import CorpusError
from saeembed.outputs import OutputError
from saeembed.store import Store, is_store, load_store


def open_store(source: str | Path | Store, config: EmbedConfig | None = None,
               on_progress: Callable[[Any], None] | None = None) -> Store:
    """The store `source` names, embedding it first with `config` (default: the offline preset)
    when it is a corpus (JSONL, CSV, Parquet without saeembed metadata, TXT).

    Examples:
        >>> tweets = open_store("examples/sarcastic.jsonl")  # doctest: +SKIP
    """
    if isinstance(source, Store):
        return source
    path = Path(source)
    if is_store(path):
        return load_store(path)
    from saeembed.pipeline import embed
    from saeembed.presets import embed_config

    with _scratch() as tmp:
        out = Path(tmp) / "store.parquet"
        embed([str(path)], out, config or embed_config(), on_progress=on_progress)
        store = load_store(out)
    store.path = path  # name the corpus the user gave, not the temporary file
    return store


def embed_records(records: list[dict[str, Any]], config: EmbedConfig,
                  on_progress: Callable[[Any], None] | None = None) -> Store:
    """A store of in-memory documents (`{"text": ..., other fields}`), embedded through the cache."""
    import json

    from saeembed.pipeline import embed

    lines = []
    for number, record in enumerate(records, 1):
        try:
            lines.append(json.dumps(record, allow_nan=True) + "\n")
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold, or a cycle
            raise CorpusError(f"record {number}: {exc}; give text, numbers, true/false, null, lists and "
                              f"objects only") from None
    with _scratch() as tmp:
        corpus = Path(tmp) / "documents.jsonl"
        corpus.write_text("".join(lines), encoding="utf-8")
        try:
            embed([str(corpus)], Path(tmp) / "store.parquet", config, on_progress=on_progress)
        except CorpusError as exc:  # name the record, not the temporary file nobody has seen
            raise CorpusError(str(exc).replace(f"{corpus}:line ", "record ")) from None
        return load_store(Path(tmp) / "store.parquet")


def _scratch() -> tempfile.TemporaryDirectory:
    """A temporary folder for a store that is loaded and dropped; one line when none can be made."""
    try:
        return tempfile.TemporaryDirectory(prefix="saeembed-")
    except OSError as exc:
        raise OutputError(f"cannot create a temporary folder in {tempfile.gettempdir()} ({exc.strerror or exc}); "
                          f"set TMPDIR to a writable folder") from None


def config_of(store: Store) -> EmbedConfig:
    """The EmbedConfig that reads new text exactly as `store` was read (reader, layer, SAE, pooling)."""
    meta = store.meta
    return EmbedConfig(model=meta["model"]["id"], sae=meta["sae"]["source"], layer=meta["model"].get("layer"),
                       sae_format=meta["sae"].get("format"), revision=meta["model"].get("revision"),
                       pooling=_token_pooling(meta.get("pooling")), as_chat=meta.get("as_chat"),
                       max_tokens=meta.get("max_tokens"), long=meta.get("long", "chunk"))


def _token_pooling(pooling: str | None) -> str:
    """The EmbedConfig pooling behind a store's recorded one (`document`: the SAE pools by itself)."""
    return "max" if pooling in (None, "document") else pooling
