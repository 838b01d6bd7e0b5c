"""What each latent means: a label store per SAE, importers for published labels, and the offline
labeler (peak tokens + contrastive keywords of a latent's documents, scored by held-out detection
accuracy; no LLM needed). Speaker names and chat-template tokens never enter an offline label, and
`strip_role_markers` removes speaker prefixes from chat transcripts.

Labels are keyed by the SAE's content fingerprint, which every store records, so analyses of any
store embedded with that SAE find them: `ROOT/labels/<fingerprint>.parquet` under the cache root.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saeembed.cache import default_cache_root
from saeembed.errors import SaeEmbedError
from saeembed.store import Store, atomic_write_table

MARK_OPEN, MARK_CLOSE = "<<", ">>"
_WORD = re.compile(r"[a-z][a-z0-9']{2,}")
# Function words carry no topic; they would top every latent's keyword list.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me
more most mustn't my myself no nor not now of off on once only or other ought our ours ourselves out over own
same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under
until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
while who who's whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
yourself yourselves one get got like really much many even still well back way make made new said says
""".split())
# Speaker names and chat-template tokens. In chat transcripts (hh-rlhf's "Human: ... Assistant: ...",
# ChatML, the Llama and Gemma templates) they say who speaks, not what is said, and they are in every
# transcript, so they topped the peak tokens and keywords of any latent that fires in chats (a quarter
# of the first shipped labels). In labelled text such a word is taken to be only a role marker: it is
# never a peak token or a keyword, even where it is also an ordinary word ("user interface").
ROLE_MARKERS = frozenset({
    "human", "assistant", "user", "system",  # speakers
    "inst", "im_start", "im_end", "endoftext", "bos", "eos", "pad", "unk",  # template tokens
    "start_of_turn", "end_of_turn", "begin_of_text", "end_of_text", "eot_id", "start_header_id",
    "end_header_id",
})
# Template tokens as they appear in text (lower-cased): `<|im_start|>`, `[INST]`, `<<SYS>>`, `</s>`,
# `<start_of_turn>`, or bare `im_start`. Removed before words are counted, so their pieces ("start",
# "turn", "header") do not become keywords either.
_TEMPLATE = re.compile(r"<\|[a-z_]+\|>|\[/?inst\]|<</?sys>>|</?s>|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk)>|"
                       + r"\b(?:" + "|".join(sorted(m for m in ROLE_MARKERS if "_" in m)) + r")\b")
# A speaker prefix at a line start: `Human:`, `Assistant:`, `### User:`, `**System:**`.
_SPEAKER = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?(?:human|assistant|user|system)(?:\*\*)?[ \t]*:"
                      r"(?:\*\*)?[ \t]*", re.IGNORECASE | re.MULTILINE)


class LabelError(SaeEmbedError):
    """A label file cannot be read or does not fit the SAE."""


@dataclass
class Labels:
    """latent id -> label, with where it came from and a score (None when not scored)."""

    d_sae: int
    label: dict[int, str]
    source: dict[int, str]
    score: dict[int, float | None]

    def get(self, latent: int) -> str | None:
        return self.label.get(int(latent))

    def unlabelled(self) -> list[int]:
        return [i for i in range(self.d_sae) if i not in self.label]

    def update(self, other: "Labels") -> None:
        self.label.update(other.label)
        self.source.update(other.source)
        self.score.update(other.score)

    def save(self, path: Path) -> None:
        import pyarrow as pa

        latents = sorted(self.label)
        table = pa.table({"latent": pa.array(latents, pa.int32()),
                          "label": [self.label[i] for i in latents],
                          "source": [self.source.get(i, "") for i in latents],
                          "score": pa.array([self.score.get(i) for i in latents], pa.float32())})
        table = table.replace_schema_metadata({b"d_sae": str(self.d_sae).encode()})
        atomic_write_table(table, path)

    @staticmethod
    def load(path: Path) -> "Labels":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        d_sae = int((table.schema.metadata or {}).get(b"d_sae", b"0"))
        rows = table.to_pylist()
        return Labels(d_sae, {r["latent"]: r["label"] for r in rows}, {r["latent"]: r["source"] for r in rows},
                      {r["latent"]: r["score"] for r in rows})


def labels_path(sae_fingerprint: str, root: Path | None = None) -> Path:
    return (root or default_cache_root()) / "labels" / f"{sae_fingerprint}.parquet"


def save_labels(new: Labels, sae_fingerprint: str, root: Path | None = None) -> Path:
    """Merge `new` into the SAE's label store (new labels win) and save it; returns its path."""
    path = labels_path(sae_fingerprint, root)
    labels = Labels.load(path) if path.exists() else Labels(new.d_sae, {}, {}, {})
    labels.update(new)
    labels.save(path)
    return path


def labels_for(store: Store, root: Path | None = None) -> Labels:
    """The labels for the store's SAE: those shipped beside its files (`labels.parquet`, as the
    bundled default SAE has), overridden by the user's own imported or generated ones."""
    labels = Labels(store.d_sae, {}, {}, {})
    candidates = [labels_path(store.meta["sae"]["fingerprint"], root)]
    source = Path(store.meta["sae"].get("source") or "")
    if store.meta["sae"].get("source") and source.exists():  # a local SAE (hub ids are not paths here)
        candidates.insert(0, (source if source.is_dir() else source.parent) / "labels.parquet")
    for path in candidates:
        if path.exists():
            labels.update(Labels.load(path))
    return labels


# -- importers -------------------------------------------------------------------------------------

def import_labels(path: str | Path, d_sae: int) -> tuple[Labels, list[str]]:
    """Read Neuronpedia explanation batches (.jsonl.gz, or a folder of them), JSON {id: label} or
    CSV (latent,label). Returns the labels and notes for the user (unlabelled count, duplicates)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl.gz")) + sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise LabelError(f"{path} holds no .jsonl.gz explanation batches")
    pairs: list[tuple[int, str]] = []
    for file in files:
        pairs.extend(_read_pairs(file))
    out_of_range = sorted({i for i, _ in pairs if not 0 <= i < d_sae})
    if out_of_range:
        more = f" and {len(out_of_range) - 5} more" if len(out_of_range) > 5 else ""
        raise LabelError(f"{path} labels latents {out_of_range[:5]}{more} outside 0..{d_sae - 1}: "
                         f"these labels are for another SAE")
    label: dict[int, str] = {}
    repeated = 0
    for latent, text in pairs:  # several explanations of one latent: keep the first, as listed
        if latent in label:
            repeated += 1
        else:
            label[latent] = text
    labels = Labels(d_sae, label, {i: f"import:{path.name}" for i in label}, {i: None for i in label})
    notes = [f"{len(label)} of {d_sae} latents labelled ({d_sae - len(label)} unlabelled)"]
    if repeated:
        notes.append(f"{repeated} further explanations of already-labelled latents ignored")
    return labels, notes


def _read_pairs(file: Path) -> list[tuple[int, str]]:
    name = file.name.lower()
    try:
        if name.endswith((".jsonl.gz", ".jsonl")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(file, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            return [(int(r["index"]), str(r["description"]).strip()) for r in rows if r.get("description")]
        if name.endswith(".json"):
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise LabelError(f"{file}: expected a JSON object {{latent id: label}}")
            return [(int(k), str(v).strip()) for k, v in data.items() if str(v).strip()]
        if name.endswith(".csv"):
            with open(file, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not {"latent", "label"} <= set(reader.fieldnames):
                    raise LabelError(f"{file}: a labels CSV needs the columns latent,label")
                return [(int(r["latent"]), r["label"].strip()) for r in reader if r["label"].strip()]
    except (OSError, ValueError, KeyError) as exc:
        raise LabelError(f"cannot read labels from {file}: {exc}") from None
    raise LabelError(f"{file}: unknown label file; give Neuronpedia .jsonl.gz batches, .json or .csv")


# -- evidence --------------------------------------------------------------------------------------

def top_documents(store: Store, latent: int, n: int = 10) -> list[tuple[int, float]]:
    """(row, activation) of the documents where `latent` is strongest, strongest first."""
    column = store.matrix.getcol(int(latent)).tocoo()
    order = np.argsort(-column.data)[:n]
    return [(int(column.row[i]), float(column.data[i])) for i in order]


def peak_span(store: Store, row: int, latent: int) -> tuple[int, int] | None:
    """Character span in `text` of the token where `latent` peaked in document `row`."""
    start, stop = store.matrix.indptr[row], store.matrix.indptr[row + 1]
    at = np.searchsorted(store.matrix.indices[start:stop], latent)
    if at < stop - start and store.matrix.indices[start + at] == latent:
        return int(store.peak_start[start + at]), int(store.peak_end[start + at])
    return None


def marked_context(text: str, span: tuple[int, int], width: int = 80) -> str:
    """The text around a span, with the span marked << >> (the paper's convention)."""
    start, end = span
    left, right = max(0, start - width), min(len(text), end + width)
    return (("…" if left else "") + text[left:start] + MARK_OPEN + text[start:end] + MARK_CLOSE
            + text[end:right] + ("…" if right < len(text) else "")).replace("\n", " ")


# -- role markers ----------------------------------------------------------------------------------

def strip_role_markers(text: str) -> str:
    """The text without speaker prefixes at line starts (`Human:`, `Assistant:`, `User:`, `System:`,
    `### Human:`, `**User:**`, any case), so chat transcripts can train an SAE (or be labelled)
    on what is said rather than on who says it. Only prefixes go: a speaker word inside a sentence
    ("the user clicks") stays, as does the rest of the line.

    Examples:
        >>> strip_role_markers("Human: Is it raining?\\n\\nAssistant: Yes, in London.")
        'Is it raining?\\n\\nYes, in London.'
    """
    return _SPEAKER.sub("", text)


def _is_role_marker(token: str) -> bool:
    """A peak token that only marks a speaker or a template: `Human`, ` Assistant:`, `<|im_start|>`,
    `[INST]`, `</s>`, `### User`."""
    token = token.strip().lower()
    return bool(_TEMPLATE.fullmatch(token)) or token.strip("<>|[]/#:*_ ") in ROLE_MARKERS


# -- the offline labeler ---------------------------------------------------------------------------

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
    words = _label_words(making, top_docs, contrast_docs, n_keywords, min_support, min_docs)
    scores = _holdout_scores(held, words, rng) if n_held else {}
    latents = sorted(words)
    return Labels(store.d_sae, {i: " · ".join(words[i]) for i in latents}, {i: "offline" for i in latents},
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
                 min_docs: int) -> dict[int, list[str]]:
    """latent -> its label's words: the commonest peak token, then supported contrastive keywords."""
    texts = store.frame["text"].to_list()
    doc_word, vocab = _doc_words(texts)
    csc = store.matrix.tocsc()
    freq = np.diff(csc.indptr)
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
        peak = _commonest_peak(store, texts, csc, int(latent), top_docs)
        parts = [peak] if peak else []
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


def _commonest_peak(store: Store, texts: list[str], csc: Any, latent: int, n: int) -> str | None:
    """The token the latent most often peaks on in its n strongest documents, role markers aside."""
    rows, values = _column(csc, latent)
    peaks: Counter[str] = Counter()
    for row in rows[np.argsort(-values, kind="stable")[:n]]:
        span = peak_span(store, int(row), latent)
        token = texts[row][span[0]: span[1]].strip().lower() if span else ""
        if token and not _is_role_marker(token):
            peaks[token] += 1
    return peaks.most_common(1)[0][0] if peaks else None


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
