"""Latents against a metadata column: per value of a categorical column the latents enriched in its
documents (NPMI + a one-sided test), or for a numeric column the latents whose activation
rank-correlates with it (Spearman). Benjamini-Hochberg over everything tested.

The categorical test conditions on document length, as in `correlations`: a value whose documents
are longer would otherwise look enriched in every latent that long documents fire. Enrichment is
tested within bands of n_tokens (Cochran-Mantel-Haenszel over the bands; the exact hypergeometric
test when there is one band). The numeric test does not adjust for length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from saeembed.analysis import stats
from saeembed.analysis.config import CorrelationConfig
from saeembed.analysis.correlations import npmi
from saeembed.analysis.lengths import band_counts, length_bands
from saeembed.analysis.summaries import Summary, count
from saeembed.errors import SaeEmbedError
from saeembed.store import Store, document_frequency, present

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels

MAX_VALUES = 200
Kind = Literal["auto", "categorical", "numeric"]


@dataclass
class AssociationResult:
    table: pl.DataFrame
    """categorical: value, latent, label, npmi, support, expected, freq_in_value, freq_elsewhere, p, q
    (per value, strongest NPMI first; `expected` is the length-adjusted null's count of the value's
    documents with the latent); numeric: latent, label, rho, freq, p, q (strongest |rho| first).
    Findings only."""
    column: str
    kind: str
    n_docs: int
    n_tested: int
    length_bands: int = 1
    """Length bands of the categorical test (1: length-blind; numeric columns are not stratified)."""
    n_length_explained: int = 0
    """Categorical: (value, latent) pairs significant under the length-blind hypergeometric test but not
    within length bands: enriched only because the value's documents are longer or shorter."""

    def summary(self) -> AssociationSummary:
        """The record every renderer reads (`AssociationSummary`)."""
        return AssociationSummary(self.column, self.kind, self.n_docs, self.n_tested, len(self.table),
                                  self.length_bands, self.n_length_explained)


@dataclass(frozen=True)
class AssociationSummary(Summary):
    """What `associations` found, as one record (`saeembed.analysis.summaries`)."""

    column: str
    kind: str
    n_docs: int
    n_tested: int
    n_found: int
    length_bands: int
    n_length_explained: int

    def lines(self) -> list[str]:
        lines = [f"{self.n_docs:,} documents with {self.column} ({self.kind} column); {self.n_tested:,} tests; "
                 f"{count(self.n_found, 'significant association')}"]
        if self.kind == "categorical" and self.length_bands > 1:
            lines.append(f"tested within {self.length_bands} length bands: {self.n_length_explained:,} (value, "
                         f"latent) enrichments come only from the value's documents being longer or shorter; "
                         f"not reported")
        return lines


def associations(store: Store, column: str, config: CorrelationConfig | None = None, *, kind: Kind = "auto",
                 labels: Labels | None = None) -> AssociationResult:
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
    if len(np.unique(values.gather(rows).cast(pl.Utf8).to_numpy())) < 2:
        raise SaeEmbedError(f"{store.path}: the column {column!r} "
                            + ("is null in every row" if not len(rows) else "has one value in every row")
                            + ": there is nothing to associate the latents with; choose another column")
    values = values.gather(rows)
    if kind == "auto":
        kind = "numeric" if values.dtype.is_numeric() and values.n_unique() > 10 else "categorical"
    labels = labels if labels is not None else labels_for(store)
    matrix = store.matrix[rows]
    counts = document_frequency(matrix)
    freq = counts / max(len(rows), 1)
    band = np.flatnonzero((freq >= config.min_freq) & (freq <= config.max_freq) & (counts >= config.min_support))
    n_bands, n_length_explained = 1, 0
    if kind == "numeric":
        table, n_tested = _numeric(matrix[:, band].tocsc(), values.cast(pl.Float64).to_numpy(), band, freq)
    else:
        bands = length_bands(store.frame["n_tokens"].to_numpy()[rows], config.length_bands)
        table, n_tested = _categorical(matrix[:, band].tocsc(), values.cast(pl.Utf8), band, bands, config)
        n_bands = int(bands.max(initial=0)) + 1
        n_length_explained = int(((table["q_plain"] <= config.alpha) & (table["q"] > config.alpha)).sum())
        table = table.drop("q_plain")
    table = table.with_columns(label=pl.Series([labels.get(int(i)) for i in table["latent"]], dtype=pl.Utf8))
    table = table.filter(pl.col("q") <= config.alpha)
    first = ["value"] if kind == "categorical" else []
    ordered = first + ["latent", "label"] + [c for c in table.columns if c not in (*first, "latent", "label")]
    return AssociationResult(table.select(ordered), column, kind, len(rows), n_tested, n_bands, n_length_explained)


def _categorical(x: Any, values: Any, band: np.ndarray, bands: np.ndarray,
                 config: CorrelationConfig) -> tuple[Any, int]:
    """Every (value, latent) with enough support, tested within length bands; q_plain is the
    length-blind test's q, for counting what length alone explained."""
    import polars as pl

    names = values.unique().sort().to_list()
    if len(names) > MAX_VALUES:
        raise SaeEmbedError(f"column {values.name!r} has {len(names)} distinct values; associations need a "
                            f"categorical column (at most {MAX_VALUES} values) or a numeric one")
    index = {name: n for n, name in enumerate(names)}
    codes = np.array([index[v] for v in values.to_list()])
    n_docs = len(codes)
    binary = present(x)
    # latents x values counts of documents with both: a small dense matrix (values are few)
    both = np.zeros((x.shape[1], len(names)), np.int64)
    for v in range(len(names)):
        both[:, v] = np.asarray(binary[codes == v].sum(axis=0)).ravel()
    n_bands = int(bands.max(initial=0)) + 1
    latent_b = band_counts(binary, bands, n_bands)  # [bands, latents]
    value_b = np.zeros((n_bands, len(names)), np.int64)  # [bands, values]
    np.add.at(value_b, (bands, codes), 1)
    latent_n, value_n = np.meshgrid(latent_b.sum(axis=0), value_b.sum(axis=0), indexing="ij")
    tested = both >= config.min_support
    li, vi = np.nonzero(tested)
    n = both[li, vi]
    p_plain = stats.hypergeom_sf(n, n_docs, latent_n[li, vi], value_n[li, vi])
    if n_bands == 1:
        expected, p = latent_n[li, vi] * value_n[li, vi] / max(n_docs, 1), p_plain
    else:  # [bands, tests] margins: tests are at most latents x values, values are few
        expected, variance, third = stats.cmh_moments(latent_b[:, li], value_b[:, vi], np.bincount(bands))
        p = stats.cmh_upper(n, expected, variance, third)
    table = pl.DataFrame({
        "value": pl.Series([names[v] for v in vi], dtype=pl.Utf8), "latent": band[li].astype(np.int32),
        "npmi": npmi(n, latent_n[li, vi], value_n[li, vi], n_docs), "support": n, "expected": expected,
        "freq_in_value": n / value_n[li, vi],
        "freq_elsewhere": (latent_n[li, vi] - n) / np.maximum(n_docs - value_n[li, vi], 1),
        "p": p, "q": stats.benjamini_hochberg(p), "q_plain": stats.benjamini_hochberg(p_plain)})
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
