"""Concepts in the user's words -> a weighted, ranked set of latents (shared by cluster, search, risk).

A query is a comma-separated list of terms:
- latent ids (`12`, `407`);
- words or phrases (`sarcasm`, `topic of the sentence`): latents ranked by the cosine similarity of
  their label's sentence embedding to the term's (the default dense model), plus a bonus when the
  label contains the term's words. Only labels close to the best match are kept (similarity at least
  `RELATIVE` of the best one's and at least `MIN_SIMILARITY`; or containing the term's words), at
  most `top`: a phrase no label is about selects a handful of latents, not a hundred. When even the
  best match is weak (below `WEAK_SIMILARITY`) the selection carries a note saying so;
- with a document-level SAE (the offline default), a phrase also selects the latents its own text
  activates, read with the store's reader and SAE (the SAE encodes whole texts, so a phrase is a tiny
  document and its code names the concepts it is about, whatever the labels call them), ranked after
  the label matches: a few-word label often misses a broad concept;
- `-term` excludes what the term selects.
`like=[...]` adds examples: each is embedded with the store's own reader + SAE and its strongest
latents (activation relative to the store's typical activation) are taken.

The selection is always returned whole (ids, labels, weights, why, the label words that matched)
so a user can see and edit it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from saeembed.errors import ConceptError
from saeembed.labels import STOPWORDS
from saeembed.store import Store, column_entries, document_frequency
from saeembed.stream import StoreStream

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels

TEMPERATURE = 0.2  # the paper's rank weighting: weight of rank r of k is exp(-(r / k) / T)
KEYWORD_BONUS = 0.15
# The thresholds are all-MiniLM-L6-v2 cosines, set on the shipped labels: a phrase some label is about
# scores 0.45-0.7 with it (`football` ~ `game · nfl · football · players` 0.54, `violence` 0.70), a
# phrase none is about 0.25-0.36 with its closest of 4,095 labels (`sarcasm` 0.36, `irony` 0.35,
# `happy birthday wishes` 0.34, a nonsense word 0.28), and unrelated labels crowd that band: relative
# to the best alone, `irony` kept 66 latents.
RELATIVE = 0.75  # keep labels at least this share of the best label's similarity...
MIN_SIMILARITY = 0.3  # ...and at least this similar: below it a label is unrelated, however the rest fare
WEAK_SIMILARITY = 0.4  # a best match below this is weak, and the selection says so
# The latents a phrase's own text activates join only a phrase some label is about, so nonsense selects
# nothing. Requiring them to fire with the label matches as well (lift >= 2 in >= 3 of their documents,
# against `file · bin · bash` coming with `weather`) lowered search MAP on held-out queries from 0.604 to
# 0.568 (benchmarks/RESULTS.md): on average they earn their place, and they stay.
# Labels made only of fragments (`z`, `cy`, `q`: every part at most FRAGMENT letters) are not matched
# against words: any odd string is close to them (`zzzqqq` selected `z`, `cy`, `q`).
FRAGMENT = 2
CLOSE_WORD = 0.6  # a label word this similar to the phrase is shown as matched (`soccer` 0.84 for `football`;
# single words are noisy below: `golf` and `defence` are 0.55 from `football`)
_WORD = re.compile(r"[a-z0-9']+")
Pick = tuple[float, str, list[str]]  # why a latent is selected: (score, why, label words that matched)


@dataclass
class Concepts:
    """Selected latents, strongest first, with rank weights in (0, 1]."""

    latents: np.ndarray
    weights: np.ndarray
    labels: list[str | None]
    why: list[str]
    """What selected each latent: `id`, `label ~ 'term' 0.61`, `example 'text…'`."""
    query: str
    matched: list[list[str]] = field(default_factory=list)
    """Per latent, the label words that matched its phrase: the phrase's own words or words close to it
    in meaning (empty for ids and examples, or when only the label as a whole is close)."""
    notes: list[str] = field(default_factory=list)
    """Warnings about the selection: a phrase whose best matching label is weak, or that selects nothing."""
    excluded: list[int] = field(default_factory=list)
    """Latents the query's `-term`s exclude (search's feedback does not add them back)."""
    label_scores: list[float | None] = field(default_factory=list)
    """Per latent, its label's held-out quality score (None: unscored)."""

    def __len__(self) -> int:
        return len(self.latents)

    def frame(self) -> pl.DataFrame:
        import polars as pl

        matched = self.matched if len(self.matched) == len(self.latents) else [[] for _ in self.latents]
        scores = self.label_scores if len(self.label_scores) == len(self.latents) else [None] * len(self.latents)
        return pl.DataFrame({"latent": self.latents.astype(np.int32), "weight": self.weights,
                             "label": pl.Series(self.labels, dtype=pl.Utf8),
                             "label_score": pl.Series(scores, dtype=pl.Float64), "why": self.why,
                             "matched": pl.Series(matched, dtype=pl.List(pl.Utf8))})


def rank_weights(k: int, temperature: float = TEMPERATURE) -> np.ndarray:
    """exp(-(r/k)/T) for ranks r = 0..k-1."""
    return np.exp(-(np.arange(k) / max(k, 1)) / temperature)


def activation_scale(store: Store | StoreStream, latents: np.ndarray, quantile: float = 0.9,
                     entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """For each of `latents`, the `quantile` of its non-zero activations in the store (1 where it never
    fires): dividing by it puts every latent on a comparable scale. `entries` are the columns'
    non-zeros when the caller already has them (`column_entries`). A store read by parts reads each latent's
    values from its parts' latent indexes and keeps them (`StoreStream.column_values`), or where they are too
    many to keep, a group of latents at a time (`StoreStream.column_groups`)."""
    if entries is None and isinstance(store, StoreStream):
        latents = np.asarray(latents, np.int64)
        scale = np.ones(len(latents), np.float32)
        kept = store.column_values(latents)
        if kept is None:
            for group, entries_of in store.column_groups(latents):
                scale[group] = activation_scale(store, latents[group], quantile, entries=entries_of)
            return scale
        for j, held in enumerate(kept):  # each latent's values: no sort of the entries by latent
            if len(held):
                scale[j] = max(float(np.quantile(held, quantile)), 1e-6)
        return scale
    _, which, values = entries if entries is not None else column_entries(store.matrix, latents)  # type: ignore[union-attr]
    # grouped by latent with a stable sort: on 16-bit keys numpy's is a radix sort, linear in the entries
    order = np.argsort(which.astype(np.uint16) if len(latents) <= 1 << 16 else which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(latents) + 1))
    scale = np.ones(len(latents), np.float32)
    for k in np.flatnonzero(np.diff(bounds)):
        scale[k] = max(float(np.quantile(values[order[bounds[k]: bounds[k + 1]]], quantile)), 1e-6)
    return scale


def select_concepts(query: str | None, store: Store | StoreStream, *, like: list[str] | None = None, top: int = 100,
                    labels: Labels | None = None, cache_root: Any = None, phrase_code: bool | None = None,
                    weak: bool = True) -> Concepts:
    """Turn a concept query (and examples) into ranked, weighted latents of the store's SAE.

    Args:
        query: comma-separated terms: latent ids, words/phrases, `-term` to exclude.
        store: the embedded corpus (which latents exist, fire, and what they are called).
        like: example texts whose strongest latents are added.
        top: at most this many latents per phrase or example (the paper's k = 100); a phrase keeps
            only the labels close to its best match, often fewer.
        phrase_code: also select the latents a phrase's own text activates (default: when the store's
            SAE is document-level), for a phrase that some label matches.
        weak: keep the matches of a phrase whose best label is weak (below WEAK_SIMILARITY); False:
            such a phrase selects nothing (search does this, so `zzzqqq` finds nothing).

    Returns the ranked selection, with `notes` warning of phrases whose matches are weak.

    Examples:
        >>> select_concepts("sarcasm, irony, -politics", load_store("tweets.parquet")).frame()  # doctest: +SKIP
    """
    from saeembed.labels import labels_for

    labels = labels if labels is not None else labels_for(store)
    terms = _terms(query)
    needs_counts = like or any(not t.lstrip("-").strip().isdigit() for t in terms)
    # one pass over the store's indices (skipped for a query of ids): which latents fire, and how often
    counts = (store.counts if isinstance(store, StoreStream) else document_frequency(store.matrix)) \
        if needs_counts else None
    frequency = counts / max(store.n_docs, 1) if counts is not None else None
    fires = frequency > 0 if frequency is not None else None
    chosen: dict[int, Pick] = {}
    excluded: set[int] = set()
    notes: list[str] = []
    own_code = phrase_code if phrase_code is not None else store.meta["sae"].get("reads") == "document"
    bare_terms = [term.lstrip("-").strip() for term in terms]
    phrases = [bare for bare in bare_terms if own_code and not bare.isdigit()]
    words = [bare for bare in bare_terms if not bare.isdigit()]
    matcher = None
    if words:
        assert fires is not None  # a word is not a latent id, so needs_counts held and the latents were counted
        matcher = _LabelMatcher(store, labels, fires, words, top, cache_root)
    matched = np.array([latent for picks, _ in (matcher.picks.values() if matcher else []) for latent in picks],
                       np.int64)
    # One model run reads every phrase and example (the reader and SAE load once per query).
    codes = dict(zip(phrases + list(like or []),
                     _example_latents(phrases + list(like or []), store, frequency, top, also=matched)))
    for term, bare in zip(terms, bare_terms):
        picked, term_notes = _term_latents(bare, store, matcher)
        notes += term_notes
        if bare in phrases and picked:  # a phrase's own latents join only a phrase some label is about
            picked = {**_phrase_latents(bare, codes[bare]), **picked}
        if not weak and any(note.startswith("weak matches") for note in term_notes):
            picked = {}  # a word no label is really about selects nothing unless asked (`weak=True`)
            notes[-len(term_notes):] = [_weak_refused(bare, note) if note.startswith("weak matches") else note
                                        for note in term_notes]
        if term.startswith("-"):
            excluded.update(picked)
        else:
            _keep_best(chosen, picked)
    for example in like or []:
        _keep_best(chosen, codes[example])
    ranked = sorted(((pick[0], latent) for latent, pick in chosen.items() if latent not in excluded),
                    key=lambda item: -item[0])
    if not ranked:
        raise ConceptError(f"the concept query {query!r} selects no latent that fires in {store.path}"
                           + "".join(f"; {note}" for note in notes)
                           + "; try other words, latent ids, or --like with an example")
    latents = np.array([latent for _, latent in ranked], dtype=np.int64)
    return Concepts(latents, rank_weights(len(latents)), [labels.get(int(i)) for i in latents],
                    [chosen[int(i)][1] for i in latents], query or "", [chosen[int(i)][2] for i in latents], notes,
                    sorted(excluded), [labels.score.get(int(i)) for i in latents])


def _keep_best(chosen: dict[int, Pick], picked: dict[int, Pick]) -> None:
    """Merge a term's picks: a latent several terms select keeps its best score (and that term's why)."""
    for latent, pick in picked.items():
        if latent not in chosen or pick[0] > chosen[latent][0]:
            chosen[latent] = pick


def _terms(query: str | None) -> list[str]:
    return [t.strip() for t in (query or "").split(",") if t.strip()]


class _LabelMatcher:
    """Every word term of a query matched against the labels of the latents that fire: the labels', the
    terms' and the matched label words' embeddings each computed in one batch per query (per term, a
    query of 300 phrases read the dense cache 600 times: 98 s; now 2 s)."""

    def __init__(self, store: Store | StoreStream, labels: Labels, fires: np.ndarray, terms: list[str], top: int,
                 cache_root: Any) -> None:
        from saeembed.embedding.dense import DenseCache

        candidates = [i for i in labels.label if i < store.d_sae and fires[i] and not _fragments(labels.label[i])]
        if not candidates:
            raise ConceptError("no latent that fires in this store has a label to match words against; "
                               "generate labels (`saeembed labels generate`) or give latent ids")
        texts = [labels.label[i] for i in candidates]
        cache = DenseCache(cache_root)
        unique_terms = list(dict.fromkeys(terms))
        vectors = cache.embed(texts + unique_terms)
        label_vectors, term_vectors = vectors[:len(texts)], vectors[len(texts):]
        found: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        for term, term_vector in zip(unique_terms, term_vectors):
            similarity = label_vectors @ term_vector
            words = set(_WORD.findall(term.lower()))
            bonus = np.array([KEYWORD_BONUS if words and words <= set(_WORD.findall(t.lower())) else 0.0
                              for t in texts])
            score = similarity + bonus
            keep = _close_to_best(similarity, bonus > 0)
            best = keep[np.argsort(-score[keep], kind="stable")][:top]
            found[term] = (score, best, _match_notes(term, texts, score, len(best)))
        parts = {int(i): _label_words(texts[i]) for _, best, _ in found.values() for i in best}
        unique = sorted({p for words in parts.values() for p in words})
        word_vectors = dict(zip(unique, cache.embed(unique))) if unique else {}
        self.picks: dict[str, tuple[dict[int, Pick], list[str]]] = {}
        for term, term_vector in zip(unique_terms, term_vectors):
            score, best, notes = found[term]
            matched = _matched_words(term, [parts[int(i)] for i in best], term_vector, word_vectors)
            self.picks[term] = ({int(candidates[i]): (float(score[i]), f"label ~ {term!r} {score[i]:.2f}", words_)
                                 for i, words_ in zip(best, matched)}, notes)


def _term_latents(term: str, store: Store | StoreStream,
                  matcher: _LabelMatcher | None) -> tuple[dict[int, Pick], list[str]]:
    """latent -> pick for one term, and notes on how well it matched."""
    if term.isdigit():
        latent = int(term)
        if latent >= store.d_sae:
            raise ConceptError(f"latent {latent} does not exist: the SAE has {store.d_sae} latents")
        return {latent: (float("inf"), "id", [])}, []  # named explicitly: first
    assert matcher is not None  # made whenever the query has a word term
    return matcher.picks[term]


def _close_to_best(similarity: np.ndarray, has_words: np.ndarray) -> np.ndarray:
    """Indices of the labels close enough to the best match: at least `RELATIVE` of its similarity, or
    containing the term's words; never below `MIN_SIMILARITY`. Relative to the best (rather than a
    fixed bar) because how similar a good label is depends on the phrase: a long phrase is never
    very close to a three-word label."""
    cut = max(MIN_SIMILARITY, RELATIVE * float(similarity.max(initial=0)))
    return np.flatnonzero((similarity >= cut) | (has_words & (similarity >= MIN_SIMILARITY)))


def _match_notes(term: str, texts: list[str], score: np.ndarray, n_kept: int) -> list[str]:
    """A warning when the term's best matching label is weak, or when it selects nothing."""
    best = int(np.argmax(score))
    closest = f"the closest label, {texts[best]!r}, has similarity {score[best]:.2f}"
    if not n_kept:
        return [f"nothing selected for {term!r}: no label is about it ({closest}, below {MIN_SIMILARITY})"]
    if score[best] < WEAK_SIMILARITY:
        return [f"weak matches for {term!r}: {closest} (below {WEAK_SIMILARITY}), so its {n_kept} latents "
                f"may not be about it; check their labels, or select by latent ids or examples"]
    return []


def _weak_refused(term: str, note: str) -> str:
    """The weak-match note of a phrase that therefore selects nothing."""
    closest = note.split(": ", 1)[1].split(" (below")[0]
    return (f"{term!r} matches no label well ({closest}, below {WEAK_SIMILARITY}), so it selects nothing "
            f"(weak=True, or --weak, uses its weak matches)")


def _matched_words(term: str, parts: list[list[str]], term_vector: np.ndarray,
                   word_vectors: dict[str, np.ndarray]) -> list[list[str]]:
    """For each label (its words, `parts`), the words that match the term: the term's own (content) words, or
    words whose embedding is within `CLOSE_WORD` of the term's."""
    own = {w for w in _WORD.findall(term.lower()) if w not in STOPWORDS}
    return [[p for p in words if own & set(_WORD.findall(p.lower())) or float(word_vectors[p] @ term_vector)
             >= CLOSE_WORD] for words in parts]


def _fragments(label: str) -> bool:
    """A label of fragments only (`z`, `cy · q`, `«!» opening the text`): nothing a person's words are about."""
    return all(len(_PLACE.sub("", word).strip(" «»")) <= FRAGMENT for word in _label_words(label) or [label])


_PLACE = re.compile(r"\s+(opening the text|starting a line)$")  # where an offline label's peak token stands


def _label_words(label: str) -> list[str]:
    """The words of a label: the parts of an offline label (`football · goal · league`), the content
    words of a sentence label (`mentions of football matches`)."""
    if " · " in label:
        return [part for part in label.split(" · ") if part.strip()]
    return list(dict.fromkeys(w for w in _WORD.findall(label.lower()) if w not in STOPWORDS))


def _phrase_latents(phrase: str, code: dict[int, Pick]) -> dict[int, Pick]:
    """The latents the phrase's own text activates (`code`), scored below any label match (in (0, MIN_SIMILARITY)),
    strongest first: measured on 18 property queries, ranking them first lowered search MAP (0.495 vs
    0.513 for labels alone), ranking them after raised it (0.518) and gave clustering the coverage that
    few-word labels miss."""
    scale = max((pick[0] for pick in code.values()), default=1.0)
    return {latent: (MIN_SIMILARITY * score / scale * 0.99, f"phrase {phrase!r}", [])
            for latent, (score, _, _) in code.items()}


def _example_latents(examples: list[str], store: Store | StoreStream, frequency: np.ndarray | None,
                     top: int, also: np.ndarray = np.zeros(0, np.int64)) -> list[dict[int, Pick]]:
    """Each example's strongest latents, read with the store's own reader and SAE in one run; latents
    firing in most documents of the store are left out (they would select everything). `frequency` is
    None only when there are no examples (a query of latent ids alone). A store read by parts gathers the
    latents kept here, and `also` (the labels' matches, scored next), in one pass."""
    if not examples:
        return []
    assert frequency is not None  # examples (phrases or `like`) make select_concepts count the latents
    from saeembed.embedding.open_store import config_of, embed_records

    matrix = embed_records([{"text": example} for example in examples], config_of(store)).matrix
    if isinstance(store, StoreStream):  # the latents kept below gathered in one pass (for their scales)
        active = np.unique(matrix.indices)
        store.keep(np.union1d(active[(frequency[active] > 0) & (frequency[active] <= 0.5)], also))
    out: list[dict[int, Pick]] = []
    for row, example in enumerate(examples):
        vector = matrix.getrow(row).tocoo()
        keep = (frequency[vector.col] > 0) & (frequency[vector.col] <= 0.5)
        latents = vector.col[keep]
        values = vector.data[keep] / activation_scale(store, latents)
        best = np.argsort(-values)[:top]
        short = example if len(example) <= 40 else example[:40] + "…"
        out.append({int(latents[i]): (float(values[i]), f"example {short!r}", []) for i in best})
    return out
