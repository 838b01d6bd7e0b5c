"""Dataset diff: the latents whose document frequency (or mean activation) differs between corpora,
with confidence intervals, exact tests and false-discovery-rate control over every latent tested.

The paper ranks latents by the raw frequency difference; with thousands of latents and a few
thousand documents noise alone produces differences of several points, so a latent is a finding
here only when its Benjamini-Hochberg q-value and its difference both pass (defaults q <= 0.05,
|difference| >= 0.03). `holdout` discovers on one part of the documents and checks on the rest.
By default documents are compared as if they were of equal length (`saeembed.analysis.length_adjust`), the
length gap is reported on its own, and findings that say the same thing are grouped into themes
(`saeembed.analysis.themes`). Before the latents, how the documents are written is compared from their
text (`saeembed.analysis.form`: lists, openings, `!` ...), with the same statistics (`saeembed.analysis.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from saeembed.analysis import length_adjust, stats
from saeembed.analysis.compare import AnySide, compare, side
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.evidence import diff_examples, finding_entries
from saeembed.analysis.length_adjust import LengthGap
from saeembed.analysis.pairing import align_pairs
from saeembed.analysis.summaries import Summary, count
from saeembed.analysis.themes import assign_themes, theme_table
from saeembed.errors import SaeEmbedError
from saeembed.store import Store, check_compatible
from saeembed.stream import OnePart, StoreStream

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels

# Pairs with length adjust: below this share of pairs of similar length the result says how little
# the comparison at equal length rests on (GPT-4's concise and verbose answers to 805 prompts: 9%).
PAIRS_SIMILAR_ENOUGH = 0.25


@dataclass(frozen=True)
class DiffSummary(Summary):
    """What a diff found, as one record (`saeembed.analysis.summaries`)."""

    names: list[str]
    sizes: list[int]
    unit: str
    """pairs or documents"""
    pair_on: str | None
    n_unpaired: int
    measure: str
    method: str
    length: str
    """The length gap in words."""
    length_handling: str
    mean_tokens: list[float]
    length_ratio: float
    length_p: float
    length_test: str
    length_comparable: float | None
    n_tested: int
    n_findings: int
    n_more_in_a: int
    n_more_in_others: int
    n_themes: int
    alpha: float
    min_diff: float
    replication: float | None
    replication_sentence: str | None
    notes: list[str]
    n_form_tested: int
    n_form_findings: int
    n_form_more_in_a: int
    form_replication: float | None
    n_style_tested: int
    n_style_findings: int
    n_style_more_in_a: int
    n_style_themes: int
    style_min_effect: float
    style_replication: float | None

    def lines(self, at_most: str = "<=", at_least: str = ">=") -> list[str]:
        """The headline after the length gap, in plain sentences (the comparison signs as the renderer writes
        them): the corpora, each layer's counts, replication. Notes are not included (renderers mark them)."""
        names, others = self.names, " / ".join(self.names[1:])
        sizes = ", ".join(f"{n} ({s:,} {self.unit})" for n, s in zip(names, self.sizes))
        if self.pair_on:
            sizes += f"; paired on {self.pair_on}"
        if self.n_unpaired:
            sizes += f", {self.n_unpaired:,} rows without a partner left out"
        lines = [sizes]
        if self.n_form_tested:
            how = ("counts as rates per token at equal length, openings and endings as shares"
                   if self.length_handling == "adjust" else "shares of documents, length ignored")
            lines.append(f"form: {self.n_form_findings:,} of {self.n_form_tested:,} counted features differ ({how}; "
                         f"q {at_most} {self.alpha}): {self.n_form_more_in_a:,} more in {names[0]}, "
                         f"{self.n_form_findings - self.n_form_more_in_a:,} more in {others}")
        if self.n_style_tested:
            lines.append(f"how it is written: {self.n_style_findings:,} of {self.n_style_tested:,} token latents "
                         f"differ in rate (q {at_most} {self.alpha}, effect {at_least} {self.style_min_effect}) in "
                         f"{count(self.n_style_themes, 'theme')}: {self.n_style_more_in_a:,} more in {names[0]}, "
                         f"{self.n_style_findings - self.n_style_more_in_a:,} more in {others}")
        lines.append(f"what it is about: {self.n_tested:,} latents tested ({self.measure}, {self.method}); "
                     f"{count(self.n_findings, 'finding')} at q {at_most} {self.alpha} and |diff| {at_least} "
                     f"{self.min_diff} in {count(self.n_themes, 'theme')}: {self.n_more_in_a:,} more in {names[0]}, "
                     f"{self.n_more_in_others:,} more in {others}")
        if self.replication_sentence:
            lines.append(self.replication_sentence)
        return lines


@dataclass
class DiffResult:
    """The comparison of corpus A with B (or with the others, `vs` mode)."""

    table: pl.DataFrame
    """polars DataFrame, one row per tested latent: findings first (by |diff|), then by q. `theme`
    names the finding's theme (null for the others)."""
    names: tuple[str, ...]
    """A, then B (or each of the others)."""
    sizes: tuple[int, ...]
    """Documents (pairs, when paired) compared per corpus."""
    config: DiffConfig
    n_tested: int
    length: LengthGap
    """The length gap between the corpora: a finding of its own, reported first."""
    themes: pl.DataFrame
    """polars DataFrame, one row per theme (findings that co-fire, peak on the same token or share a
    decoder direction, same direction), strongest lead first: theme, more_in, n_latents, lead, label,
    the lead's numbers and examples, `latents` and the `related` labels."""
    n_unpaired: int = 0
    """Rows dropped because their pair key is missing from another corpus."""
    replication_rate: float | None = None
    """Share of the findings that replicate on the held-out documents (None without `holdout`)."""
    discovery_sizes: tuple[int, ...] = field(default_factory=tuple)
    mean_tokens: tuple[float, ...] = field(default_factory=tuple)
    """Mean tokens pooled per document, per corpus."""
    n_tokens: tuple[np.ndarray, ...] = field(default_factory=tuple)
    """Tokens pooled per compared document, per corpus (the length distributions, e.g. for a report)."""
    document_sae: bool = False
    """The SAE encodes whole documents: every document has the same number of latents, whatever its length."""
    form: pl.DataFrame | None = None
    """polars DataFrame, one row per counted form feature (`saeembed.analysis.form`: lists, headings, `!`,
    openings ...), findings first: shares of documents, rates per 1,000 tokens, diff, interval, q,
    significant, more_in, examples. None when `config.form` is off."""
    form_replication_rate: float | None = None
    """Share of the form findings that replicate on the held-out documents (None without `holdout`)."""
    style: pl.DataFrame | None = None
    """polars DataFrame, one row per tested latent of the style SAE (how it is written, `saeembed.analysis.style`):
    rates per 1,000 tokens (mean_a, mean_b), shares of documents (freq_a, freq_b), diff, effect, interval,
    q, significant, label, theme, examples; findings first. None without style stores."""
    style_themes: pl.DataFrame | None = None
    """The style findings grouped into themes, as `themes` (None without style stores)."""
    style_replication_rate: float | None = None
    input_notes: list[str] = field(default_factory=list)
    """What to know about how the inputs were read (e.g. why there is no style layer), shown with the notes."""

    @property
    def notes(self) -> list[str]:
        """What to keep in mind about length when reading the findings (plain text, for every renderer)."""
        return self._length_notes() + self.input_notes

    def _length_notes(self) -> list[str]:
        config, gap = self.config, self.length
        if config.length == "ignore" and gap.differs:
            if self.document_sae:
                return ["length ignored: the documents are compared as they are (the SAE gives every document "
                        "the same number of latents, but longer documents can say more; compare at equal "
                        "length: --length adjust, the default)"]
            return ["length ignored: with max pooling longer documents fire more latents, so many findings are "
                    "length (compare at equal length: --length adjust, the default)"]
        notes = []
        if config.pair_on is not None:
            # The conditional tests estimate the difference at a length ratio of 1 from the pairs' spread
            # of ratios: when almost every pair is far from it, that is an extrapolation with little power.
            if config.length == "adjust" and gap.differs and gap.comparable is not None \
                    and gap.comparable < PAIRS_SIMILAR_ENOUGH:
                notes.append(f"only {gap.comparable:.0%} of the pairs are of similar length (within "
                             f"{length_adjust.PAIR_SIMILAR}x); the comparison at equal length extrapolates from "
                             f"them, so differences that come with length may not show (--length ignore compares "
                             f"the documents as they are)")
        elif gap.comparable == 0:
            return ["no document has one of the other corpus of similar length: nothing can be compared at "
                    "equal length (--length ignore compares them as they are)"]
        elif gap.comparable is not None and gap.comparable < 0.8:
            notes.append(f"only {gap.comparable:.0%} of the documents share a length band with the other corpus; "
                         f"the comparison at equal length rests on them")
        if config.length == "adjust" and gap.differs and config.measure == "frequency":
            notes.append("diff is the difference at equal length; the frequencies shown are overall")
        return notes

    @property
    def replication(self) -> str | None:
        """With a holdout, how many findings replicate, in words (None without one)."""
        config = self.config
        if config.holdout is None:
            return None
        unit = "pairs" if config.pair_on else "documents"
        layers = [(name, rate) for name, rate in (("form", self.form_replication_rate),
                                                  ("style", self.style_replication_rate),
                                                  ("content", self.replication_rate)) if rate is not None]
        if not layers:
            said = "nothing to replicate"
        elif len(layers) == 1:
            said = f"{layers[0][1]:.0%} of the {layers[0][0]} findings replicate on the {config.holdout:.0%} held out"
        else:  # each layer is its own family of tests, so each has its own rate
            said = (f"findings that replicate on the {config.holdout:.0%} held out: "
                    + ", ".join(f"{name} {rate:.0%}" for name, rate in layers))
        return f"discovered on {', '.join(f'{s:,}' for s in self.discovery_sizes)} {unit}; {said}"

    @property
    def findings(self) -> pl.DataFrame:
        """The significant rows (latents)."""
        return self.table.filter(self.table["significant"])

    @property
    def form_findings(self) -> pl.DataFrame:
        """The significant form features (an empty frame when form is off)."""
        import polars as pl

        return self.form.filter(pl.col("significant")) if self.form is not None else pl.DataFrame()

    @property
    def style_findings(self) -> pl.DataFrame:
        """The significant style latents (an empty frame without style stores)."""
        import polars as pl

        return self.style.filter(pl.col("significant")) if self.style is not None else pl.DataFrame()

    def summary(self) -> DiffSummary:
        """The record every renderer reads (`DiffSummary`)."""
        config, gap, findings = self.config, self.length, self.findings
        form, style = self.form_findings, self.style_findings
        return DiffSummary(
            names=list(self.names), sizes=[int(s) for s in self.sizes],
            unit="pairs" if config.pair_on else "documents", pair_on=config.pair_on, n_unpaired=self.n_unpaired,
            measure=config.measure, method=config.method, length=gap.sentence, length_handling=config.length,
            mean_tokens=[gap.mean_tokens_a, gap.mean_tokens_b], length_ratio=gap.ratio, length_p=gap.p,
            length_test=gap.test, length_comparable=gap.comparable, n_tested=self.n_tested,
            n_findings=len(findings), n_more_in_a=int((findings["diff"] > 0).sum()),
            n_more_in_others=int((findings["diff"] < 0).sum()), n_themes=len(self.themes), alpha=config.alpha,
            min_diff=config.min_diff, replication=self.replication_rate, replication_sentence=self.replication,
            notes=self.notes, n_form_tested=0 if self.form is None else len(self.form), n_form_findings=len(form),
            n_form_more_in_a=int((form["more_in"] == self.names[0]).sum()) if len(form) else 0,
            form_replication=self.form_replication_rate,
            n_style_tested=0 if self.style is None else len(self.style), n_style_findings=len(style),
            n_style_more_in_a=int((style["diff"] > 0).sum()) if len(style) else 0,
            n_style_themes=0 if self.style_themes is None else len(self.style_themes),
            style_min_effect=config.style_min_effect, style_replication=self.style_replication_rate)

    @property
    def n_findings(self) -> int:
        """Findings of every layer: form features, style latents and content latents."""
        return len(self.findings) + len(self.form_findings) + len(self.style_findings)


def diff(a: Store | StoreStream, b: Store | StoreStream | Sequence[Store | StoreStream],
         config: DiffConfig | None = None, *,
         names: Sequence[str] | None = None, labels: Labels | None = None,
         decoder: np.ndarray | None | Literal["auto"] = "auto", style: Sequence[Store] | None = None) -> DiffResult:
    """Compare corpus `a` with `b`, or with several corpora (then `a` against the nearest of them per
    latent: a finding must differ from every other corpus in the same direction).

    Args:
        a, b: stores (see `saeembed.embedding.open_store.open_store` to embed corpus files on the fly), loaded
            or read part by part (`saeembed.stream.StoreStream`: the same result, memory that does not grow
            with the documents; not with `pair_on` or `style`).
        config: measure, thresholds, length handling, pairing and holdout.
        names: display names of the corpora, default their file stems (A, B ... when two are the same).
        labels: a `saeembed.labels.Labels`; default the labels found for a's SAE.
        decoder: the SAE's decoder rows, to group findings with near directions into one theme;
            "auto" loads them when the SAE can be found locally, None skips that link.
        style: the same corpora embedded by a per-token SAE pooled with `count` (one store each, same
            documents in the same order; `saeembed.embedding.presets.STYLE`): adds the "how it is
            written" layer (`saeembed.analysis.style`).

    Examples:
        >>> result = diff(load_store("concise.parquet"), load_store("verbose.parquet"),
        ...               DiffConfig(pair_on="prompt_id", holdout=0.5))  # doctest: +SKIP
        >>> result.length.sentence  # doctest: +SKIP
        'documents in verbose are 2.07x longer than in concise (529 vs 256 tokens on average; ...)'
        >>> result.themes.select("theme", "more_in", "n_latents", "label", "diff", "q")  # doctest: +SKIP
    """
    import polars as pl

    from saeembed.labels import labels_for

    config = config or DiffConfig()
    others = [b] if isinstance(b, (Store, StoreStream)) else list(b)
    if not others:
        raise SaeEmbedError("give at least one corpus to compare with")
    stores = [a, *others]
    names = tuple(names or _default_names(stores))
    check_compatible(zip(names, (s.meta for s in stores)))
    streamed = any(isinstance(s, StoreStream) for s in stores)
    if streamed and config.pair_on is not None:
        raise SaeEmbedError("a diff of pairs reads both stores' rows side by side: load the stores "
                            "(saeembed.load_store) rather than reading them by parts")
    if streamed and style is not None:
        raise SaeEmbedError("the style layer reads corpus files embedded on the fly, not stores read by parts")
    for name, store in zip(names, stores):
        if store.n_docs and not _tokens(store).any():
            raise SaeEmbedError(f"no document of {name} has a pooled token (n_tokens is 0 in every row, e.g. its "
                                f"pool_roles matched no message): there is nothing to compare; embed it again "
                                f"pooling other roles")
    if style is not None:
        from saeembed.analysis.style import check_style_stores

        check_style_stores(stores, style, names)  # type: ignore[arg-type]  # refused above when streamed
        check_compatible(zip(names, (s.meta for s in style)))
    rows, n_unpaired = _rows(stores, config.pair_on)
    rng = np.random.default_rng(config.seed)
    discovery, validation = _split(rows, config.holdout, paired=config.pair_on is not None, rng=rng)

    found = compare([_side(s, r) for s, r in zip(stores, discovery)], config)
    tested = found.pop("tested")
    table = pl.DataFrame({k: v[tested] for k, v in found.items()}).with_columns(
        pl.Series("latent", np.flatnonzero(tested).astype(np.int32)))
    table = table.with_columns(q=pl.Series(stats.benjamini_hochberg(table["p"].to_numpy())))
    table = table.with_columns(significant=(pl.col("q") <= config.alpha) & (pl.col("diff").abs() >= config.min_diff))
    replication = None
    if validation is not None:
        table, replication = _replicate(table, [_side(s, r) for s, r in zip(stores, validation)], config)
    table = _finish(table, stores, rows, names, labels if labels is not None else labels_for(a), config, rng, decoder)
    style_table = style_replication = None
    if style is not None:
        style_table, style_replication = _style_layer(list(style), rows, discovery, validation, names,
                                                      config, rng, decoder)
    tokens = [_tokens(s)[r] for s, r in zip(stores, rows)]
    form, form_replication = None, None
    if config.form:
        form, form_replication = _form_layer(stores, discovery, validation, config, names)
    unpaired_bands = config.length == "adjust" and config.measure == "frequency" and config.pair_on is None
    gap = length_adjust.length_gap(names, tokens, paired=config.pair_on is not None,
                            bands=config.length_bands if unpaired_bands else None)
    return DiffResult(table, names, tuple(len(r) for r in rows), config, n_tested=int(tested.sum()), length=gap,
                      themes=theme_table(table.filter(pl.col("significant")), names, config.measure),
                      n_unpaired=n_unpaired, replication_rate=replication,
                      discovery_sizes=tuple(len(r) for r in discovery),
                      mean_tokens=tuple(float(t.mean()) if len(t) else 0.0 for t in tokens),
                      n_tokens=tuple(tokens), document_sae=a.meta["sae"].get("reads") == "document",
                      form=form, form_replication_rate=form_replication, style=style_table,
                      style_themes=None if style_table is None else theme_table(
                          style_table.filter(pl.col("significant")), names, "mean"),
                      style_replication_rate=style_replication)


def _finish(table: pl.DataFrame, stores: Sequence[Store | StoreStream], rows: list[np.ndarray], names: Sequence[str],
            labels: Labels, config: DiffConfig, rng: np.random.Generator,
            decoder: np.ndarray | Literal["auto"] | None) -> pl.DataFrame:
    """Labels, order (findings first), themes and examples, and the other corpus by name: the steps the
    content and style layers share."""
    import polars as pl

    table = _order(table.with_columns(
        label=pl.Series([labels.get(i) for i in table["latent"]], dtype=pl.Utf8),
        label_score=pl.Series([labels.score.get(int(i)) for i in table["latent"]], dtype=pl.Float64)))
    if any(isinstance(s, StoreStream) for s in stores):
        from saeembed.analysis.streamed import evidence

        signs = np.sign(table.filter(pl.col("significant"))["diff"].to_numpy())
        parts = [s if isinstance(s, StoreStream) else OnePart(s) for s in stores]  # a loaded one: one part
        table = evidence(table, parts, config, rng, _auto_decoder(stores[0], signs) if isinstance(decoder, str)
                         else decoder)
    else:
        table = _evidence(table, stores, rows, config, rng, decoder)  # type: ignore[arg-type]
    return table.with_columns(vs=pl.Series([names[1 + j] for j in table["vs"]], dtype=pl.Utf8))


def _style_layer(style: list[Store], rows: list[np.ndarray], discovery: list[np.ndarray],
                 validation: list[np.ndarray] | None, names: Sequence[str], config: DiffConfig,
                 rng: np.random.Generator,
                 decoder: np.ndarray | Literal["auto"] | None) -> tuple[pl.DataFrame, float | None]:
    """How it is written: the style stores' token latents compared as rates (`saeembed.analysis.style`)."""
    import polars as pl

    from saeembed.analysis.style import effect_sizes, rate_side, rates_config, style_table
    from saeembed.labels import labels_for

    sides = [rate_side(s, r) for s, r in zip(style, discovery)]
    found = compare(sides, rates_config(config))
    effect = effect_sizes(sides, found["vs"], config.pair_on is not None)
    table = style_table(found, effect, config)
    replication = None
    if validation is not None:
        table, replication = _replicate(table, [rate_side(s, r) for s, r in zip(style, validation)],
                                        rates_config(config))
    # the style SAE's own decoder rows: an array given for the content SAE would not fit
    table = _finish(table, style, rows, names, labels_for(style[0]), config, rng,
                    decoder if isinstance(decoder, str) else None)
    return table.with_columns(layer=pl.lit("style")), replication


def _tokens(store: Store | StoreStream) -> np.ndarray:
    return store.n_tokens if isinstance(store, StoreStream) else store.frame["n_tokens"].to_numpy()


def _side(store: Store | StoreStream, rows: np.ndarray) -> AnySide:
    if isinstance(store, StoreStream):
        from saeembed.analysis.streamed import StreamSide

        return StreamSide(store, rows)
    return side(store, rows)


def _form_layer(stores: list[Store | StoreStream], discovery: list[np.ndarray], validation: list[np.ndarray] | None,
                config: DiffConfig, names: Sequence[str]) -> tuple[pl.DataFrame, float | None]:
    """The form layer: its features of each store's documents, as stored with them or counted from their texts
    (a streamed store's part by part); the texts are read for the findings' examples."""
    from saeembed.analysis.form import compare_form, counted_texts, form_features, store_source
    from saeembed.analysis.streamed import StreamForm, StreamTexts

    texts: list[Sequence[str]] = [StreamTexts(s) if isinstance(s, StoreStream) else counted_texts(s) for s in stores]
    features = form_features([StreamForm(s) if isinstance(s, StoreStream) else store_source(s, t)
                              for s, t in zip(stores, texts)])
    return compare_form(texts, [_tokens(s) for s in stores], discovery, validation, config, names,
                        np.random.default_rng(config.seed), features)


def _default_names(stores: list[Store | StoreStream]) -> list[str]:
    """The stores' file stems; A, B, C ... when two are the same (stores made in memory are all
    `<in memory>`, and "more in <in memory>" said nothing)."""
    stems = [s.path.stem for s in stores]
    return stems if len(set(stems)) == len(stems) else [chr(ord("A") + i) if i < 26 else f"corpus {i + 1}"
                                                         for i in range(len(stores))]


def _evidence(table: pl.DataFrame, stores: list[Store], rows: list[np.ndarray], config: DiffConfig,
              rng: np.random.Generator, decoder: np.ndarray | Literal["auto"] | None) -> pl.DataFrame:
    """The findings' themes and examples, from one gathering of their latents' entries per store."""
    import polars as pl

    findings = table.filter(pl.col("significant"))
    latents = findings["latent"].to_numpy().astype(np.int64)
    entries = [finding_entries(s, r, latents) for s, r in zip(stores, rows)]
    signs = np.sign(findings["diff"].to_numpy())
    if isinstance(decoder, str):
        decoder = _auto_decoder(stores[0], signs)
    theme = assign_themes(entries, [len(r) for r in rows], signs, config, decoder, latents)
    theme_of = np.zeros(len(table), np.int32)
    theme_of[:len(findings)] = theme  # findings come first in the ordered table
    table = table.with_columns(theme=pl.Series(theme_of, dtype=pl.Int32).replace(0, None))
    if config.examples:
        table = diff_examples(table, stores, rows, entries, config.pair_on is not None, rng)
    return table


def _auto_decoder(store: Store | StoreStream, signs: np.ndarray) -> np.ndarray | None:
    """The decoder rows when two findings of one sign could share a direction (else none is needed)."""
    return _decoder(store) if (signs > 0).sum() > 1 or (signs < 0).sum() > 1 else None


def _decoder(store: Store | StoreStream) -> np.ndarray | None:
    """The SAE's decoder rows when its files are found locally (no lookup without a source)."""
    if not store.meta.get("sae", {}).get("source"):
        return None
    from saeembed.analysis.correlations import decoder_directions

    return decoder_directions(store.meta)[0]


def _rows(stores: list[Store | StoreStream], pair_on: str | None) -> tuple[list[np.ndarray], int]:
    """The rows of each store to compare: all of them, or the pairs aligned on `pair_on`."""
    if pair_on is None:
        return [np.arange(s.n_docs) for s in stores], 0
    rows = align_pairs(stores, pair_on)  # type: ignore[arg-type]  # diff refuses pairs of streamed stores
    return rows, sum(s.n_docs - len(r) for s, r in zip(stores, rows))


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


def _replicate(table: pl.DataFrame, sides: list[AnySide],
               config: DiffConfig) -> tuple[pl.DataFrame, float | None]:
    """Test the findings again on held-out documents: a finding replicates when its difference has
    the same sign there and survives BH over the findings at the same alpha."""
    import polars as pl

    held = compare(sides, replace(config, holdout=None))
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


def _order(table: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    first = ["latent", "label", "freq_a", "freq_b", "diff", "rel_diff", "ci_low", "ci_high", "p", "q",
             "significant"]
    table = table.with_columns(_abs=pl.col("diff").abs()).sort(
        ["significant", "_abs", "q"], descending=[True, True, False]).drop("_abs")
    return table.select(first + [c for c in table.columns if c not in first])
