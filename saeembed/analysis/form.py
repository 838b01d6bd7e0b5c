"""How a text is written, counted directly: lists, headings, bold, code, tables, questions,
exclamations, emoji, links, apologies and refusals, first and second person, hedges, disclaimers, and
how documents open and end.

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
from itertools import islice
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Protocol, Sequence

import numpy as np

from saeembed.analysis.config import DiffConfig

if TYPE_CHECKING:
    import polars as pl
    from scipy.sparse import csr_matrix

    from saeembed.store import Store

# An opening is a feature when it opens at least this share of one corpus's documents (and 5 of them).
MIN_OPENING_SHARE = 0.03
MIN_OPENING_DOCS = 5
# At most this many openings (most frequent first): a handful carries the pattern, hundreds would be noise.
MAX_OPENINGS = 30

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_TRAILING = r"[\"')\]*_”’»\s]*\Z"  # closing quotes, brackets and markup after a document's last character


_DIGITS = "0123456789"


class Feature(NamedTuple):
    """A counted feature: what it counts, in words; the pattern whose matches are counted (its first match is
    the evidence shown); and `needs`: in an ASCII text, the pattern can only match where one of these
    characters occurs (the counter skips it elsewhere; `tests/test_form.py` holds each one to it)."""

    what: str
    pattern: re.Pattern[str]
    needs: str


# Order: structure, punctuation, voice, endings; openings are added from the data.
FEATURES: dict[str, Feature] = {
    "bullet list": Feature("lines starting with -, *, + or •",
                           re.compile(r"^[ \t]*[-*+•][ \t]+(?=\S)", re.MULTILINE), "-*+"),
    "numbered list": Feature("lines starting with 1. or 1)",
                             re.compile(r"^[ \t]*\d{1,3}[.)][ \t]+(?=\S)", re.MULTILINE), _DIGITS),
    "heading": Feature("markdown headings (# Title) and lines that are bold alone",
                       re.compile(r"^[ \t]*(?:#{1,6}[ \t]+\S.*|\*\*[^*\n]{1,80}\*\*:?)[ \t]*$", re.MULTILINE), "#*"),
    "bold": Feature("**bold** or __bold__ spans", re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"), "*_"),
    "code block": Feature("``` fenced blocks", re.compile(r"```[\s\S]*?(?:```|\Z)"), "`"),
    "inline code": Feature("`code` spans", re.compile(r"(?<!`)`[^`\n]+`(?!`)"), "`"),
    "table": Feature("table rows (| a | b |)", re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.MULTILINE), "|"),
    "link": Feature("URLs and [text](url) links", re.compile(r"https?://\S+|www\.\S+|\]\([^)\s]+\)"), "hw]"),
    "paragraph break": Feature("blank lines between paragraphs", re.compile(r"\n[ \t]*\n(?=[ \t]*\S)"), "\n"),
    "question mark": Feature("?", re.compile(r"\?"), "?"),
    "exclamation mark": Feature("! (not !=)", re.compile(r"!(?!=)"), "!"),
    "emoji": Feature("emoji", re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]"), ""),
    "ellipsis": Feature("... or …", re.compile(r"\.\.\.|…"), "."),
    "em dash": Feature("— (em dash)", re.compile("—"), ""),
    "parentheses": Feature("( ... )", re.compile(r"\([^()\n]*\)"), "("),
    "quotation": Feature("quoted passages", re.compile(r"\"[^\"\n]+\"|“[^”\n]+”"), '"'),
    "number": Feature("numbers", re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*"), _DIGITS),
    "all caps word": Feature("words in capitals (3+ letters)", re.compile(r"\b[A-Z]{3,}\b"),
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    "hashtag": Feature("#tags", re.compile(r"(?<![\w#&])#[^\W\d_]\w*"), "#"),
    "mention": Feature("@names", re.compile(r"(?<![\w@])@\w+"), "@"),
    "first person": Feature("I, me, my, mine, myself",
                            re.compile(r"\bI\b|\b(?:me|my|mine|myself)\b", re.IGNORECASE), "iImM"),
    "second person": Feature("you, your, yours, yourself",
                             re.compile(r"\b(?:you|your|yours|yourself|yourselves)\b", re.IGNORECASE), "yY"),
    "apology": Feature("sorry, apologise",
                       re.compile(r"\b(?:sorry|apologi[sz]e\w*|apologies)\b", re.IGNORECASE), "sSpP"),
    "refusal": Feature("I can't / cannot / am unable to / won't / am not able to",
                       re.compile(r"\bI(?:\s+am|'m|’m)?\s+(?:can(?:no|'|’)t|cannot|unable\s+to|not\s+able\s+to|"
                                  r"won(?:'|’)t|will\s+not)\b", re.IGNORECASE), "iI"),
    "AI self-reference": Feature("as an AI, language model",
                                 re.compile(r"\b(?:as an AI(?: (?:language )?model)?|(?:an AI|a|large) language "
                                            r"model|an AI model)\b", re.IGNORECASE), "aA"),
    "hedge": Feature("might, may, perhaps, possibly, probably, likely, generally, typically, usually, often",
                     re.compile(r"\b(?:might|may|perhaps|possibly|probably|likely|generally|typically|usually|"
                                r"often|tends? to)\b", re.IGNORECASE), "mMpPlLoOtT"),
    "disclaimer": Feature("it's important to, please note, keep in mind, consult a",
                          re.compile(r"\b(?:it(?:'s|’s| is) (?:important|essential|crucial) to|please note|note "
                                     r"that|keep in mind|consult (?:a|an|with|your)|not a substitute)\b",
                                     re.IGNORECASE), "tTnN"),
    "summary phrase": Feature("in summary, in conclusion, overall, to sum up",
                              re.compile(r"\b(?:in summary|in conclusion|overall,|to sum up|to summari[sz]e)\b",
                                         re.IGNORECASE), "mMlL"),
    "ends with ?": Feature("the last character is ?", re.compile(r"\?" + _TRAILING), "?"),
    "ends with !": Feature("the last character is !", re.compile(r"!" + _TRAILING), "!"),
    "ends with .": Feature("the last character is .", re.compile(r"(?<!\.\.)\." + _TRAILING), "."),
    "ends with :": Feature("the last character is : (cut off before a list)", re.compile(r":" + _TRAILING), ":"),
}


def is_positional(name: str) -> bool:
    """Openings and endings: once per document whatever its length (a share, not a rate, compares them)."""
    return name.startswith(("opens with", "ends with"))


def opening_pattern(words: str) -> re.Pattern[str]:
    """The pattern of a document that opens with `words` (punctuation and case aside)."""
    return re.compile(r"\A[\W_]*" + r"[\W_]+".join(re.escape(w) for w in words.split()) + r"(?![^\W_])",
                      re.IGNORECASE)


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


def texts_of(frame: pl.DataFrame, meta: dict[str, Any]) -> list[str]:
    """`counted_texts` of the rows of a store's frame (or of one part's)."""
    roles = meta.get("pool_roles")
    if not roles or "messages" not in frame.columns:
        return frame["text"].to_list()
    texts = []
    for text, messages in zip(frame["text"].to_list(), frame["messages"].to_list()):
        if messages is None:  # a plain-text record in a store of chats
            texts.append(text)
        else:
            texts.append("\n\n".join(m.get("content") or "" for m in messages if m.get("role") in roles))
    return texts


class OpeningTally(NamedTuple):
    """How often each first word and first two words (lowercased) open a batch of texts, as written."""

    counter: Counter[str]
    spelled: dict[str, Counter[str]]
    size: int


def tally_openings(texts: Sequence[str]) -> OpeningTally:
    counter: Counter[str] = Counter()
    spelled: dict[str, Counter[str]] = {}
    for text in texts:
        for written in _openings(text or ""):
            key = written.lower()
            counter[key] += 1
            spelled.setdefault(key, Counter())[written] += 1
    return OpeningTally(counter, spelled, len(texts))


@dataclass(frozen=True)
class FeatureCounter:
    """Counts the features of a batch of texts: documents x features (a plain object: it travels to where a
    store's parts are read)."""

    patterns: list[re.Pattern[str]]
    needs: list[frozenset[str]]
    """Per pattern: in an ASCII text it can only match where one of these characters occurs."""
    opening_column: dict[str, int]
    n_features: int

    def __call__(self, texts: Sequence[str]) -> csr_matrix:
        from scipy.sparse import csr_matrix

        rows, columns, values = [], [], []
        every = range(len(self.patterns))
        for row, text in enumerate(texts):
            text = text or ""
            if text.isascii():  # most texts: only the patterns whose characters occur can match
                present = set(text)
                which: Iterable[int] = [c for c in every if not present.isdisjoint(self.needs[c])]
            else:
                which = every
            for column in which:
                value = len(self.patterns[column].findall(text))  # as many as finditer gives, counted in C
                if value:
                    rows.append(row)
                    columns.append(column)
                    values.append(value)
            for key in _opening_keys(text):
                if key in self.opening_column:
                    rows.append(row)
                    columns.append(self.opening_column[key])
                    values.append(1)
        return csr_matrix((np.asarray(values, np.float32), (rows, columns)), shape=(len(texts), self.n_features))


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
    return [(spelled[key].most_common(1)[0][0], key) for key in kept[:MAX_OPENINGS]]


def _openings(text: str) -> list[str]:
    """The first word and the first two words of a text, as written."""
    words = [match.group() for match in islice(_WORD.finditer(text, 0, 200), 2)]  # stops at the second word
    return [" ".join(words[:n]) for n in (1, 2) if len(words) >= n]


def _opening_keys(text: str) -> list[str]:
    return [opening.lower() for opening in _openings(text)]


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
