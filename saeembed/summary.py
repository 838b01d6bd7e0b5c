"""A short description of a store, for `saeembed info` and notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from saeembed.errors import StoreError
from saeembed.store import read_meta, store_files


def summarize(path: str | Path, *, check: bool = True) -> dict[str, Any]:
    """Rows, tokens, reader, SAE, mean active latents per document and bytes per document, read part by
    part (memory grows with the largest part and the SAE's width, not with the documents).

    With `check` (the default) every part is read as every analysis reads it, so whatever an analysis
    would refuse (parts of two SAEs in one folder, latents out of range or out of order, values that are
    not finite, peaks outside the text, fields that differ between parts) is refused here too; without,
    only the metadata and the latent counts are read (fast on stores of millions of documents) and
    `checked` says so."""
    from saeembed.store import check_fields, read_parts

    path = Path(path)
    meta = read_meta(path)
    files = store_files(path)
    per_doc = np.zeros(1, np.int64)  # documents by their number of active latents (grows with the largest)
    if check:
        for part in read_parts(path):
            check_fields(part)
            per_doc = _counted(per_doc, np.diff(part.vectors.offsets))
            del part  # before the next part is read
    else:
        for file in files:
            try:
                table = pq.read_table(file, columns=["indices"])
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError; a truncated part
                detail = " ".join(str(exc).split())[:160]
                raise StoreError(f"{file}: cannot read it as a store ({detail}); the file is damaged: embed the "
                                 f"corpus again") from None
            counts = np.diff(table.column("indices").combine_chunks().offsets.to_numpy())
            per_doc = _counted(per_doc, counts)
    rows = int(per_doc.sum())
    active = np.arange(len(per_doc))
    size = sum(f.stat().st_size for f in files)
    sae, model = meta["sae"], meta["model"]
    return {
        "path": str(path), "documents": rows, "tokens": meta.get("n_tokens"),
        "model": model["id"], "layer": model["layer"], "hook": model.get("hook"),
        "sae": sae["source"], "sae_format": sae["format"], "sae_architecture": sae["architecture"],
        "d_sae": sae["d_sae"], "pooling": meta["pooling"], "pool_roles": meta.get("pool_roles"),
        "mean_latents_per_doc": float(active @ per_doc / rows) if rows else 0.0,
        "median_latents_per_doc": _median(per_doc) if rows else 0.0,
        "bytes": size, "bytes_per_doc": size / max(rows, 1),
        "chunked_docs": meta.get("n_chunked"), "truncated_docs": meta.get("n_truncated"),
        "created": meta.get("created"), "saeembed": meta.get("versions", {}).get("saeembed"),
        "checked": check,
    }


def _counted(histogram: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`histogram` with `counts` added, grown to the largest count seen."""
    added = np.bincount(counts.astype(np.int64), minlength=len(histogram))
    if len(added) > len(histogram):
        histogram = np.pad(histogram, (0, len(added) - len(histogram)))
    histogram[: len(added)] += added
    return histogram


def _median(histogram: np.ndarray) -> float:
    """numpy's median of the values whose counts `histogram` holds (value i, histogram[i] times)."""
    cumulative = np.cumsum(histogram)
    n = int(cumulative[-1])
    low = int(np.searchsorted(cumulative, (n - 1) // 2, side="right"))
    high = int(np.searchsorted(cumulative, n // 2, side="right"))
    return (low + high) / 2
