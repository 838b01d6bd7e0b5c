"""The form layer of a diff: how texts are written, counted directly (lists, headings, bold, code, tables,
questions, exclamations, emoji, links, apologies and refusals, first and second person, hedges, disclaimers,
and how documents open and end; the features and their counting are `saeembed.form_counts`'), compared.

These are the differences a person sees first between two models' answers ("one uses lists, the
other ends with '!'"), and the ones an SAE read through a sentence encoder is blind to. Each feature is
a count per document from the text alone (no model), so `diff` can test them with the same statistics
as latents and show the count a user can check by hand.

Openings are found in the data: the first word, and the first two words, of every document of the
corpora compared; those that open at least `MIN_OPENING_SHARE` of the documents of one corpus become
features ("opens with «Sure»").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np

from saeembed.analysis.config import DiffConfig
from saeembed.form_counts import (
    FEATURES,
    FeatureCounter,
    OpeningTally,
    is_positional,
    opening_pattern,
    stored_tally,
    tally_openings,
    texts_of,
)

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    from scipy.sparse import csr_matrix

    from saeembed.store import Store

# An opening is a feature when it opens at least this share of one corpus's documents (and 5 of them).
MIN_OPENING_SHARE = 0.03
MIN_OPENING_DOCS = 5
# At most this many openings (most frequent first): a handful carries the pattern, hundreds would be noise.
MAX_OPENINGS = 30


@dataclass
class FormFeatures:
    """Counted features of the documents of one or more corpora (rows in the order given)."""

    names: list[str]
    """Feature names, e.g. `bullet list`, `opens with «Sure»`."""
    descriptions: list[str]
    """What each feature counts, in words."""
    patterns: list[re.Pattern[str]]
    """What each feature matches (its first match is the evidence shown)."""
    counts: list[csr_matrix]
    """Per corpus, documents x features: how often each feature occurs in each document (openings and
    endings are 0 or 1)."""


def counted_texts(store: Store) -> list[str]:
    """What the form layer counts in each document of a store: its `text`; for chats embedded with
    `pool_roles`, only those roles' turns (joined by a blank line). `n_tokens` counts only the pooled
    turns, and the prompt is the same on both sides of a model comparison, so counting the rendered
    conversation would mix the prompt's lists and questions into the answers' rates."""
    return texts_of(store.frame, store.meta)


class FormSource(Protocol):
    """A corpus's texts in batches, tallied and counted where they are (a store read by parts: one batch per
    part, `saeembed.analysis.streamed.StreamForm`)."""

    def tallies(self) -> Iterable[OpeningTally]: ...

    def counts(self, counter: FeatureCounter) -> Iterable[csr_matrix]: ...


class _Texts:
    """Texts in memory: one batch."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts

    def tallies(self) -> Iterable[OpeningTally]:
        return [tally_openings(self.texts)]

    def counts(self, counter: FeatureCounter) -> Iterable[csr_matrix]:
        return [counter(self.texts)]


class _Stored:
    """A store's form columns (`form_counts.stored_form`) in memory: one batch, its texts not read."""

    def __init__(self, form: pa.Table) -> None:
        self.form = form

    def tallies(self) -> Iterable[OpeningTally]:
        return [stored_tally(self.form)]

    def counts(self, counter: FeatureCounter) -> Iterable[csr_matrix]:
        return [counter.stored(self.form)]


def store_source(store: Store, texts: Sequence[str] | None = None) -> FormSource:
    """A loaded store's documents as the form layer reads them: its form columns, counted when it was written,
    where it has them (`Store.form`), else its texts (`counted_texts`, or `texts` when the caller has them),
    counted now."""
    if store.form is not None:
        return _Stored(store.form)
    return _Texts(texts if texts is not None else counted_texts(store))


def _source(corpus: Sequence[str] | FormSource) -> FormSource:
    return corpus if hasattr(corpus, "tallies") else _Texts(corpus)  # type: ignore[return-value]


def form_features(corpora: Sequence[Sequence[str] | FormSource]) -> FormFeatures:
    """Count every feature in every document of `corpora` (lists of texts, or `FormSource`s), openings
    chosen over all of them (an opening frequent in either corpus is counted in both)."""
    from scipy.sparse import csr_matrix, vstack

    sources = [_source(corpus) for corpus in corpora]
    openings = frequent_openings(sources)
    names = list(FEATURES) + [f"opens with «{shown}»" for shown, _ in openings]
    descriptions = [feature.what for feature in FEATURES.values()] + \
        [f"the first {len(key.split())} word{'s' if ' ' in key else ''} are «{shown}»" for shown, key in openings]
    patterns = [feature.pattern for feature in FEATURES.values()]
    counter = FeatureCounter(patterns, [frozenset(feature.needs) for feature in FEATURES.values()],
                             {key: len(patterns) + j for j, (_, key) in enumerate(openings)}, len(names))
    matrices = []
    for source in sources:  # per batch: Python lists only as long as one part
        pieces = list(source.counts(counter))
        matrices.append(vstack(pieces, format="csr") if pieces else csr_matrix((0, len(names)), dtype=np.float32))
    return FormFeatures(names, descriptions, patterns + [opening_pattern(key) for _, key in openings], matrices)


def frequent_openings(corpora: Sequence[Sequence[str] | FormSource]) -> list[tuple[str, str]]:
    """(as usually written, lowercased key) of the first words and first two words that open at least
    `MIN_OPENING_SHARE` of one corpus's documents, most frequent first. A two-word opening is kept only
    where it says more than its first word (it is not almost every document that opens with that word)."""
    counts: list[Counter[str]] = []
    sizes: list[int] = []
    spelled: dict[str, Counter[str]] = {}
    for corpus in corpora:
        counter: Counter[str] = Counter()
        size = 0
        for tally in _source(corpus).tallies():
            counter.update(tally.counter)
            size += tally.size
            for key, written in tally.spelled.items():
                spelled.setdefault(key, Counter()).update(written)
        counts.append(counter)
        sizes.append(size)
    share = {key: max(c[key] / max(size, 1) for c, size in zip(counts, sizes))
             for key in set().union(*counts)}
    total: Counter[str] = Counter()
    for counter in counts:
        total.update(counter)
    kept = [key for key in share if share[key] >= MIN_OPENING_SHARE and total[key] >= MIN_OPENING_DOCS]
    keys = set(kept)
    kept = [key for key in kept if " " not in key or key.split()[0] not in keys
            or total[key] < 0.9 * total[key.split()[0]]]
    kept.sort(key=lambda key: (-total[key], key))
    # shown as most often written (ties: the first in code-point order, whatever order the documents came in)
    return [(min(spelled[key].items(), key=lambda item: (-item[1], item[0]))[0], key) for key in kept[:MAX_OPENINGS]]


# A counted feature is a finding when its rate differs by at least this share of the larger rate
# (as latents need |diff| >= min_diff): 10% more bullet lines per token, not 1%.
MIN_RELATIVE_RATE = 0.1
PER_TOKENS = 1000  # rates are shown per this many tokens


def compare_form(texts: Sequence[Sequence[str]], tokens: Sequence[np.ndarray], discovery: Sequence[np.ndarray],
                 validation: Sequence[np.ndarray] | None, config: DiffConfig, names: Sequence[str],
                 rng: np.random.Generator, features: FormFeatures | None = None) -> tuple[pl.DataFrame, float | None]:
    """The form layer of a diff: every feature compared between the corpora, one row each, findings first.

    `texts[k]` and `tokens[k]` are the compared documents of corpus k (pairs aligned by position; `texts[k]`
    is only indexed when `features`, counted over them, are given);
    `discovery[k]` / `validation[k]` are positions in them. With `config.length == "adjust"` (the
    default) counted features are compared as rates per token (paired or Welch t on each document's
    count / n_tokens: a document twice as long with twice the lists is not "more lists"), openings and
    endings as shares of documents (they occur once whatever the length); with "ignore" every feature
    is the share of documents that have it, as a person would count. Each layer has its own
    Benjamini-Hochberg family.
    """
    import polars as pl

    from saeembed.analysis import stats

    features = features or form_features(texts)
    positional = np.array([is_positional(n) for n in features.names])
    found = _form_test(features, tokens, discovery, positional, config)
    tested = found["tested"]
    q = np.ones(len(tested))
    q[tested] = stats.benjamini_hochberg(found["p"][tested])
    large = np.where(found["rate"], found["rel_rate"] >= MIN_RELATIVE_RATE, np.abs(found["diff"]) >= config.min_diff)
    significant = tested & (q <= config.alpha) & large
    vs = found["vs"]
    table = pl.DataFrame({
        "layer": ["form"] * len(features.names), "feature": features.names, "description": features.descriptions,
        "share_a": found["share_a"], "share_b": found["share_b"],
        "rate_a": np.where(found["rate"], found["rate_a"], np.nan), "rate_b": np.where(found["rate"], found["rate_b"],
                                                                                     np.nan),
        "unit": np.where(found["rate"], f"per {PER_TOKENS:,} tokens", "share of documents"),
        "diff": found["diff"], "ci_low": found["ci_low"], "ci_high": found["ci_high"], "p": found["p"], "q": q,
        "significant": significant, "test": found["test"],
        "more_in": [names[0] if d > 0 else names[1 + v] for d, v in zip(found["diff"], vs)],
        "vs": [names[1 + v] for v in vs]}).with_columns(pl.col("rate_a", "rate_b").fill_nan(None))
    replication = None
    if validation is not None:
        held = _form_test(features, tokens, validation, positional, config)
        q_held = np.full(len(tested), np.nan)
        q_held[significant] = stats.benjamini_hochberg(held["p"][significant]) if significant.any() else []
        replicated = significant & (np.sign(held["diff"]) == np.sign(found["diff"])) & (q_held <= config.alpha)
        table = table.with_columns(diff_holdout=pl.Series(held["diff"]), replicated=pl.Series(replicated))
        replication = float(replicated[significant].mean()) if significant.any() else None
    table = _form_examples(table, features, texts, tokens, discovery, vs, config.pair_on is not None, rng)
    order = np.lexsort((q, -found["effect"], ~significant))  # findings first, the largest effect first
    return table[order.tolist()], replication


def _form_test(features: FormFeatures, tokens: Sequence[np.ndarray], rows: Sequence[np.ndarray],
               positional: np.ndarray, config: DiffConfig) -> dict[str, np.ndarray]:
    """Per feature: shares of documents, rates, and the test (rate or share, by `config.length`)."""
    from dataclasses import replace

    from saeembed.analysis.compare import Side, compare

    counts = [features.counts[k][r] for k, r in enumerate(rows)]
    lengths = [np.maximum(tokens[k][r], 1).astype(np.float64) for k, r in enumerate(rows)]
    shares = compare([Side.of(m, n) for m, n in zip(counts, lengths)],
                     replace(config, measure="frequency", length="ignore", holdout=None))
    n = len(positional)
    out = {"share_a": shares["freq_a"], "share_b": shares["freq_b"], "tested": shares["tested"],
           "rate": np.zeros(n, bool), "rate_a": np.zeros(n), "rate_b": np.zeros(n), "rel_rate": np.zeros(n)}
    for key in ("diff", "ci_low", "ci_high", "p", "test", "vs"):
        out[key] = shares[key]
    if config.length == "adjust":
        rates = compare([Side.of(_per_tokens(m, n), n) for m, n in zip(counts, lengths)],
                        replace(config, measure="mean", length="ignore", holdout=None))
        counted = ~positional
        out["rate"] = counted
        out["rate_a"], out["rate_b"] = rates["mean_a"], rates["mean_b"]
        for key in ("diff", "ci_low", "ci_high", "p", "test", "vs"):
            out[key] = np.where(counted, rates[key], shares[key])
        top = np.maximum(np.abs(rates["mean_a"]), np.abs(rates["mean_b"]))
        out["rel_rate"] = np.divide(np.abs(rates["diff"]), top, out=np.zeros(n), where=top > 0)
    out["effect"] = np.where(out["rate"], out["rel_rate"], np.abs(out["diff"]))
    return out


def _per_tokens(counts: csr_matrix, n_tokens: np.ndarray) -> csr_matrix:
    """Counts as rates per PER_TOKENS tokens of each document."""
    rates = counts.tocsr(copy=True).astype(np.float64)
    rates.data *= np.repeat(PER_TOKENS / n_tokens, np.diff(rates.indptr))
    return rates


def _form_examples(table: pl.DataFrame, features: FormFeatures, texts: Sequence[Sequence[str]],
                   tokens: Sequence[np.ndarray], rows: Sequence[np.ndarray], vs: np.ndarray, paired: bool,
                   rng: np.random.Generator) -> pl.DataFrame:
    """For each finding: a document of the side with more of the feature, its first match marked << >>,
    and one of the other side without it (for pairs, the same item's partner; else the nearest in length)."""
    import polars as pl

    from saeembed.spans import marked_context

    with_texts: list[str | None] = [None] * table.height
    without_texts: list[str | None] = [None] * table.height
    for i, row in enumerate(table.iter_rows(named=True)):
        if not row["significant"]:
            continue
        j = features.names.index(row["feature"])
        more, less = (0, 1 + int(vs[i])) if row["diff"] > 0 else (1 + int(vs[i]), 0)
        has_more = (features.counts[more][rows[more]][:, j].toarray().ravel() > 0)
        has_less = (features.counts[less][rows[less]][:, j].toarray().ravel() > 0)
        candidates = np.flatnonzero(has_more & ~has_less) if paired else np.flatnonzero(has_more)
        if not len(candidates):
            continue
        pick = int(rng.choice(candidates))
        text = texts[more][rows[more][pick]] or ""
        match = features.patterns[j].search(text)
        with_texts[i] = marked_context(text, match.span()) if match else text[:200]
        if paired:
            partner = pick
        else:
            lacking = np.flatnonzero(~has_less)
            if not len(lacking):
                continue
            length = tokens[more][rows[more][pick]]
            partner = int(lacking[np.argmin(np.abs(tokens[less][rows[less][lacking]] - length))])
        other = (texts[less][rows[less][partner]] or "").replace("\n", " ")
        without_texts[i] = other if len(other) <= 200 else other[:200] + "…"
    return table.with_columns(pl.Series("example_with", with_texts, dtype=pl.Utf8),
                              pl.Series("example_without", without_texts, dtype=pl.Utf8))
