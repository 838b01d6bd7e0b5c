"""Writing analysis tables to disk: the format follows the suffix, the file appears atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from saeembed.atomic import atomic_write
from saeembed.errors import SaeEmbedError
from saeembed.outputs import check_output

if TYPE_CHECKING:
    import polars as pl

FORMATS = (".csv", ".parquet", ".json", ".jsonl")


def check_table_output(path: str | Path) -> Path:
    """Refuse, before any work, a table output `write_frame` could not write (suffix, folder, permissions,
    space): commands call it first, so a long analysis does not fail at its last step."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SaeEmbedError(f"cannot write {path}: give a file ending in {', '.join(FORMATS)}")
    return check_output(path)


def write_frame(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a polars DataFrame as CSV, Parquet, JSON (an array of rows) or JSON lines, by suffix."""
    path = check_table_output(path)
    suffix = path.suffix.lower()

    def write(tmp: Path) -> None:
        if suffix == ".csv":  # CSV has no nesting: lists of text are joined, anything deeper is JSON text
            import json

            import polars as pl

            flat = []
            for name, dtype in frame.schema.items():
                if isinstance(dtype, (pl.List, pl.Array)) and not dtype.inner.is_nested():
                    # a null item stays in its place (empty), so parallel lists (latents, labels) stay aligned
                    flat.append(pl.col(name).cast(pl.List(pl.Utf8)).list.eval(pl.element().fill_null(""))
                                .list.join(" | "))
                elif dtype.is_nested():
                    flat.append(pl.col(name).map_elements(lambda v: json.dumps(_plain(v), default=str),
                                                          return_dtype=pl.Utf8))
            frame.with_columns(flat).write_csv(tmp)
        elif suffix == ".parquet":
            frame.write_parquet(tmp)
        elif suffix == ".json":
            frame.write_json(tmp)
        else:
            frame.write_ndjson(tmp)

    return atomic_write(path, write)


def _plain(value: Any) -> Any:
    """A polars nested value (Series, dict, list) as plain Python for json.dumps."""
    if hasattr(value, "to_list"):
        return value.to_list()
    return value
