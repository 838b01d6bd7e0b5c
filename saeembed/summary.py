"""A short description of a store, for `saeembed info` and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from saeembed.errors import StoreError
from saeembed.store import read_meta, store_files


def summarize(path: str | Path, *, check: bool = True) -> dict[str, Any]:
    """Rows, tokens, reader, SAE, mean active latents per document and bytes per document.

    With `check` (the default) the store is read as every analysis reads it, so whatever an analysis
    would refuse (parts of two SAEs in one folder, latents out of range or out of order, values that are
    not finite, peaks outside the text) is refused here too; without, only the metadata and the latent
    counts are read (fast on stores of millions of documents) and `checked` says so."""
    from saeembed.store import load_store

    path = Path(path)
    meta = read_meta(path)
    files = store_files(path)
    if check:
        counts = np.diff(load_store(path).matrix.indptr)
        rows = len(counts)
    else:
        rows, active = 0, []
        for file in files:
            try:
                table = pq.read_table(file, columns=["indices"])
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError; a truncated part
                detail = " ".join(str(exc).split())[:160]
                raise StoreError(f"{file}: cannot read it as a store ({detail}); the file is damaged: embed the "
                                 f"corpus again") from None
            rows += table.num_rows
            active.append(np.diff(table.column("indices").combine_chunks().offsets.to_numpy()))
        counts = np.concatenate(active) if active else np.zeros(0)
    size = sum(f.stat().st_size for f in files)
    sae, model = meta["sae"], meta["model"]
    return {
        "path": str(path), "documents": rows, "tokens": meta.get("n_tokens"),
        "model": model["id"], "layer": model["layer"], "hook": model.get("hook"),
        "sae": sae["source"], "sae_format": sae["format"], "sae_architecture": sae["architecture"],
        "d_sae": sae["d_sae"], "pooling": meta["pooling"], "pool_roles": meta.get("pool_roles"),
        "mean_latents_per_doc": float(counts.mean()) if rows else 0.0,
        "median_latents_per_doc": float(np.median(counts)) if rows else 0.0,
        "bytes": size, "bytes_per_doc": size / max(rows, 1),
        "chunked_docs": meta.get("n_chunked"), "truncated_docs": meta.get("n_truncated"),
        "created": meta.get("created"), "saeembed": meta.get("versions", {}).get("saeembed"),
        "checked": check,
    }
