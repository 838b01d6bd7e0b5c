"""Content-addressed cache of document vectors; it is also what makes an interrupted embed resume.

Layout: `ROOT/<namespace>/part-*.parquet`, where the namespace hashes everything that changes the
vectors (model and its weights, layer, SAE weights, pooling, context, precision) and each row is
keyed by a hash of the document's exact input. Parts are written atomically, one per finished
window of documents, so a killed run loses at most the window in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saeembed.hashing import text_key
from saeembed.store import DocVectors, atomic_write_table

_STALE_TMP_SECONDS = 3600


def default_cache_root() -> Path:
    """`$SAEEMBED_CACHE`, else `$XDG_CACHE_HOME/saeembed`, else `~/.cache/saeembed`."""
    if os.environ.get("SAEEMBED_CACHE"):
        return Path(os.environ["SAEEMBED_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "saeembed"


class VectorCache:
    """Document vectors of one embedding configuration, keyed by document content."""

    def __init__(self, root: Path, config: dict[str, Any], values_dtype: str = "float16"):
        self.namespace = text_key(json.dumps(config, sort_keys=True))
        self.folder = Path(root) / self.namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.values_dtype = values_dtype
        config_file = self.folder / "config.json"
        if not config_file.exists():
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        self._drop_stale_tmp()
        self._index: dict[str, tuple[Path, int, int, int]] = {}  # key -> part, row, n_tokens, n_chunks
        for part in sorted(self.folder.glob("part-*.parquet")):
            self._add_to_index(part)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def put(self, keys: list[str], vectors: DocVectors, n_chunks: np.ndarray) -> None:
        """Store the vectors of `keys` (one row each) as a new part, atomically."""
        columns = {"key": pa.array(keys, pa.string()), **vectors.arrow_columns(self.values_dtype),
                   "n_chunks": pa.array(n_chunks.astype(np.int32))}
        part = self.folder / f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write_table(pa.table(columns), part)
        self._add_to_index(part)

    def get(self, keys: list[str]) -> tuple[DocVectors, np.ndarray]:
        """Vectors of `keys` in that order (all must be present), and each one's chunk count."""
        by_part: dict[Path, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            part, row, _, _ = self._index[key]
            by_part.setdefault(part, []).append((position, row))
        pieces = []
        for part, wanted in by_part.items():
            table = pq.read_table(part)
            positions, rows = zip(*wanted)
            piece = table.take(pa.array(rows)).append_column("_position", pa.array(positions, pa.int64()))
            pieces.append(piece)
        if not pieces:
            return DocVectors.empty(0), np.zeros(0, np.int32)
        table = pa.concat_tables(pieces).sort_by("_position")
        return DocVectors.from_arrow(table), table.column("n_chunks").to_numpy()

    def counts(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokens pooled and chunk count (-1: truncated) of each of `keys`, from the index alone."""
        entries = [self._index[key] for key in keys]
        return (np.array([e[2] for e in entries], dtype=np.int64),
                np.array([e[3] for e in entries], dtype=np.int64))

    def remove(self) -> None:
        """Delete this namespace's folder, and the root if nothing else is in it (`--no-cache`)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()

    def _add_to_index(self, part: Path) -> None:
        table = pq.read_table(part, columns=["key", "n_tokens", "n_chunks"])
        columns = (table.column(name).to_pylist() for name in ("key", "n_tokens", "n_chunks"))
        for row, (key, n_tokens, n_chunks) in enumerate(zip(*columns)):
            self._index[key] = (part, row, n_tokens, n_chunks)

    def _drop_stale_tmp(self) -> None:
        # A run killed mid-write leaves a temporary file; one older than an hour is nobody's.
        for tmp in self.folder.glob(".*.tmp"):
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                tmp.unlink(missing_ok=True)
