"""The offline labeler: a latent's label is the token it most often peaks on plus contrastive keywords
of its strongest documents, made from part of the documents and scored on the rest (held-out
detection accuracy, 0.5 = chance); no LLM needed."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from saeembed.labels.store import LabelError, Labels
from saeembed.labels.words import _TEMPLATE, _WORD, ROLE_MARKERS, STOPWORDS, _is_role_marker
from saeembed.spans import peak_span
from saeembed.store import Store, document_frequency

KEEP_SCORE = 0.75  # the paper's judge keeps a label whose held-out detection accuracy reaches this
MIN_LIFT = 1.5  # a keyword is at least this many times more common in the top documents than elsewhere
HOLDOUT_POSITIVES = 20  # held-out documents per label judged as positives (and as many negatives)
MIN_HOLDOUT_POSITIVES = 5  # below this a held-out accuracy is noise: the score is None
_ANY_WORD = re.compile(r"[a-z0-9']+")


def offline_labels(store: Store, *, holdout: float = 0.3, seed: int = 0, top_docs: int = 20,
                   contrast_docs: int = 50, n_keywords: int = 3, min_support: float = 0.2,
                   min_docs: int = 3) -> Labels:
    """Label latents from the store alone, and score each label on documents it was not made from.

    The documents are split at random (`seed`): labels are made from a `1 - holdout` share, scored
    on the rest. A label joins the word the latent most often peaks on in its `top_docs` strongest
    documents with the words most over-represented in its `contrast_docs` strongest documents versus
    the rest (contrastive keywords, at most `n_keywords`), e.g. `def · code · function · python`. A
    keyword must be in at least `min_support` of those strongest documents (a rare word that is
    merely distinctive does not describe what the latent fires on) and `MIN_LIFT` times as common
    there as elsewhere (a word common everywhere does not either). Speaker names and chat-template
    tokens (`ROLE_MARKERS`) are never peak tokens nor keywords. Latents active in fewer than
    `min_docs` of the labelling documents get no label.

    The score (`Labels.score`, in [0, 1]; 0.5 is chance) is the held-out balanced detection accuracy
    of the rule "the document contains one of the label's words": positives are the latent's
    strongest held-out documents (its top 20 by activation, or all it fires in if fewer), negatives
    as many random held-out documents where it does not fire. It mirrors the paper's judge, which
    keeps a label when an LLM reading it detects held-out examples with accuracy >= 0.75, with word
    matching in place of the LLM. It is None with fewer than 5 held-out positives (or negatives),
    and for every label when `holdout` is 0 (all documents then make the labels).
    """
    if not 0 <= holdout < 1:
        raise LabelError(f"holdout must be in [0, 1): the share of documents kept to score labels, got {holdout}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(store.n_docs)
    n_held = int(round(holdout * store.n_docs))
    making, held = store.take(np.sort(order[n_held:])), store.take(np.sort(order[:n_held]))
    peaks: dict[int, str] = {}
    words = _label_words(making, top_docs, contrast_docs, n_keywords, min_support, min_docs, peaks)
    scores = _holdout_scores(held, words, rng) if n_held else {}
    latents = sorted(words)
    shown = {i: [peaks[i], *words[i][1:]] if i in peaks else words[i] for i in latents}
    return Labels(store.d_sae, {i: " · ".join(shown[i]) for i in latents}, {i: "offline" for i in latents},
                  {i: scores.get(i) for i in latents})


def score_summary(labels: Labels) -> dict[str, float | int | None]:
    """How good a set of labels is: how many are scored, their mean and median score, and how many
    fall below `KEEP_SCORE` (the labels the paper's judge would drop)."""
    scores = np.array([s for s in labels.score.values() if s is not None], float)
    if not len(scores):
        return {"scored": 0, "mean": None, "median": None, "below": 0}
    return {"scored": len(scores), "mean": float(scores.mean()), "median": float(np.median(scores)),
            "below": int((scores < KEEP_SCORE).sum())}


def _label_words(store: Store, top_docs: int, contrast_docs: int, n_keywords: int, min_support: float,
                 min_docs: int, peaks: dict[int, str]) -> dict[int, list[str]]:
    """latent -> its label's words: the commonest peak token, then supported contrastive keywords. `peaks`
    gets, per latent with a peak token, how the label shows it: in «», with where it stands when most of
    its peaks stand there (`«-» starting a line`, `«sure» opening the text`): a token latent of an LLM is often about
    the place of a token more than the word."""
    texts = store.frame["text"].to_list()
    doc_word, vocab = _doc_words(texts)
    csc = store.matrix.tocsc()
    freq = document_frequency(csc)
    # Contrast each latent's strongest documents (not every document it touches, which for a broad
    # latent is a third of the corpus) against all the others.
    top = _top_per_column(csc, contrast_docs)
    n_top = np.asarray(top.sum(0)).ravel()
    word_df = np.asarray(doc_word.sum(0)).ravel()
    inside = (top.T @ doc_word).tocsr()  # latents x words: top documents with the word, never dense
    out: dict[int, list[str]] = {}
    for latent in np.flatnonzero(freq >= max(min_docs, 1)):
        row = inside.getrow(latent)
        keywords = _keywords(row.indices, row.data, n_top[latent], word_df, store.n_docs, vocab, min_support)
        peak, where = _commonest_peak(store, texts, csc, int(latent), top_docs)
        parts = [peak] if peak else []
        if peak:
            peaks[int(latent)] = f"«{peak}»" + (f" {where}" if where else "")
        parts += [w for w in keywords if w not in parts][:n_keywords]
        if parts:
            out[int(latent)] = parts
    return out


def _keywords(words: np.ndarray, n_in: np.ndarray, n_top: float, word_df: np.ndarray, n_docs: int,
              vocab: list[str], min_support: float) -> list[str]:
    """Words over-represented in a latent's top documents, best first (information gain per word),
    kept only if in at least `min_support` of those documents."""
    if n_docs <= n_top:  # the latent's top documents are all the documents: nothing to contrast with
        return []
    p_in = n_in / max(n_top, 1)
    p_out = (word_df[words] - n_in) / (n_docs - n_top)
    gain = p_in * np.log((p_in + 1e-3) / (p_out + 1e-3))
    # A word as common elsewhere (a common word, a role-free chat's "think") wins a little gain by
    # chance among 50 documents; it describes nothing, and held out it fires on negatives too.
    contrasted = p_in >= MIN_LIFT * p_out
    order = np.argsort(-gain, kind="stable")
    return [vocab[words[i]] for i in order if gain[i] > 0 and contrasted[i] and p_in[i] >= min_support]


def _commonest_peak(store: Store, texts: list[str], csc: Any, latent: int, n: int) -> tuple[str | None, str]:
    """The token the latent most often peaks on in its n strongest documents, role markers aside, and
    where it stands in most of them ("opening the text", "starting a line"; "" when nowhere in particular)."""
    rows, values = _column(csc, latent)
    peaks: Counter[str] = Counter()
    places: Counter[tuple[str, str]] = Counter()
    for row in rows[np.argsort(-values, kind="stable")[:n]]:
        span = peak_span(store, int(row), latent)
        token = texts[row][span[0]: span[1]].strip().lower() if span else ""
        if token and span and not _is_role_marker(token):  # a token implies a span: `span` narrows it for mypy
            peaks[token] += 1
            places[token, _place(texts[row], span[0])] += 1
    if not peaks:
        return None, ""
    token, count = peaks.most_common(1)[0]
    place, at = max(((p, c) for (t, p), c in places.items() if t == token), key=lambda pc: pc[1])
    return token, place if place and at > count / 2 else ""


def _place(text: str, start: int) -> str:
    """Where a token starting at `start` stands: the document's opening, the start of a line, or ""."""
    before = text[:start]
    if not before.strip():
        return "opening the text"
    return "starting a line" if before.rstrip(" \t").endswith("\n") else ""


def _column(csc: Any, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, activations) where a latent fires, from the CSC matrix."""
    start, stop = csc.indptr[latent], csc.indptr[latent + 1]
    return csc.indices[start:stop], csc.data[start:stop]


def _holdout_scores(held: Store, words: dict[int, list[str]], rng: np.random.Generator) -> dict[int, float | None]:
    """latent -> balanced accuracy, on the held-out documents, of detecting the latent's strongest
    documents against random documents it does not fire on by "contains one of the label's words"."""
    texts = [t.lower() for t in held.frame["text"].to_list()]
    doc_words = [set(_ANY_WORD.findall(t)) for t in texts]
    csc = held.matrix.tocsc()

    def says(row: int, label: list[str]) -> bool:
        # whole words for words, substrings for punctuation peaks such as "(" or "->"
        return any((w in doc_words[row]) if _ANY_WORD.fullmatch(w) else (w in texts[row]) for w in label)

    scores: dict[int, float | None] = {}
    for latent in sorted(words):
        rows, values = _column(csc, latent)
        positives = rows[np.argsort(-values, kind="stable")[:HOLDOUT_POSITIVES]]
        negatives = _absent_rows(rng, held.n_docs, np.sort(rows), len(positives))
        if min(len(positives), len(negatives)) < MIN_HOLDOUT_POSITIVES:
            scores[latent] = None
            continue
        hits = np.mean([says(int(r), words[latent]) for r in positives])
        misses = np.mean([not says(int(r), words[latent]) for r in negatives])
        scores[latent] = float(hits + misses) / 2
    return scores


def _absent_rows(rng: np.random.Generator, n_docs: int, fired: np.ndarray, k: int) -> np.ndarray:
    """Up to k distinct random rows where the latent does not fire (`fired`, sorted)."""
    if n_docs - len(fired) <= 4 * k:  # a latent on most documents: draw from the few it misses
        return rng.permutation(np.setdiff1d(np.arange(n_docs), fired))[:k]
    drawn = rng.integers(0, n_docs, 8 * k)
    _, first = np.unique(drawn, return_index=True)
    drawn = drawn[np.sort(first)]  # distinct, still in random order
    drawn = drawn[~np.isin(drawn, fired)]
    if len(drawn) < k:  # unlucky draw: enumerate
        return rng.permutation(np.setdiff1d(np.arange(n_docs), fired))[:k]
    return drawn[:k]


def _top_per_column(matrix: Any, n: int) -> Any:
    """Binary docs x latents matrix marking, per latent, its n documents of largest activation."""
    import scipy.sparse as sp

    csc = matrix.tocsc()
    rows, cols = [], []
    for latent in range(csc.shape[1]):
        start, stop = csc.indptr[latent], csc.indptr[latent + 1]
        if stop == start:
            continue
        values = csc.data[start:stop]
        keep = np.argpartition(-values, n - 1)[:n] if stop - start > n else np.arange(stop - start)
        rows.append(csc.indices[start:stop][keep])
        cols.append(np.full(len(keep), latent))
    if not rows:
        return sp.csr_matrix(csc.shape, dtype=np.float32)
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=csc.shape)


def _doc_words(texts: list[str], min_df: int = 3) -> tuple[Any, list[str]]:
    """Binary documents x words matrix over lower-cased content words seen in >= min_df documents."""
    import scipy.sparse as sp

    # curly apostrophes made "don’t" the keyword "don"; straightened, it is a stopword
    per_doc = [sorted({w for w in _WORD.findall(_TEMPLATE.sub(" ", t.lower().replace("’", "'")))
                       if w not in STOPWORDS and w not in ROLE_MARKERS}) for t in texts]
    df = Counter(w for words in per_doc for w in words)
    vocab = sorted(w for w, c in df.items() if c >= min_df)
    index = {w: i for i, w in enumerate(vocab)}
    rows, cols = [], []
    for r, words in enumerate(per_doc):
        for w in words:
            if w in index:
                rows.append(r)
                cols.append(index[w])
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), len(vocab)))
    return matrix, vocab
