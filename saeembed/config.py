"""Embedding settings, kept free of heavy imports so the CLI can take its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Pooling = Literal["max", "mean", "sum", "count"]
LongMode = Literal["chunk", "truncate"]
POOLINGS = ("max", "mean", "sum", "count")


@dataclass
class EmbedConfig:
    """How documents are embedded. CLI defaults come from here."""

    model: str
    """Hugging Face id or local folder of the reader."""
    sae: str
    """Local file/folder or hub id (`org/repo[/subfolder]`) of the SAE."""
    layer: int | None = None
    """Block whose output is read (0-based); defaults to the layer the SAE's files name."""
    sae_format: str | None = None
    """Force the SAE format instead of detecting it."""
    revision: str | None = None
    sae_revision: str | None = None
    pooling: Pooling = "max"
    values_dtype: str = "float16"
    """float16 (default, half the bytes) or float32 for the stored values."""
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = 16384
    """Token budget of one forward batch (padded length x rows)."""
    max_batch_docs: int = 256
    max_tokens: int | None = None
    """Context of one forward window; longer documents are chunked or truncated (`long`)."""
    long: LongMode = "chunk"
    pool_roles: tuple[str, ...] | None = None
    """Chats: pool only over these roles' tokens while the whole conversation is read."""
    as_chat: str | None = None
    """Wrap plain text as one chat turn of this role (the paper wraps each document as assistant)."""
    input_format: str = "auto"
    """auto (by suffix; stdin is sniffed), jsonl, csv, parquet or txt."""
    text_field: str = "text"
    id_field: str = "id"
    skip_invalid: bool = False
    cache_dir: Path | None = None
    """Where vectors are cached by content; None means `default_cache_root()`."""
    use_cache: bool = True
    """False keeps the work folder beside the output (for resume) and deletes it on success."""
    window_docs: int = 2048
    """Documents per checkpoint: a killed run loses at most one window of work."""
    dense: bool = False
    """Also store each document's dense sentence embedding (all-MiniLM-L6-v2, column `dense`), for
    `search --dense` / `--hybrid`."""
    trust_remote_code: bool = False
