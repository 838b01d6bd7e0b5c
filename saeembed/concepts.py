"""Concepts in the user's words -> a weighted, ranked set of latents (shared by cluster, search, risk).

A query is a comma-separated list of terms:
- latent ids (`12`, `407`);
- words or phrases (`sarcasm`, `topic of the sentence`): latents ranked by the cosine similarity of
  their label's sentence embedding to the term's (the default dense model), plus a bonus when the
  label contains the term's words;
- `-term` excludes what the term selects.
`like=[...]` adds examples: each is embedded with the store's own reader + SAE and its strongest
latents (activation relative to the store's typical activation) are taken.

The selection is always returned whole (ids, labels, weights, why) so a user can see and edit it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from saeembed.errors import SaeEmbedError
from saeembed.store import Store, column_entries

TEMPERATURE = 0.2  # the paper's rank weighting: weight of rank r of k is exp(-(r / k) / T)
KEYWORD_BONUS = 0.15
_WORD = re.compile(r"[a-z0-9']+")


class ConceptError(SaeEmbedError):
    """A concept query selects nothing usable."""


@dataclass
class Concepts:
    """Selected latents, strongest first, with rank weights in (0, 1]."""

    latents: np.ndarray
    weights: np.ndarray
    labels: list[str | None]
    why: list[str]
    """What selected each latent: `id`, `label ~ 'term' 0.61`, `example 'text…'`."""
    query: str

    def __len__(self) -> int:
        return len(self.latents)

    def frame(self) -> Any:
        import polars as pl

        return pl.DataFrame({"latent": self.latents.astype(np.int32), "weight": self.weights,
                             "label": pl.Series(self.labels, dtype=pl.Utf8), "why": self.why})


def rank_weights(k: int, temperature: float = TEMPERATURE) -> np.ndarray:
    """exp(-(r/k)/T) for ranks r = 0..k-1."""
    return np.exp(-(np.arange(k) / max(k, 1)) / temperature)


def activation_scale(store: Store, latents: np.ndarray, quantile: float = 0.9,
                     entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """For each of `latents`, the `quantile` of its non-zero activations in the store (1 where it never
    fires): dividing by it puts every latent on a comparable scale. `entries` are the columns'
    non-zeros when the caller already has them (`column_entries`)."""
    _, which, values = entries if entries is not None else column_entries(store.matrix, latents)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(latents) + 1))
    scale = np.ones(len(latents), np.float32)
    for j in np.flatnonzero(np.diff(bounds)):
        scale[j] = max(float(np.quantile(values[order[bounds[j]: bounds[j + 1]]], quantile)), 1e-6)
    return scale


def select_concepts(query: str | None, store: Store, *, like: list[str] | None = None, top: int = 100,
                    labels: Any = None, cache_root: Any = None) -> Concepts:
    """Turn a concept query (and examples) into ranked, weighted latents of the store's SAE.

    Args:
        query: comma-separated terms: latent ids, words/phrases, `-term` to exclude.
        store: the embedded corpus (which latents exist, fire, and what they are called).
        like: example texts whose strongest latents are added.
        top: latents kept per phrase or example (the paper's k = 100).

    Examples:
        >>> select_concepts("sarcasm, irony, -politics", load_store("tweets.parquet")).frame()  # doctest: +SKIP
    """
    from saeembed.labels import labels_for

    labels = labels if labels is not None else labels_for(store)
    terms = _terms(query)
    needs_counts = like or any(not t.lstrip("-").strip().isdigit() for t in terms)
    # one pass over the store's indices (skipped for a query of ids): which latents fire, and how often
    frequency = np.bincount(store.matrix.indices, minlength=store.d_sae) / max(store.n_docs, 1) if needs_counts \
        else None
    fires = frequency > 0 if frequency is not None else None
    chosen: dict[int, tuple[float, str]] = {}
    excluded: set[int] = set()
    for term in terms:
        negative = term.startswith("-")
        picked = _term_latents(term.lstrip("-").strip(), store, labels, fires, top, cache_root)
        if negative:
            excluded.update(picked)
        else:
            for latent, (score, why) in picked.items():
                if latent not in chosen or score > chosen[latent][0]:
                    chosen[latent] = (score, why)
    for example in like or []:
        for latent, (score, why) in _example_latents(example, store, frequency, top).items():
            if latent not in chosen or score > chosen[latent][0]:
                chosen[latent] = (score, why)
    ranked = sorted(((s, latent, why) for latent, (s, why) in chosen.items() if latent not in excluded),
                    key=lambda item: -item[0])
    if not ranked:
        raise ConceptError(f"the concept query {query!r} selects no latent that fires in {store.path}; "
                           f"try other words, latent ids, or --like with an example")
    latents = np.array([latent for _, latent, _ in ranked], dtype=np.int64)
    return Concepts(latents, rank_weights(len(latents)), [labels.get(int(i)) for i in latents],
                    [why for _, _, why in ranked], query or "")


def _terms(query: str | None) -> list[str]:
    return [t.strip() for t in (query or "").split(",") if t.strip()]


def _term_latents(term: str, store: Store, labels: Any, fires: np.ndarray | None, top: int,
                  cache_root: Any) -> dict[int, tuple[float, str]]:
    if term.isdigit():
        latent = int(term)
        if latent >= store.d_sae:
            raise ConceptError(f"latent {latent} does not exist: the SAE has {store.d_sae} latents")
        return {latent: (float("inf"), "id")}  # named explicitly: first
    from saeembed.dense import DenseCache

    candidates = [i for i in labels.label if i < store.d_sae and fires[i]]
    if not candidates:
        raise ConceptError("no latent that fires in this store has a label to match words against; "
                           "generate labels (`saeembed labels generate`) or give latent ids")
    texts = [labels.label[i] for i in candidates]
    cache = DenseCache(cache_root)
    vectors = cache.embed(texts + [term])
    similarity = vectors[:-1] @ vectors[-1]
    words = set(_WORD.findall(term.lower()))
    bonus = np.array([KEYWORD_BONUS if words and words <= set(_WORD.findall(t.lower())) else 0.0 for t in texts])
    score = similarity + bonus
    best = np.argsort(-score)[:top]
    return {int(candidates[i]): (float(score[i]), f"label ~ {term!r} {score[i]:.2f}") for i in best}


def _example_latents(example: str, store: Store, frequency: np.ndarray, top: int) -> dict[int, tuple[float, str]]:
    """The example's strongest latents, read with the store's own reader and SAE; latents firing in
    most documents of the store are left out (they would select everything)."""
    from saeembed.sources import config_of, embed_records

    vector = embed_records([{"text": example}], config_of(store)).matrix.getrow(0).tocoo()
    keep = (frequency[vector.col] > 0) & (frequency[vector.col] <= 0.5)
    latents = vector.col[keep]
    values = vector.data[keep] / activation_scale(store, latents)
    best = np.argsort(-values)[:top]
    short = example if len(example) <= 40 else example[:40] + "…"
    return {int(latents[i]): (float(values[i]), f"example {short!r}") for i in best}
