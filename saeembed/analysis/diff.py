"""Dataset diff: the latents whose document frequency (or mean activation) differs between corpora,
with confidence intervals, exact tests and false-discovery-rate control over every latent tested.

The paper ranks latents by the raw frequency difference; with thousands of latents and a few
thousand documents noise alone produces differences of several points, so a latent is a finding
here only when its Benjamini-Hochberg q-value and its difference both pass (defaults q <= 0.05,
|difference| >= 0.03). `holdout` discovers on one part of the documents and checks on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Sequence

import numpy as np

from saeembed.analysis import stats
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.evidence import diff_examples
from saeembed.analysis.rows import align_pairs
from saeembed.errors import SaeEmbedError
from saeembed.store import Store, check_compatible


@dataclass
class DiffResult:
    """The comparison of corpus A with B (or with the others, `vs` mode)."""

    table: Any
    """polars DataFrame, one row per tested latent: findings first (by |diff|), then by q."""
    names: tuple[str, ...]
    """A, then B (or each of the others)."""
    sizes: tuple[int, ...]
    """Documents (pairs, when paired) compared per corpus."""
    config: DiffConfig
    n_tested: int
    n_unpaired: int = 0
    """Rows dropped because their pair key is missing from another corpus."""
    replication_rate: float | None = None
    """Share of the findings that replicate on the held-out documents (None without `holdout`)."""
    discovery_sizes: tuple[int, ...] = field(default_factory=tuple)
    mean_tokens: tuple[float, ...] = field(default_factory=tuple)
    """Mean tokens pooled per document: with max pooling a longer document fires more latents, so a
    length gap between corpora shows up as many 'more in the longer corpus' findings."""

    @property
    def findings(self) -> Any:
        """The significant rows."""
        return self.table.filter(self.table["significant"])


def diff(a: Store, b: Store | Sequence[Store], config: DiffConfig | None = None, *,
         names: Sequence[str] | None = None, labels: Any = None) -> DiffResult:
    """Compare corpus `a` with `b`, or with several corpora (then `a` against the nearest of them per
    latent: a finding must differ from every other corpus in the same direction).

    Args:
        a, b: stores (see `saeembed.sources.open_store` to embed corpus files on the fly).
        config: measure, thresholds, pairing and holdout.
        names: display names of the corpora, default their file stems.
        labels: a `saeembed.labels.Labels`; default the labels found for a's SAE.

    Examples:
        >>> result = diff(load_store("concise.parquet"), load_store("verbose.parquet"),
        ...               DiffConfig(pair_on="prompt_id", holdout=0.5))  # doctest: +SKIP
        >>> result.findings.select("latent", "label", "diff", "q")  # doctest: +SKIP
    """
    import polars as pl

    from saeembed.labels import labels_for

    config = config or DiffConfig()
    others = [b] if isinstance(b, Store) else list(b)
    if not others:
        raise SaeEmbedError("give at least one corpus to compare with")
    stores = [a, *others]
    names = tuple(names or [s.path.stem for s in stores])
    check_compatible(zip(names, (s.meta for s in stores)))
    rows, n_unpaired = _rows(stores, config.pair_on)
    rng = np.random.default_rng(config.seed)
    discovery, validation = _split(rows, config.holdout, paired=config.pair_on is not None, rng=rng)

    found = _compare([_side(s, r) for s, r in zip(stores, discovery)], config)
    tested = found.pop("tested")
    table = pl.DataFrame({k: v[tested] for k, v in found.items()}).with_columns(
        pl.Series("latent", np.flatnonzero(tested).astype(np.int32)))
    table = table.with_columns(q=pl.Series(stats.benjamini_hochberg(table["p"].to_numpy())))
    table = table.with_columns(significant=(pl.col("q") <= config.alpha) & (pl.col("diff").abs() >= config.min_diff))
    replication = None
    if validation is not None:
        table, replication = _replicate(table, [_side(s, r) for s, r in zip(stores, validation)], config)
    if config.examples:
        table = diff_examples(table, stores, rows, config.pair_on is not None, rng)
    labels = labels if labels is not None else labels_for(a)
    table = table.with_columns(label=pl.Series([labels.get(i) for i in table["latent"]], dtype=pl.Utf8),
                               vs=pl.Series([names[1 + j] for j in table["vs"]], dtype=pl.Utf8))
    table = _order(table)
    return DiffResult(table, names, tuple(len(r) for r in rows), config, n_tested=int(tested.sum()),
                      n_unpaired=n_unpaired, replication_rate=replication,
                      discovery_sizes=tuple(len(r) for r in discovery),
                      mean_tokens=tuple(float(s.frame["n_tokens"].to_numpy()[r].mean()) if len(r) else 0.0
                                        for s, r in zip(stores, rows)))


def _rows(stores: list[Store], pair_on: str | None) -> tuple[list[np.ndarray], int]:
    """The rows of each store to compare: all of them, or the pairs aligned on `pair_on`."""
    if pair_on is None:
        return [np.arange(s.n_docs) for s in stores], 0
    rows = align_pairs(stores, pair_on)
    return rows, sum(s.n_docs - len(r) for s, r in zip(stores, rows))


class _Side(NamedTuple):
    """The documents of one corpus taking part in a comparison."""

    matrix: Any  # CSR, documents x latents
    n_tokens: np.ndarray


def _side(store: Store, rows: np.ndarray) -> _Side:
    """The store restricted to `rows` (no matrix copy when that is every row in order)."""
    tokens = store.frame["n_tokens"].to_numpy()
    if len(rows) == store.n_docs and (rows == np.arange(store.n_docs)).all():
        return _Side(store.matrix, tokens)
    return _Side(store.matrix[rows], tokens[rows])


def _split(rows: list[np.ndarray], holdout: float | None, *, paired: bool,
           rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Discovery and validation rows; pairs stay together (one permutation shared by every corpus)."""
    if holdout is None:
        return rows, None
    shared = rng.permutation(len(rows[0])) if paired else None
    discovery, validation = [], []
    for r in rows:
        order = shared if shared is not None else rng.permutation(len(r))
        cut = len(order) - int(round(holdout * len(order)))
        discovery.append(r[np.sort(order[:cut])])
        validation.append(r[np.sort(order[cut:])])
    return discovery, validation


def _compare(sides: list[_Side], config: DiffConfig) -> dict[str, np.ndarray]:
    """Per latent: the first corpus against the nearest of the others, and the intersection-union p
    (the largest p over the others, 1 when the directions disagree)."""
    target, others = sides[0], sides[1:]
    per_other = [_pairwise(target, other, config) for other in others]
    diffs = np.stack([c["diff"] for c in per_other])
    nearest = np.argmin(np.abs(diffs), axis=0)
    take = np.arange(diffs.shape[1])
    out = {k: np.stack([c[k] for c in per_other])[nearest, take] for k in per_other[0]}
    same_sign = (np.all(diffs > 0, axis=0) | np.all(diffs < 0, axis=0))
    p_all = np.stack([c["p"] for c in per_other]).max(axis=0)
    out["p"] = np.where(same_sign | (len(others) == 1), p_all, 1.0)
    out["vs"] = nearest.astype(np.int32)
    counts = sum(_presence_counts(side.matrix) for side in sides)
    out["tested"] = counts > 0  # a latent that never fires cannot differ; it is not a test
    return out


def _pairwise(side_a: _Side, side_b: _Side, config: DiffConfig) -> dict[str, np.ndarray]:
    a, b = side_a.matrix, side_b.matrix
    paired, measure = config.pair_on is not None, config.measure
    na, nb = a.shape[0], b.shape[0]
    ka, kb = _presence_counts(a), _presence_counts(b)
    out = {"n_a": np.full(len(ka), na), "n_b": np.full(len(ka), nb), "count_a": ka, "count_b": kb,
           "freq_a": ka / max(na, 1), "freq_b": kb / max(nb, 1)}
    if measure == "mean":
        mean_a, var_a = _mean_var(a)
        mean_b, var_b = _mean_var(b)
        if paired:
            mean_d, var_d = _mean_var(a - b)
            low, high, p = stats.paired_t(mean_d, var_d, na)
        else:
            low, high, p = stats.welch(mean_a, var_a, na, mean_b, var_b, nb)
        out.update(mean_a=mean_a, mean_b=mean_b, diff=mean_a - mean_b, ci_low=low, ci_high=high, p=p,
                   test=np.full(len(ka), "paired t" if paired else "welch"))
    elif config.length_bands:
        low, high, p, diff = _length_adjusted(side_a, side_b, config.length_bands)
        out.update(diff=diff, ci_low=low, ci_high=high, p=p, test=np.full(len(ka), "cmh"))
    elif paired:
        both = _presence_counts(_binary(a).multiply(_binary(b)).tocsr())
        low, high = stats.newcombe_paired(both, ka - both, kb - both, na)
        out.update(diff=out["freq_a"] - out["freq_b"], ci_low=low, ci_high=high,
                   p=stats.mcnemar_p(ka - both, kb - both), test=np.full(len(ka), "mcnemar"))
    else:
        low, high = stats.newcombe_unpaired(ka, na, kb, nb)
        p, exact = stats.two_proportion_p(ka, na, kb, nb)
        out.update(diff=out["freq_a"] - out["freq_b"], ci_low=low, ci_high=high, p=p,
                   test=np.where(exact, "fisher", "z"))
    top = np.maximum(np.abs(out.get("mean_a", out["freq_a"])), np.abs(out.get("mean_b", out["freq_b"])))
    out["rel_diff"] = np.divide(out["diff"], top, out=np.zeros(len(ka)), where=top > 0)
    return out


def _length_adjusted(a: _Side, b: _Side, bands: int) -> tuple[np.ndarray, ...]:
    """Frequency difference within bands of similar length (quantiles of n_tokens over both corpora):
    Mantel-Haenszel risk difference, its Wald interval and the Cochran-Mantel-Haenszel test."""
    edges = np.unique(np.quantile(np.concatenate([a.n_tokens, b.n_tokens]), np.linspace(0, 1, bands + 1)[1:-1]))

    def per_band(side: _Side) -> tuple[np.ndarray, np.ndarray]:
        """[bands, latents] documents with the latent, [bands, 1] documents."""
        band = np.searchsorted(edges, side.n_tokens, side="right")
        rows = [np.flatnonzero(band == k) for k in range(len(edges) + 1)]
        return np.stack([_presence_counts(side.matrix[r]) for r in rows]), np.array([[len(r)] for r in rows])

    return stats.mantel_haenszel(*per_band(a), *per_band(b))


def _replicate(table: Any, sides: list[_Side], config: DiffConfig) -> tuple[Any, float | None]:
    """Test the findings again on held-out documents: a finding replicates when its difference has
    the same sign there and survives BH over the findings at the same alpha."""
    import polars as pl

    held = _compare(sides, replace(config, holdout=None))
    latents = table["latent"].to_numpy()
    diff_holdout, p_holdout = held["diff"][latents], held["p"][latents]
    found = table["significant"].to_numpy()
    q_holdout = np.full(len(latents), np.nan)
    q_holdout[found] = stats.benjamini_hochberg(p_holdout[found])
    replicated = found & (np.sign(diff_holdout) == np.sign(table["diff"].to_numpy())) & (q_holdout <= config.alpha)
    table = table.with_columns(diff_holdout=pl.Series(diff_holdout), p_holdout=pl.Series(p_holdout),
                               q_holdout=pl.Series(q_holdout).fill_nan(None),  # only findings are re-tested
                               replicated=pl.Series(replicated))
    return table, (float(replicated[found].mean()) if found.any() else None)


def _order(table: Any) -> Any:
    import polars as pl

    first = ["latent", "label", "freq_a", "freq_b", "diff", "rel_diff", "ci_low", "ci_high", "p", "q",
             "significant"]
    table = table.with_columns(_abs=pl.col("diff").abs()).sort(
        ["significant", "_abs", "q"], descending=[True, True, False]).drop("_abs")
    return table.select(first + [c for c in table.columns if c not in first])


def _binary(matrix: Any) -> Any:
    out = matrix.copy()
    out.data = (out.data > 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def _presence_counts(matrix: Any) -> np.ndarray:
    """Documents in which each latent fires."""
    return np.bincount(matrix.indices[matrix.data > 0], minlength=matrix.shape[1]).astype(np.int64)


def _mean_var(matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    n = matrix.shape[0]
    total = np.asarray(matrix.sum(axis=0), float).ravel()
    squares = np.asarray(matrix.multiply(matrix).sum(axis=0), float).ravel()
    mean = total / max(n, 1)
    var = np.maximum(squares - n * mean**2, 0) / max(n - 1, 1)
    return mean, var
