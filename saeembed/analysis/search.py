"""Property-based retrieval: documents ranked by how strongly they carry the concepts of a query.

The paper's scoring: each latent is divided by the 90th percentile of its non-zero activations in the
store; the query's latents (its top k, default 100) are weighted by rank, exp(-(r/k)/T) with T = 0.2;
a document's score is the weighted sum. Then the query is expanded by pseudo-relevance feedback
(Rocchio): the mean scaled code of its first `FEEDBACK_DOCS` results joins the query's weights, so
latents that co-fire with the query's in the documents it finds count too: a few-word label misses
much of a concept (`role-play, playing a character` selects `persona` and `act`; its first results,
19 of 20 role-play answers, add the latents those answers share). Like all feedback it follows the
first results: where they are mostly wrong it drifts (`programming code`, whose first results were
about software and tools). Only documents the query's own latents fire in are ranked. Dense retrieval
(cosine of sentence embeddings) is there for comparison, and hybrid fuses both rankings by
reciprocal rank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from saeembed.analysis.concepts import Concepts, activation_scale, select_concepts
from saeembed.analysis.config import FEEDBACK_SUPPORT, SearchConfig, check_feedback
from saeembed.analysis.summaries import Summary, count
from saeembed.analysis.where import filter_rows
from saeembed.store import Store, column_entries, document_frequency
from saeembed.stream import StoreStream

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
# Pseudo-relevance feedback. Rocchio's beta at SMART's standard 0.75; 20 documents, within the 10-30
# of the IR literature. On the harness's 18 property queries (benchmarks/meaning.py, section d) every
# setting of 10-100 documents and beta 0.5-1 lifted SAE MAP from 0.518 to 0.541-0.559 (RESULTS.md);
# these defaults give 0.545, better on 12 queries, worse on 6 (with the relabelled bundle: 0.513 -> 0.541).
FEEDBACK_DOCS = SearchConfig.feedback
FEEDBACK_WEIGHT = 0.75


@dataclass
class SearchResult:
    table: pl.DataFrame
    """polars DataFrame: rank, id, score, then (SAE scores) top_latents and top_labels (the latents
    contributing most to the score, strongest first, and their labels) and peak_start, peak_end (the
    character span in `text` of the strongest one's peak token; null when it has none), text as stored,
    and the store's other fields. Renderers mark the span; the data never holds marks."""
    concepts: Concepts | None
    mode: str
    n_candidates: int
    """Documents left after `where`."""
    n_matched: int | None = None
    """Candidates with a positive SAE score: documents at least one of the query's own latents fires in
    (sae and hybrid modes; None in dense mode). In sae mode only these are listed, so the table has
    min(top, n_matched) rows: fewer than `top`, or none, when few documents carry the concepts."""
    top: int | None = None
    """How many results were asked for (`SearchConfig.top`)."""

    def summary(self, query: str | None = None) -> SearchSummary:
        """The record every renderer reads (`SearchSummary`); `query`: the query as typed (default the one
        its concepts were selected by; dense search has none)."""
        concepts = self.concepts
        added = sum(why.startswith("feedback") for why in concepts.why) if concepts is not None else 0
        return SearchSummary(
            query=query if query is not None else (concepts.query if concepts is not None else None),
            mode=self.mode, n_candidates=self.n_candidates, n_matched=self.n_matched, n_listed=len(self.table),
            n_query_latents=len(concepts) - added if concepts is not None else 0, n_feedback_latents=added,
            notes=[*(concepts.notes if concepts is not None else []), *self._shortfall()])

    def _shortfall(self) -> list[str]:
        """Why fewer than `top` documents are listed (sae mode lists only documents the query's latents fire
        in)."""
        matched, top = self.n_matched, self.top
        if self.mode != "sae" or matched is None or top is None or matched >= top:
            return []
        searched = f"{self.n_candidates:,} documents searched"
        if not matched:
            return [f"no document carries the query's latents ({searched}); try other words, an example with "
                    f"--like, or see which latents it picks with `saeembed concepts`"]
        return [f"only {matched:,} of the {searched} carry the query's latents: {matched:,} listed, not {top:,}"]


# How each mode scores a document, in words (every renderer says it the same way).
MODE_SCORES = {
    "sae": "each latent scaled by its 90th percentile in the store, the query's latents weighted by rank",
    "hybrid": "concept and dense rankings fused by reciprocal rank",
    "dense": "cosine of sentence embeddings"}


@dataclass(frozen=True)
class SearchSummary(Summary):
    """What `search` found, as one record (`saeembed.analysis.summaries`)."""

    query: str | None
    mode: str
    n_candidates: int
    """Documents searched (after `where`)."""
    n_matched: int | None
    n_listed: int
    n_query_latents: int
    """Latents the query selected (0 in dense mode)."""
    n_feedback_latents: int
    """Latents added from the first results (feedback)."""
    notes: list[str]

    def lines(self) -> list[str]:
        lines = []
        if self.mode != "dense":
            lines.append(f"{count(self.n_query_latents, 'latent')} from the query (see `saeembed concepts`)"
                         + (f", {self.n_feedback_latents:,} more from its first results (--feedback)"
                            if self.n_feedback_latents else ""))
        lines.append(f"{count(self.n_listed, 'document')} of {self.n_candidates:,} searched"
                     + (f' for "{self.query}"' if self.query else "") + f" ({self.mode}: {MODE_SCORES[self.mode]})")
        return lines


class ConceptScores(NamedTuple):
    """The SAE ranking of a concept query."""

    scores: np.ndarray
    """Per document of the store (0 where none of the query's own latents fires)."""
    concepts: Concepts
    """The query's latents and weights after feedback (latents it added say so in `why`)."""
    weights: np.ndarray
    """Per latent of `concepts`: its weight divided by its 90th percentile in the store, so a score is
    sum(weight x activation)."""


def search(store: Store | StoreStream, query: str, config: SearchConfig | None = None, *, like: list[str] | None = None,
           where: str | None = None, labels: Labels | None = None, dense: np.ndarray | None = None) -> SearchResult:
    """The `config.top` documents of `store` for a concept query (see `saeembed.analysis.concepts`).

    In sae mode only documents with a positive score are listed (at least one of the query's own latents
    fires in them): a document with score 0 does not carry the query at all, so fewer than `top`
    documents, or none, may come back; `SearchResult.n_matched` says how many matched. In hybrid mode
    the SAE ranking ranks only those documents too; dense retrieval ranks every candidate.

    Args:
        store: loaded, or read part by part (`saeembed.stream.StoreStream`: the same results; one score per
            document is held, and the documents listed are read by row).
        config: top, mode (sae, dense or hybrid), k (latents kept per phrase or example of the query),
            feedback (expand the query with the latents of its first this many results, see
            `concept_scores`; 0: the paper's scoring alone), weak (also search with the latents of words no
            label is really about: their best label match below `concepts.WEAK_SIMILARITY`; by default such
            words select nothing, and a query of only such words is refused, saying so).
        where: a condition on the store's own fields, e.g. `topic = 'climate' AND n_tokens < 200`
            (`saeembed.analysis.where`: no functions, subqueries or file access).
        dense: [n_docs, dim] document embeddings; default the store's `dense` column, else computed.

    Examples:
        >>> search(load_store("tweets.parquet"), "sarcastic remark", SearchConfig(top=10)).table  # doctest: +SKIP
    """
    try:
        return _search(store, query, config or SearchConfig(), like, where, labels, dense)
    finally:
        if isinstance(store, StoreStream):
            store.release_columns()  # the query's columns it kept: a stream searched again holds no more


def _search(store: Store | StoreStream, query: str, config: SearchConfig, like: list[str] | None, where: str | None,
            labels: Labels | None, dense: np.ndarray | None) -> SearchResult:
    import polars as pl

    from saeembed.labels import labels_for

    top, mode, k, feedback, weak = config.top, config.mode, config.k, config.feedback, config.weak
    labels = labels if labels is not None else labels_for(store)
    candidates = _candidates(store, where)
    concepts = None
    rankings: list[np.ndarray] = []
    weights = None
    if mode in ("sae", "hybrid"):
        ranked = concept_scores(store, select_concepts(query, store, like=like, top=k, labels=labels, weak=weak),
                                feedback=feedback, candidates=candidates, labels=labels)
        concepts, weights = ranked.concepts, ranked.weights
        rankings.append(ranked.scores)
    if mode in ("dense", "hybrid"):
        rankings.append(dense_scores(store, query, dense))
    matched = candidates[rankings[0][candidates] > 0] if concepts is not None else None
    if mode == "hybrid":
        score = reciprocal_rank_fusion(rankings, candidates, positive_only=(0,))
    else:
        score = rankings[0]
    shown = candidates
    if mode == "sae":
        assert matched is not None  # sae mode selected concepts above, so `matched` was computed
        shown = matched
    order = _top(score, shown, top)
    # a store read by parts gives only the documents listed; their rows are then 0, 1, ...
    listed, at = (store.fetch(order), np.arange(len(order))) if isinstance(store, StoreStream) else (store, order)
    table = listed.frame[at].with_columns(pl.Series("score", score[order]),
                                          pl.Series("rank", np.arange(1, len(order) + 1, dtype=np.int32)))
    if concepts is not None and weights is not None:  # set together, in sae and hybrid mode
        table = table.with_columns(*_explain(listed, at, concepts, weights, labels))
    explained = ["top_latents", "top_labels", "peak_start", "peak_end"] if weights is not None else []
    first = ["rank", "id", "score", *explained, "text"]
    rest = [c for c in table.columns if c not in first and c not in ("n_tokens", "dense")]
    return SearchResult(table.select(first + rest), concepts, mode, len(candidates),
                        None if matched is None else len(matched), top)


def concept_scores(store: Store | StoreStream, concepts: Concepts, *, feedback: int = FEEDBACK_DOCS,
                   candidates: np.ndarray | None = None, labels: Labels | None = None) -> ConceptScores:
    """The SAE ranking `search` uses: the paper's score (`sae_scores`), then the query expanded by
    pseudo-relevance feedback: the mean p90-scaled code of its first `feedback` results among
    `candidates` (default every document), latents firing in at least `FEEDBACK_SUPPORT` of them,
    scaled to a maximum of 1, is added x `FEEDBACK_WEIGHT` to the query's weights (Rocchio 1971).
    Documents none of the query's own latents fire in keep score 0: feedback re-ranks the documents
    that carry the query, it does not bring in others. A query of latent ids alone is taken as given
    (no feedback), and latents its `-term`s exclude are not added. `labels` name the latents feedback
    adds (default the labels found for the store's SAE)."""
    check_feedback("concept_scores", feedback)
    own = _Columns(store, concepts.latents)
    scores = own.scores(concepts.weights, store.n_docs)
    if feedback == 0 or all(why == "id" for why in concepts.why):
        return ConceptScores(scores, concepts, concepts.weights / own.scale)
    pool = np.arange(store.n_docs) if candidates is None else np.asarray(candidates)
    pool = pool[scores[pool] > 0]
    first = np.sort(pool[np.argsort(-scores[pool], kind="stable")[:feedback]])
    code = store.fetch(first, fields=[]).matrix if isinstance(store, StoreStream) else store.matrix[first]
    support = document_frequency(code)
    support[concepts.excluded] = 0
    latents = np.flatnonzero(support >= FEEDBACK_SUPPORT)
    if not len(latents):
        return ConceptScores(scores, concepts, concepts.weights / own.scale)
    added = np.setdiff1d(latents, concepts.latents)
    extra = _Columns(store, added)  # only the added latents' columns are read again
    scale_of = dict(zip([*concepts.latents.tolist(), *added.tolist()], [*own.scale.tolist(), *extra.scale.tolist()]))
    _, which, values = column_entries(code, latents)
    scale = np.array([scale_of[j] for j in latents.tolist()])
    mean = np.bincount(which, weights=values / scale[which], minlength=len(latents)) / len(first)
    expanded = _expanded(store, concepts, latents, FEEDBACK_WEIGHT * mean / mean.max(), support[latents],
                         len(first), labels)
    weight_of = dict(zip(expanded.latents.tolist(), expanded.weights.tolist()))
    new_scores = own.scores(np.array([weight_of[j] for j in concepts.latents.tolist()]), store.n_docs) \
        + extra.scores(np.array([weight_of[j] for j in added.tolist()]), store.n_docs)

    weights = expanded.weights / np.array([scale_of[j] for j in expanded.latents.tolist()])
    return ConceptScores(np.where(scores > 0, new_scores, 0.0), expanded, weights)


def _expanded(store: Store | StoreStream, concepts: Concepts, latents: np.ndarray, added_weight: np.ndarray,
              support: np.ndarray, n_first: int, labels: Labels | None) -> Concepts:
    """`concepts` with `added_weight` added to `latents`' weights (new latents join with why =
    feedback), rescaled to a maximum of 1 (the ranking does not change by it), strongest first."""
    own = concepts.latents.tolist()
    weight, why = dict(zip(own, concepts.weights.tolist())), dict(zip(own, concepts.why))
    names, matched = dict(zip(own, concepts.labels)), dict(zip(own, concepts.matched or [[] for _ in own]))
    for latent, value, n in zip(latents.tolist(), added_weight.tolist(), support.tolist()):
        weight[latent] = weight.get(latent, 0.0) + value
        why.setdefault(latent, f"feedback: fires in {n} of the first {n_first} results")
    if len(weight) > len(own):
        from saeembed.labels import labels_for

        named = labels if labels is not None else labels_for(store)
        names.update({latent: named.get(latent) for latent in weight if latent not in names})
    order = sorted(weight, key=lambda latent: -weight[latent])
    top = max(weight.values())
    return replace(concepts, latents=np.array(order, dtype=np.int64),
                   weights=np.array([weight[latent] / top for latent in order]),
                   labels=[names[latent] for latent in order],
                   why=[why[latent] for latent in order], matched=[matched.get(latent, []) for latent in order])


class _Columns:
    """Some latents' columns: each latent's 90th percentile in the store, and documents' scores from weights.
    Their entries are gathered once (`column_entries`; a store read by parts keeps them across calls,
    `StoreStream.column_entries`); where they are too many to keep, each use reads them a group at a time
    from the parts' latent indexes (`StoreStream.column_groups`: one group's entries held at a time, and one
    score per document)."""

    def __init__(self, store: Store | StoreStream, latents: np.ndarray) -> None:
        self.store, self.latents = store, np.asarray(latents, np.int64)
        if isinstance(store, StoreStream):  # the scale from each latent's kept values, unsorted
            self.entries = store.column_entries(self.latents)
            self.scale = activation_scale(store, self.latents)
        else:
            self.entries = column_entries(store.matrix, self.latents)
            self.scale = activation_scale(store, self.latents, entries=self.entries)

    def scores(self, weights: np.ndarray, n_docs: int) -> np.ndarray:
        """Per document sum(weight / scale x activation) over these latents."""
        weight = weights / self.scale
        if self.entries is not None:
            rows, which, values = self.entries
            return np.bincount(rows, weights=values * weight[which], minlength=n_docs)
        assert isinstance(self.store, StoreStream)
        total = np.zeros(n_docs)
        for at, (rows, which, values) in self.store.column_groups(self.latents):
            total += np.bincount(rows, weights=values * weight[at][which], minlength=n_docs)
        return total


def _candidates(store: Store | StoreStream, where: str | None) -> np.ndarray:
    """The rows `where` keeps (`filter_rows`); a store read by parts is filtered part by part."""
    if not isinstance(store, StoreStream):
        return filter_rows(store.frame, where)
    if not where or not where.strip():
        return np.arange(store.n_docs)
    from saeembed.analysis.where import parse_filter

    # only the fields the filter names (and n_tokens, so a constant filter still counts the rows): checked first
    fields = sorted({*parse_filter(where, store.columns).meta.root_names(), "n_tokens"})
    kept = store.map(filter_rows, [where] * len(store.files), columns=fields)
    return np.concatenate([rows + start for rows, start in zip(kept, store.part_rows)])


def sae_scores(store: Store | StoreStream, concepts: Concepts) -> tuple[np.ndarray, np.ndarray]:
    """Per document the paper's score, and the weight of each selected latent (rank weight / its
    90th percentile in the store), so a score is sum(weight x activation)."""
    columns = _Columns(store, concepts.latents)
    return columns.scores(concepts.weights, store.n_docs), concepts.weights / columns.scale


def dense_scores(store: Store | StoreStream, query: str, dense: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each document's sentence embedding with the query's."""
    from saeembed.embedding.dense import DenseCache, sentence_embeddings

    query_vector = sentence_embeddings([query])[0]
    if dense is None and isinstance(store, StoreStream):  # part by part: one score per document is kept
        column = ["dense"] if "dense" in store.columns else ["text"]
        return np.concatenate(list(store.map(_dense_work, [query_vector] * len(store.files), columns=column)))
    if dense is None:
        assert isinstance(store, Store)
        dense = (np.asarray(store.frame["dense"].to_numpy(), np.float32) if "dense" in store.frame.columns
                 else DenseCache().embed(store.frame["text"].to_list()))
    return dense @ query_vector


def _dense_work(frame: pl.DataFrame, query_vector: np.ndarray) -> np.ndarray:
    """One part's cosines with the query: its `dense` column, else its texts embedded."""
    from saeembed.embedding.dense import DenseCache

    vectors = (np.asarray(frame["dense"].to_numpy(), np.float32) if "dense" in frame.columns
               else DenseCache().embed(frame["text"].to_list()))
    return vectors @ query_vector


def reciprocal_rank_fusion(scores: list[np.ndarray], candidates: np.ndarray,
                           positive_only: tuple[int, ...] = ()) -> np.ndarray:
    """Sum over rankings of 1 / (60 + rank), ranks counted among the candidates. The rankings listed
    in `positive_only` rank only the candidates they score above 0 (the SAE ranking: a document none
    of the query's latents fire in has no SAE rank, rather than an arbitrary one among the ties)."""
    fused = np.zeros(len(scores[0]))
    for i, score in enumerate(scores):
        ranked = candidates[score[candidates] > 0] if i in positive_only else candidates
        order = ranked[np.argsort(-score[ranked], kind="stable")]
        fused[order] += 1.0 / (RRF_K + np.arange(1, len(order) + 1))
    return fused


def _top(score: np.ndarray, candidates: np.ndarray, top: int) -> np.ndarray:
    """The `top` candidates by score, best first (partial sort: a million scores cost milliseconds)."""
    if len(candidates) > top:
        candidates = candidates[np.argpartition(-score[candidates], top - 1)[:top]]
    return candidates[np.argsort(-score[candidates], kind="stable")]


def _explain(store: Store, rows: np.ndarray, concepts: Concepts, weights: np.ndarray, labels: Labels) -> list[Any]:
    """Per result: its three strongest contributing latents and their labels, and the character span of the
    strongest one's peak token in the text (renderers mark it)."""
    import polars as pl

    from saeembed.spans import peak_span

    weight_of = dict(zip(concepts.latents.tolist(), weights.tolist()))
    tops: list[list[int]] = []
    names: list[list[str | None]] = []
    starts: list[int | None] = []
    ends: list[int | None] = []
    for row in rows:
        start, stop = store.matrix.indptr[row], store.matrix.indptr[row + 1]
        active, values = store.matrix.indices[start:stop], store.matrix.data[start:stop]
        contribution = values * np.array([weight_of.get(int(latent), 0.0) for latent in active])
        strongest = np.argsort(-contribution)[:3]
        best = [int(i) for i in active[strongest][contribution[strongest] > 0]]
        tops.append(best)
        names.append([labels.get(i) for i in best])
        span = peak_span(store, int(row), best[0]) if best else None
        starts.append(span[0] if span else None)
        ends.append(span[1] if span else None)
    return [pl.Series("top_latents", tops, dtype=pl.List(pl.Int64)),
            pl.Series("top_labels", names, dtype=pl.List(pl.Utf8)),
            pl.Series("peak_start", starts, dtype=pl.Int64), pl.Series("peak_end", ends, dtype=pl.Int64)]
