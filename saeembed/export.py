"""Writing analysis tables to disk: the format follows the suffix, the file appears atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from saeembed.errors import SaeEmbedError

FORMATS = (".csv", ".parquet", ".json", ".jsonl")


def write_frame(frame: Any, path: str | Path) -> Path:
    """Write a polars DataFrame as CSV, Parquet, JSON (an array of rows) or JSON lines, by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SaeEmbedError(f"cannot write {path}: give a file ending in {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if suffix == ".csv":  # CSV has no lists: join them
            import polars as pl

            lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, (pl.List, pl.Array))]
            frame.with_columns(pl.col(name).cast(pl.List(pl.Utf8)).list.join(" | ") for name in lists).write_csv(tmp)
        elif suffix == ".parquet":
            frame.write_parquet(tmp)
        elif suffix == ".json":
            frame.write_json(tmp)
        else:
            frame.write_ndjson(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
