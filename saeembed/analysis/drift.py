"""`drift`: which concepts rise and fall along an ordered field of one corpus (a date, a version, a step).

For every latent, a trend test of its presence against the documents' order, within bands of documents of
similar length (with max pooling a longer document fires more latents, so a corpus whose documents grow
longer over time would otherwise show every latent rising): Mantel's extension of the Cochran-Mantel-Haenszel
test to ordered scores (Mantel 1963), the same family as `correlations`' test, with the documents' ranks as
scores. Benjamini-Hochberg over the tested latents. What a person reads is the share of documents holding the
concept in the first and the last period (Wilson intervals), the periods being quantiles of the field; a
finding must be significant, change by at least `min_change` between them, and change the way the test says.

    result = drift(store, "date")
    result.findings            # polars: latent, label, direction, first, last, change, q, frequencies, example
    result.summary().as_dict() # what the terminal, --json and the page read
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from saeembed.analysis.config import LengthMode
from saeembed.analysis.summaries import Summary
from saeembed.errors import SaeEmbedError
from saeembed.settings import check_fields, setting

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels
    from saeembed.store import Store


@dataclass
class DriftConfig:
    """How concepts are followed along an ordered field. CLI defaults come from here."""

    periods: int = setting(5, at_least=2, flag="--periods")
    """Periods the field is cut into for reading (quantiles of its values; equal values share a period).
    The test uses every document's rank, not the periods."""
    alpha: float = setting(0.05, above=0, below=1, flag="--alpha")
    """Largest Benjamini-Hochberg q-value of a finding."""
    min_change: float = setting(0.03, at_least=0, flag="--min-change")
    """Smallest |change| of a finding: share of documents holding the concept in the last period minus in
    the first, among documents of similar length (with length adjust)."""
    length: LengthMode = setting("adjust", flag="--length")
    """adjust: test each latent's trend within bands of documents of similar length, so documents growing
    longer along the field is not read as every concept rising; ignore: test the documents as they are."""
    length_bands: int = setting(20, at_least=2, flag="--length-bands")
    """With length adjust: bands (quantiles of n_tokens)."""
    min_docs: int = setting(10, at_least=1, flag="--min-docs")
    """Latents present in fewer documents (or absent from fewer) are not tested: a trend test on a handful
    of documents says nothing."""
    examples: bool = setting(True)
    """Attach to each finding the document where it is strongest in the period it is most frequent in."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DriftSummary(Summary):
    """What a drift found, as one record (`saeembed.analysis.summaries`)."""

    by: str
    n_docs: int
    n_left_out: int
    """Documents without a value in the field (not tested)."""
    periods: list[str]
    """Each period's range of the field, first to last."""
    n_tested: int
    n_findings: int
    n_rising: int
    n_falling: int
    length_rho: float | None
    """Spearman correlation of documents' length with the field (None: no spread)."""
    method: str
    alpha: float
    min_change: float
    notes: list[str]

    def lines(self) -> list[str]:
        return [f"{self.n_docs:,} documents ordered by {self.by!r} in {len(self.periods)} periods: "
                f"{' | '.join(self.periods)}",
                f"{self.n_tested:,} latents tested ({self.method}); {self.n_findings:,} change (q <= {self.alpha:g}, "
                f"change >= {self.min_change:.0%}): {self.n_rising:,} rise, {self.n_falling:,} fall"]


@dataclass
class DriftResult:
    """Every tested latent along the field of one store, findings first."""

    by: str
    config: DriftConfig
    table: pl.DataFrame
    """One row per tested latent: latent, label, label_score, direction (rises / falls), r (the trend's
    correlation within length bands), z, p, q, first, last (shares of documents holding it in the first and
    last period) with their 95% intervals, change (last minus first among documents of similar length: what
    `min_change` gates), frequencies (the share in each period), n_docs, finding, and for
    findings an example: example_id, example_period, example_text, example_start, example_end (the peak
    token's character span in the text)."""
    periods: pl.DataFrame
    """One row per period: period, from, to (the field's range), n_docs, mean_tokens."""
    n_docs: int
    n_left_out: int
    n_tested: int
    length_rho: float | None
    notes: list[str] = field(default_factory=list)
    length_bands: int = 1
    """Length bands the test and the shares were taken within (1: lengths not adjusted)."""

    @property
    def findings(self) -> pl.DataFrame:
        return self.table.filter(self.table["finding"])

    def summary(self) -> DriftSummary:
        findings = self.findings
        if self.config.length == "ignore":
            method = "presence against rank (Mantel's trend test), lengths ignored"
        elif self.length_bands > 1:
            method = (f"presence against rank within {self.length_bands} length bands (Mantel's trend test); change "
                      f"at equal length")
        else:
            method = "presence against rank (Mantel's trend test); lengths could not be adjusted (one length band)"
        return DriftSummary(
            by=self.by, n_docs=self.n_docs, n_left_out=self.n_left_out,
            periods=[f"{a} .. {b}" if a != b else str(a) for a, b in zip(self.periods["from"], self.periods["to"])],
            n_tested=self.n_tested, n_findings=findings.height,
            n_rising=int((findings["direction"] == "rises").sum()),
            n_falling=int((findings["direction"] == "falls").sum()), length_rho=self.length_rho, method=method,
            alpha=self.config.alpha, min_change=self.config.min_change, notes=list(self.notes))


def drift(store: Store, by: str, config: DriftConfig | None = None, *, labels: Labels | None = None) -> DriftResult:
    """The concepts whose presence rises or falls along an ordered field (`by`: numbers, dates, or text holding
    either), tested against the documents' order within bands of similar length, with BH control.

    Examples:
        >>> result = drift(store, "date")  # doctest: +SKIP
        >>> result.findings.select("label", "direction", "first", "last")  # doctest: +SKIP
    """
    import polars as pl
    import scipy.sparse as sp
    from scipy import special, stats

    from saeembed.analysis.lengths import band_counts, length_bands
    from saeembed.analysis.stats import benjamini_hochberg, wilson
    from saeembed.labels import labels_for
    from saeembed.store import document_frequency, present

    config = config or DriftConfig()
    values, shown, kept = order_values(store.frame, by)
    n_left_out = int((~kept).sum())
    if n_left_out:
        store = store.take(np.flatnonzero(kept))
        values, shown = values[kept], [s for s, k in zip(shown, kept) if k]
    n = store.n_docs
    if n < 2 * config.min_docs or len(np.unique(values)) < 2:
        raise SaeEmbedError(f"{by!r} orders {n:,} documents with {len(np.unique(values))} distinct value(s); a trend "
                            f"needs at least {2 * config.min_docs} documents (--min-docs {config.min_docs}) and two "
                            f"values")
    x = stats.rankdata(values)
    x = x - x.mean()  # centred ranks: the sums below stay small
    period = _periods(values, config.periods)
    n_periods = int(period.max()) + 1
    tokens = store.frame["n_tokens"].to_numpy()
    bands = length_bands(tokens, config.length_bands if config.length == "adjust" else None)
    n_bands = int(bands.max()) + 1
    binary = present(store.matrix, np.float64)

    # Per band s: n, sum x, sum x^2; per band and latent: documents holding it (k) and the sum of their x.
    n_s = np.bincount(bands, minlength=n_bands).astype(float)
    sx = np.bincount(bands, weights=x, minlength=n_bands)
    sxx = np.bincount(bands, weights=x * x, minlength=n_bands)
    k = band_counts(binary, bands, n_bands).astype(float)
    weights = sp.csr_matrix((x, (bands, np.arange(n))), shape=(n_bands, n))
    sxy = np.asarray((weights @ binary).todense())
    col = n_s[:, None]
    t = (sxy - sx[:, None] * k / col).sum(axis=0)
    spread_x = np.where(n_s > 1, (n_s * sxx - sx ** 2), 0.0)[:, None]
    variance = np.where(col > 1, spread_x * (col * k - k ** 2) / (col ** 2 * np.maximum(col - 1, 1)), 0.0).sum(axis=0)
    z = np.divide(t, np.sqrt(variance), out=np.zeros_like(t), where=variance > 0)
    p = np.where(variance > 0, 2 * special.ndtr(-np.abs(z)), 1.0)
    scale = np.sqrt((sxx - sx ** 2 / n_s).sum() * (k - k ** 2 / col).sum(axis=0))
    r = np.divide(t, scale, out=np.zeros_like(t), where=scale > 0)

    df = document_frequency(store.matrix)
    tested = np.flatnonzero((df >= config.min_docs) & (n - df >= config.min_docs))
    q = np.ones(store.d_sae)
    q[tested] = benjamini_hochberg(p[tested])
    cells = band_counts(binary, period * n_bands + bands, n_periods * n_bands).astype(float)
    cells = cells.reshape(n_periods, n_bands, -1)
    cell_docs = np.bincount(period * n_bands + bands, minlength=n_periods * n_bands).reshape(n_periods, n_bands)
    period_docs = cell_docs.sum(axis=1).astype(float)
    freq = cells.sum(axis=1) / period_docs[:, None]  # shares as the documents are, for reading
    first, last = freq[0], freq[-1]
    first_lo, first_hi = wilson(cells[0].sum(axis=0), period_docs[0])
    last_lo, last_hi = wilson(cells[-1].sum(axis=0), period_docs[-1])
    change, shared = _change_at_equal_length(cells, cell_docs)
    finding = (q <= config.alpha) & (np.abs(change) >= config.min_change) & (np.sign(change) == np.sign(z))
    labels = labels if labels is not None else labels_for(store)
    table = pl.DataFrame({
        "latent": tested.astype(np.int64),
        "label": pl.Series([labels.get(int(i)) for i in tested], dtype=pl.Utf8),
        "label_score": pl.Series([labels.score.get(int(i)) for i in tested], dtype=pl.Float64),
        "direction": np.where(z[tested] > 0, "rises", "falls"),
        "r": r[tested], "z": z[tested], "p": p[tested], "q": q[tested],
        "first": first[tested], "first_lo": first_lo[tested], "first_hi": first_hi[tested],
        "last": last[tested], "last_lo": last_lo[tested], "last_hi": last_hi[tested], "change": change[tested],
        "frequencies": pl.Series(freq[:, tested].T.tolist(), dtype=pl.List(pl.Float64)),
        "n_docs": df[tested], "finding": finding[tested]})
    table = table.sort(["finding", pl.col("change").abs(), "q"], descending=[True, True, False])
    if config.examples:
        table = _examples(table, store, period, freq)
    periods = _period_table(period, values, shown, tokens, n_periods)
    length_rho = None
    if np.ptp(tokens) > 0:
        length_rho = float(stats.spearmanr(tokens, values).statistic)
    notes = _notes(by, n_left_out, length_rho, config, n_bands, shared)
    return DriftResult(by, config, table, periods, n, n_left_out, len(tested), length_rho, notes, n_bands)


def _change_at_equal_length(cells: np.ndarray, cell_docs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per latent, the last period's share minus the first's among documents of similar length: the
    Mantel-Haenszel weighted mean of the two periods' difference within each length band both hold (weights
    n_first n_last / (n_first + n_last)). With one band it is the plain difference. False (and the plain
    difference) when the two periods share no band: their documents are of different lengths throughout."""
    n_first, n_last = cell_docs[0].astype(float), cell_docs[-1].astype(float)
    both = (n_first > 0) & (n_last > 0)
    plain = cells[-1].sum(axis=0) / n_last.sum() - cells[0].sum(axis=0) / n_first.sum()
    if not both.any():
        return plain, False
    weight = np.where(both, n_first * n_last / np.maximum(n_first + n_last, 1), 0.0)
    within = (cells[-1][both] / n_last[both, None] - cells[0][both] / n_first[both, None])
    return (weight[both, None] * within).sum(axis=0) / weight.sum(), True


def order_values(frame: pl.DataFrame, by: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The field `by` as numbers to rank (dates as days or microseconds), each value as shown, and which
    documents have one. Numbers, dates and datetimes, and text holding dates (ISO 8601) or numbers, are
    ordered; anything else is refused in one line naming the field and a value."""
    import polars as pl

    if by not in frame.columns:
        from saeembed.store import RESERVED

        fields = [c for c in frame.columns if c not in RESERVED]
        raise SaeEmbedError(f"the store has no field {by!r}; its fields: {', '.join(fields)}")
    column = original = frame[by]
    if column.null_count() == len(column):
        raise SaeEmbedError(f"the field {by!r} has no value in any document; give a field of numbers or dates (--by)")
    if column.dtype == pl.Utf8:
        column = _parsed(column, by)
    if column.dtype in (pl.Date, pl.Datetime) or isinstance(column.dtype, pl.Datetime):
        numbers = column.to_physical().cast(pl.Float64)
    elif column.dtype.is_numeric() or column.dtype == pl.Boolean:
        numbers = column.cast(pl.Float64)
    else:
        raise SaeEmbedError(f"the field {by!r} holds {column.dtype} values, which have no order; give a field of "
                            f"numbers or dates (--by)")
    kept = numbers.is_not_null().to_numpy() & ~numbers.is_nan().fill_null(False).to_numpy()
    shown = [str(v).strip() if v is not None else "" for v in original.to_list()]
    return numbers.fill_null(0.0).fill_nan(0.0).to_numpy(), shown, kept


_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _parsed(column: pl.Series, by: str) -> pl.Series:
    """Text values as numbers, or as ISO 8601 dates or datetimes (2024-05-01, 2024-05-01T10:00:00): the reading
    under which every non-empty value parses. Other date formats are refused rather than guessed (01/05/2024
    is the 1st of May or the 5th of January)."""
    import polars as pl

    from saeembed.checked import show

    text = column.str.strip_chars().replace("", None)
    have = text.is_not_null()
    numbers = text.cast(pl.Float64, strict=False)
    if (numbers.is_not_null() | ~have).all():
        return numbers
    iso = text.str.contains(_ISO).fill_null(False)
    if (iso | ~have).all():
        dated_only = text.str.len_chars().fill_null(10).max() == 10
        try:
            parsed = text.str.to_date("%Y-%m-%d", strict=False) if dated_only else \
                text.str.to_datetime(strict=False, time_unit="us")
        except pl.exceptions.PolarsError:
            parsed = None
        if parsed is not None and (parsed.is_not_null() | ~have).all():
            return parsed
    wrong = have & (~iso if iso.sum() >= numbers.is_not_null().sum() else numbers.is_null())
    bad = text.filter(wrong).head(1).to_list() or text.filter(have).head(1).to_list()
    raise SaeEmbedError(f"the field {by!r} holds text that is neither a number nor an ISO date (e.g. {show(bad[0])}); "
                        f"give a field of numbers or ISO dates (2024-05-01, 2024-05-01T10:00:00) to order by (--by)")


def _periods(values: np.ndarray, wanted: int) -> np.ndarray:
    """Each document's period 0..: a distinct value goes to period floor(share of documents below it x wanted),
    so equal values share a period and two distinct values always make two periods, however tied."""
    distinct, inverse = np.unique(values, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(distinct))
    below = np.cumsum(counts) - counts
    code = np.floor(below / len(values) * wanted).astype(np.int64)
    return np.unique(code, return_inverse=True)[1][inverse].astype(np.int64)


def _period_table(period: np.ndarray, values: np.ndarray, shown: list[str], tokens: np.ndarray,
                  n_periods: int) -> pl.DataFrame:
    """One row per period: its first and last value of the field (as shown), documents and mean length."""
    import polars as pl

    rows = []
    order = np.lexsort((values, period))  # by period, then by value within it
    for p in range(n_periods):
        members = order[period[order] == p]
        rows.append({"period": p, "from": shown[members[0]], "to": shown[members[-1]], "n_docs": len(members),
                     "mean_tokens": float(tokens[members].mean())})
    return pl.DataFrame(rows)


def _examples(table: pl.DataFrame, store: Store, period: np.ndarray, freq: np.ndarray) -> pl.DataFrame:
    """For each finding, the document where it is strongest within the period it is most frequent in (the
    last for a rising concept, the first for a falling one), with its peak token's span."""
    import polars as pl

    from saeembed.spans import peak_span
    from saeembed.store import column_entries

    findings = table.filter(pl.col("finding"))
    latents = findings["latent"].to_numpy()
    target = np.where(findings["direction"].to_numpy() == "rises", int(period.max()), 0)
    rows, slot, values = column_entries(store.matrix, latents)
    best = np.full(len(latents), -1, np.int64)
    strongest = np.full(len(latents), -np.inf)
    inside = period[rows] == target[slot]
    for row, s, value in zip(rows[inside], slot[inside], values[inside]):
        if value > strongest[s]:
            best[s], strongest[s] = row, value
    texts = store.frame["text"].to_list()
    ids = store.frame["id"].cast(pl.Utf8).to_list()
    example: dict[str, list] = {"example_id": [], "example_period": [], "example_text": [], "example_start": [],
                                "example_end": []}
    for latent, row, p in zip(latents, best, target):
        span = peak_span(store, int(row), int(latent)) if row >= 0 else None
        example["example_id"].append(ids[row] if row >= 0 else None)
        example["example_period"].append(int(p) if row >= 0 else None)
        example["example_text"].append(texts[row] if row >= 0 else None)
        example["example_start"].append(span[0] if span else None)
        example["example_end"].append(span[1] if span else None)
    extra = pl.DataFrame({"latent": latents, **example},
                         schema_overrides={"example_id": pl.Utf8, "example_period": pl.Int64, "example_text": pl.Utf8,
                                           "example_start": pl.Int64, "example_end": pl.Int64})
    return table.join(extra, on="latent", how="left", maintain_order="left")


def _notes(by: str, n_left_out: int, length_rho: float | None, config: DriftConfig, n_bands: int,
           shared: bool) -> list[str]:
    notes = []
    if config.length == "adjust" and n_bands > 1 and not shared:
        notes.append("the first and last periods share no length band: the change shown is as the documents are, "
                     "not at equal length (the trend test is)")
    if n_left_out:
        notes.append(f"{n_left_out:,} documents have no {by!r} and are left out")
    if config.length == "adjust" and n_bands == 1:
        notes.append("lengths could not be adjusted: too few documents, or lengths too alike, for two length bands "
                     "of 50; if documents get longer along the field, concepts that come with length show as trends")
    elif length_rho is not None and abs(length_rho) >= 0.1:
        way = "longer" if length_rho > 0 else "shorter"
        if config.length == "adjust":
            notes.append(f"documents get {way} along {by!r} (Spearman {length_rho:+.2f}); each concept is tested "
                         f"within {n_bands} bands of similar length, so that alone is not a finding")
        else:
            notes.append(f"documents get {way} along {by!r} (Spearman {length_rho:+.2f}) and lengths are ignored: "
                         f"with max pooling, longer documents fire more latents, so findings may only say that")
    return notes


def describe(result: DriftResult, top: int | None = 8) -> list[str]:
    """The result for a person, as plain lines (the terminal's view; the page draws its own): the headline,
    the periods, then each finding with its shares, q and an example with its peak token in «»."""
    from saeembed.labels.offline import KEEP_SCORE

    s = result.summary()
    lines = [*s.lines(), *[f"note: {note}" for note in s.notes]]
    findings = result.findings if top is None else result.findings.head(top)
    for row in findings.iter_rows(named=True):
        label = row["label"] or "(no label)"
        score = row["label_score"]
        if score is not None:
            label += f" (label quality {score:.2f}{', weak' if score < KEEP_SCORE else ''})"
        trail = " -> ".join(f"{f:.0%}" for f in row["frequencies"])
        lines.append(f"  {row['direction']:5} {row['latent']} {label}: {row['first']:.1%} -> {row['last']:.1%} of "
                     f"documents ({trail}; {row['change']:+.1%} at equal length), q {row['q']:.1e}")
        if row.get("example_text") is not None and row["example_start"] is not None:
            text, a, b = row["example_text"], row["example_start"], row["example_end"]
            context = (text[max(0, a - 80):a] + "«" + text[a:b] + "»" + text[b:b + 80]).replace("\n", " ")
            lines.append(f"        e.g. {row['example_id']}: {context}")
    return lines
