"""What each latent means: a label store per SAE, importers for published labels, and the offline
labeler (peak tokens + contrastive keywords of a latent's documents; no LLM needed).

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


# -- the offline labeler ---------------------------------------------------------------------------

def offline_labels(store: Store, *, top_docs: int = 20, contrast_docs: int = 50, n_keywords: int = 3,
                   min_docs: int = 3) -> Labels:
    """Label every latent active in at least `min_docs` documents from the store alone.

    A label joins the word the latent most often peaks on in its `top_docs` strongest documents
    with the words most over-represented in its `contrast_docs` strongest documents versus the
    rest (contrastive keywords),
    e.g. `def · code · function · python`. The score is the share of top documents whose peak
    is that word: how focused the latent is.
    """
    texts = store.frame["text"].to_list()
    doc_word, vocab = _doc_words(texts)
    freq = np.asarray((store.matrix > 0).sum(0)).ravel()
    # Contrast each latent's strongest documents (not every document it touches, which for a broad
    # latent is a third of the corpus) against all the others.
    top = _top_per_column(store.matrix, contrast_docs)
    n_top = np.asarray(top.sum(0)).ravel()
    n_docs = store.n_docs
    word_df = np.asarray(doc_word.sum(0)).ravel()
    inside = (top.T @ doc_word).tocsr()  # latents x words: top documents with the word, never dense
    label, source, score = {}, {}, {}
    for latent in np.flatnonzero(freq >= min_docs):
        row = inside.getrow(latent)
        n_in = n_top[latent]
        p_in = row.data / n_in
        p_out = (word_df[row.indices] - row.data) / max(n_docs - n_in, 1)
        gain = p_in * np.log((p_in + 1e-3) / (p_out + 1e-3))
        best = row.indices[np.argsort(-gain)[: n_keywords * 2]]
        keywords = [vocab[i] for i in best if gain[np.searchsorted(row.indices, i)] > 0]
        peaks = Counter()
        for doc_row, _ in top_documents(store, latent, top_docs):
            span = peak_span(store, doc_row, latent)
            if span:
                token = texts[doc_row][span[0]: span[1]].strip().lower()
                if token:
                    peaks[token] += 1
        parts: list[str] = []
        if peaks:
            token, count = peaks.most_common(1)[0]
            parts.append(token)
            score[int(latent)] = count / max(sum(peaks.values()), 1)
        parts += [w for w in keywords if w not in parts][: n_keywords]
        if parts:
            label[int(latent)] = " · ".join(parts)
            source[int(latent)] = "offline"
            score.setdefault(int(latent), None)
    return Labels(store.d_sae, label, source, score)


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

    per_doc = [sorted({w for w in _WORD.findall(t.lower()) if w not in STOPWORDS}) for t in texts]
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
