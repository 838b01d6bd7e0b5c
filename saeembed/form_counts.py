"""How a text is written, counted directly: the features `diff`'s form layer compares (lists, headings, bold,
code, tables, questions, exclamations, emoji, links, apologies and refusals, first and second person, hedges,
disclaimers, endings) and each document's first words, from which it picks the frequent openings.

The counts are a property of the document alone (no model), so `embed` makes them once, as it writes a store:
two columns beside the vectors (`STORED_COLUMNS`: each document's feature counts, and its first word and first
two words as written), and the metadata's `form.fingerprint` names the feature set they were counted with. A
diff of big stores then reads those columns instead of running a dozen regular expressions over every text
again; a store written before them, or with another feature set (`FORM_FINGERPRINT` differs), is counted from
its texts, with the same result.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    from scipy.sparse import csr_matrix

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
OPENING_WINDOW = 200  # a document's opening words are looked for in its first this many characters
TURN_JOIN = "\n\n"  # between the counted turns of a chat
FORM_LAYOUT = 1  # raise when the counting changes in a way the fingerprint's parts do not show
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


def texts_of(frame: pl.DataFrame, meta: dict[str, Any]) -> list[str]:
    """What the form layer counts in each row of a store's frame (or of one part's): its `text`; for chats
    embedded with `pool_roles`, only those roles' turns (joined by a blank line). `n_tokens` counts only the
    pooled turns, and the prompt is the same on both sides of a model comparison, so counting the rendered
    conversation would mix the prompt's lists and questions into the answers' rates."""
    roles = meta.get("pool_roles")
    if not roles or "messages" not in frame.columns:
        return frame["text"].to_list()
    return [counted_text(text, messages, roles)
            for text, messages in zip(frame["text"].to_list(), frame["messages"].to_list())]


def counted_text(text: str, messages: list[dict[str, Any]] | None, roles: Sequence[str] | None) -> str:
    """`texts_of` of one record: its text, or with `roles` the content of its turns by those roles."""
    if not roles or messages is None:  # a plain-text record (in a store of chats too)
        return text
    return TURN_JOIN.join(m.get("content") or "" for m in messages if m.get("role") in roles)


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

    def stored(self, form: pa.Table) -> csr_matrix:
        """What `self(texts)` gives, from the texts' form columns (`stored_form`): the counts as stored, the
        openings looked up by their lowercased words. The counter's first columns must be `FEATURES`' (as
        `form_features` makes them)."""
        import pyarrow.compute as pc
        from scipy.sparse import csr_matrix

        n = form.num_rows
        fixed = form.column("form_counts").combine_chunks().flatten().to_numpy(zero_copy_only=False)  # slices kept
        counts = fixed.reshape(n, len(FEATURES))
        rows, columns = np.nonzero(counts)
        values = counts[rows, columns].astype(np.float32)
        if self.opening_column:
            openings = form.column("openings").combine_chunks()
            written = openings.flatten()  # every document's openings, in document order
            owner = pc.list_parent_indices(openings).to_numpy(zero_copy_only=False)
            unique = pc.unique(written)
            # Python's lowering of each distinct opening, as `_opening_keys`: the same keys as from the texts
            column_of = np.array([self.opening_column.get(value.lower(), -1) for value in unique.to_pylist()] + [-1])
            at = column_of[pc.index_in(written, value_set=unique).to_numpy(zero_copy_only=False)]
            hit = at >= 0
            rows = np.concatenate([rows, owner[hit]])
            columns = np.concatenate([columns, at[hit]])
            values = np.concatenate([values, np.ones(int(hit.sum()), np.float32)])
        matrix = csr_matrix((values, (rows, columns)), shape=(n, self.n_features))
        matrix.sum_duplicates()
        return matrix


def _openings(text: str) -> list[str]:
    """The first word and the first two words of a text, as written."""
    words = [match.group() for match in islice(_WORD.finditer(text, 0, OPENING_WINDOW), 2)]  # to the 2nd word
    return [" ".join(words[:n]) for n in (1, 2) if len(words) >= n]


def _opening_keys(text: str) -> list[str]:
    return [opening.lower() for opening in _openings(text)]




# -- the columns a store keeps -------------------------------------------------------------------------------

STORED_COLUMNS = ("form_counts", "openings")
"""A store's form columns: per document, each of `FEATURES`' counts (a fixed-size list of uint32, in `FEATURES`'
order), and its first word and first two words as written (`_openings`)."""


def _fingerprint() -> str:
    """Everything the stored counts depend on: the features (names, patterns, the characters they need), how
    openings are read (the word pattern, the window), how a chat's turns are joined, and the Unicode tables
    behind `\\w` and `\\b`. Raise `FORM_LAYOUT` when the counting changes in a way these do not show."""
    import unicodedata

    from saeembed.hashing import text_key

    parts = [f"{name}|{f.pattern.pattern}|{int(f.pattern.flags)}|{f.needs}" for name, f in FEATURES.items()]
    return text_key(f"form-counts-{FORM_LAYOUT}", _WORD.pattern, str(OPENING_WINDOW), repr(TURN_JOIN),
                    unicodedata.unidata_version, *parts)


FORM_FINGERPRINT = _fingerprint()
"""Names what a store's form columns were counted with (`FEATURES`' names and patterns, how words are read): a
store whose metadata has another is counted from its texts instead."""

def _counts_type() -> pa.DataType:
    import pyarrow as pa

    return pa.list_(pa.uint32(), len(FEATURES))


def stored_columns(texts: Sequence[str]) -> dict[str, pa.Array]:
    """The form columns of documents whose counted texts (`texts_of`) are `texts`, as `embed` writes them."""
    import pyarrow as pa

    counter = FeatureCounter([f.pattern for f in FEATURES.values()], [frozenset(f.needs) for f in FEATURES.values()],
                             {}, len(FEATURES))
    counts = counter(texts).toarray()
    flat = pa.array(np.minimum(counts, np.iinfo(np.uint32).max).astype(np.uint32).ravel())
    return {"form_counts": pa.FixedSizeListArray.from_arrays(flat, len(FEATURES)),
            "openings": pa.array([_openings(text or "") for text in texts], pa.list_(pa.string()))}


def form_meta() -> dict[str, Any]:
    """What a store's metadata says of its form columns."""
    return {"fingerprint": FORM_FINGERPRINT}


def stored_form(table: pa.Table, meta: dict[str, Any]) -> pa.Table | None:
    """The form columns of a store's (or a part's) `table`, when they can stand for its texts' counts: counted
    with this feature set (`FORM_FINGERPRINT`), of the types `stored_columns` writes, no cell missing. Else None:
    the form layer counts the texts (they are derived, so a store without them, or with damaged ones, loses
    nothing)."""
    import pyarrow as pa

    form = meta.get("form")
    if not isinstance(form, dict) or form.get("fingerprint") != FORM_FINGERPRINT:
        return None
    if any(name not in table.column_names for name in STORED_COLUMNS):
        return None
    counts, openings = (table.column(name) for name in STORED_COLUMNS)
    if counts.type != _counts_type() or openings.type != pa.list_(pa.string()):
        return None
    if counts.null_count or openings.null_count or any(chunk.values.null_count for chunk in counts.chunks) \
            or any(chunk.values.null_count for chunk in openings.chunks):
        return None
    return table.select(list(STORED_COLUMNS))


def stored_tally(form: pa.Table) -> OpeningTally:
    """`tally_openings` of the documents whose form columns are `form` (`stored_form`), from their openings."""
    import polars as pl

    written = pl.from_arrow(form.column("openings").combine_chunks().flatten())
    assert isinstance(written, pl.Series)
    counter: Counter[str] = Counter()
    spelled: dict[str, Counter[str]] = {}
    for value, count in written.value_counts().iter_rows():
        key = value.lower()  # Python's lowering, as `tally_openings`: the same keys either way
        counter[key] += count
        spelled.setdefault(key, Counter())[value] += count
    return OpeningTally(counter, spelled, form.num_rows)
