"""Latents against a metadata column: per value of a categorical column the latents enriched in its
documents (NPMI + one-sided hypergeometric test), or for a numeric column the latents whose
activation rank-correlates with it (Spearman). Benjamini-Hochberg over everything tested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from saeembed.analysis import stats
from saeembed.analysis.config import CorrelationConfig
from saeembed.analysis.correlations import npmi
from saeembed.errors import SaeEmbedError
from saeembed.store import Store

MAX_VALUES = 200
Kind = Literal["auto", "categorical", "numeric"]


@dataclass
class AssociationResult:
    table: Any
    """categorical: value, latent, label, npmi, support, freq_in_value, freq_elsewhere, p, q (per value,
    strongest NPMI first); numeric: latent, label, rho, freq, p, q (strongest |rho| first). Findings only."""
    column: str
    kind: str
    n_docs: int
    n_tested: int


def associations(store: Store, column: str, config: CorrelationConfig | None = None, *, kind: Kind = "auto",
                 labels: Any = None) -> AssociationResult:
    """The latents associated with `column` of the store's documents (rows where it is null are left out).

    Examples:
        >>> associations(load_store("tweets.parquet"), "topic").table  # doctest: +SKIP
    """
    import polars as pl

    from saeembed.labels import labels_for

    config = config or CorrelationConfig()
    if column not in store.frame.columns:
        fields = ", ".join(c for c in store.frame.columns if c not in ("text", "n_tokens"))
        raise SaeEmbedError(f"{store.path}: no column {column!r}; its fields are: {fields}")
    values = store.frame[column]
    rows = np.flatnonzero(values.is_not_null().to_numpy())
    values = values.gather(rows)
    if kind == "auto":
        kind = "numeric" if values.dtype.is_numeric() and values.n_unique() > 10 else "categorical"
    labels = labels if labels is not None else labels_for(store)
    matrix = store.matrix[rows]
    counts = np.bincount(matrix.indices[matrix.data > 0], minlength=matrix.shape[1])
    freq = counts / max(len(rows), 1)
    band = np.flatnonzero((freq >= config.min_freq) & (freq <= config.max_freq) & (counts >= config.min_support))
    if kind == "numeric":
        table, n_tested = _numeric(matrix[:, band].tocsc(), values.cast(pl.Float64).to_numpy(), band, freq)
    else:
        table, n_tested = _categorical(matrix[:, band].tocsc(), values.cast(pl.Utf8), band, counts, config)
    table = table.with_columns(label=pl.Series([labels.get(int(i)) for i in table["latent"]], dtype=pl.Utf8))
    table = table.filter(pl.col("q") <= config.alpha)
    first = ["value"] if kind == "categorical" else []
    ordered = first + ["latent", "label"] + [c for c in table.columns if c not in (*first, "latent", "label")]
    return AssociationResult(table.select(ordered), column, kind, len(rows), n_tested)


def _categorical(x: Any, values: Any, band: np.ndarray, counts: np.ndarray,
                 config: CorrelationConfig) -> tuple[Any, int]:
    import polars as pl

    names = values.unique().sort().to_list()
    if len(names) > MAX_VALUES:
        raise SaeEmbedError(f"column {values.name!r} has {len(names)} distinct values; associations need a "
                            f"categorical column (at most {MAX_VALUES} values) or a numeric one")
    index = {name: n for n, name in enumerate(names)}
    codes = np.array([index[v] for v in values.to_list()])
    n_docs = len(codes)
    binary = x.copy()
    binary.data = (binary.data > 0).astype(np.float32)
    # latents x values counts of documents with both: a small dense matrix (values are few)
    both = np.zeros((x.shape[1], len(names)), np.int64)
    for v in range(len(names)):
        both[:, v] = np.asarray(binary[codes == v].sum(axis=0)).ravel()
    per_value = np.bincount(codes, minlength=len(names))
    latent_n, value_n = np.meshgrid(counts[band], per_value, indexing="ij")
    tested = both >= config.min_support
    li, vi = np.nonzero(tested)
    n = both[li, vi]
    p = stats.hypergeom_sf(n, n_docs, latent_n[li, vi], value_n[li, vi])
    table = pl.DataFrame({
        "value": pl.Series([names[v] for v in vi], dtype=pl.Utf8), "latent": band[li].astype(np.int32),
        "npmi": npmi(n, latent_n[li, vi], value_n[li, vi], n_docs), "support": n,
        "freq_in_value": n / value_n[li, vi],
        "freq_elsewhere": (latent_n[li, vi] - n) / np.maximum(n_docs - value_n[li, vi], 1),
        "p": p, "q": stats.benjamini_hochberg(p)})
    return table.sort(["value", "npmi"], descending=[False, True]), len(n)


def _numeric(x: Any, y: np.ndarray, band: np.ndarray, freq: np.ndarray) -> tuple[Any, int]:
    """Spearman's rho of each latent's activation (zeros included, tied) with y, from sparse ranks."""
    import polars as pl
    from scipy import stats as sstats

    n = len(y)
    ry = sstats.rankdata(y)
    mid = (n + 1) / 2
    rho = np.zeros(x.shape[1])
    for col in range(x.shape[1]):
        start, stop = x.indptr[col], x.indptr[col + 1]
        rows, values = x.indices[start:stop], x.data[start:stop]
        n_zero = n - len(rows)
        zero_rank = (n_zero + 1) / 2
        delta = sstats.rankdata(values) + n_zero - zero_rank  # each active document's rank above the zeros
        cov = float(np.sum(delta * (ry[rows] - mid)))
        ranks_sq = n_zero * zero_rank**2 + float(np.sum((zero_rank + delta) ** 2))
        var_x = ranks_sq - n * mid**2
        var_y = float(np.sum((ry - mid) ** 2))
        rho[col] = cov / np.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0
    rho = np.clip(rho, -1, 1)
    t = rho * np.sqrt(max(n - 2, 1) / np.maximum(1 - rho**2, 1e-12))
    p = 2 * sstats.t.sf(np.abs(t), max(n - 2, 1))
    table = pl.DataFrame({"latent": band.astype(np.int32), "rho": rho, "freq": freq[band], "p": p,
                          "q": stats.benjamini_hochberg(p)})
    return table.with_columns(_abs=pl.col("rho").abs()).sort("_abs", descending=True).drop("_abs"), len(band)
