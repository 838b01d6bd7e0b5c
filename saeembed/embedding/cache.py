"""Content-addressed cache of document vectors; it is also what makes an interrupted embed resume.

Layout: `ROOT/<namespace>/part-*.parquet`, where the namespace hashes everything that changes the
vectors (model and its weights, layer, SAE weights, pooling, context, precision) and each row is
keyed by a hash of the document's exact input. Parts are written atomically, one per finished
window of documents and, within a long window, one at least every `COMMIT_SECONDS` of work (in
`saeembed.embedding.pipeline`), so a killed run loses at most that much work.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saeembed.atomic import atomic_write, sweep_folder, write_text
from saeembed.cache_root import default_cache_root  # noqa: F401 - re-exported: where it was defined before
from saeembed.hashing import text_key
from saeembed.store import DocVectors


class VectorCache:
    """Document vectors of one embedding configuration, keyed by document content."""

    def __init__(self, root: Path, config: dict[str, Any], values_dtype: str = "float16"):
        self.namespace = text_key(json.dumps(config, sort_keys=True))
        self.folder = Path(root) / self.namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.values_dtype = values_dtype
        config_file = self.folder / "config.json"
        if not config_file.exists():
            write_text(config_file, json.dumps(config, indent=2, sort_keys=True))
        sweep_folder(self.folder)  # temporary parts of killed runs (a running one's are kept)
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
        part = self.folder / f"part-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}.parquet"
        table = pa.table(columns)
        atomic_write(part, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=65536))
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
