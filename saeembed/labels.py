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
import io
import json
import re
import zlib
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
        """A saved label store; a LabelError naming the file when it is damaged or not one."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        again = "delete it and import or generate the labels again"
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise LabelError(f"{path}: not a readable label store ({_first_line(exc)}); {again}") from None
        kinds = {"latent": pa.types.is_integer, "label": pa.types.is_string, "source": pa.types.is_string,
                 "score": pa.types.is_floating}
        for name, is_kind in kinds.items():
            if name not in table.column_names or not (is_kind(table.schema.field(name).type)
                                                      or pa.types.is_null(table.schema.field(name).type)):
                raise LabelError(f"{path}: not a label store (no {name} column of the right type); {again}")
        raw_d_sae = (table.schema.metadata or {}).get(b"d_sae", b"0")
        if not raw_d_sae.isdigit():
            raise LabelError(f"{path}: its d_sae metadata {raw_d_sae[:20]!r} is not a number; {again}")
        rows = [r for r in table.select(list(kinds)).to_pylist() if r["latent"] is not None and r["label"]]
        return Labels(int(raw_d_sae), {r["latent"]: r["label"] for r in rows},
                      {r["latent"]: r["source"] or "" for r in rows}, {r["latent"]: r["score"] for r in rows})


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

# A latent id as text: digits, optionally signed and padded ("12", " 12 "); 18 digits at most.
_LATENT_ID = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")


def import_labels(path: str | Path, d_sae: int) -> tuple[Labels, list[str]]:
    """Read Neuronpedia explanation batches (.jsonl.gz or .jsonl, or a folder of them: one JSON object
    per line with `index` and `description`), JSON {latent id: label} or CSV (columns latent,label).
    Returns the labels and notes for the user (labelled count, duplicates, entries without a label).

    Every row is checked before anything is saved; a bad one raises one LabelError line naming the
    file, the line (or JSON key) and the field: a file that is not UTF-8, cut short (a truncated
    .gz) or not JSON/CSV, a line that is not an object, a CSV row with too few or too many fields, a
    latent id that is not an integer or is outside 0..d_sae-1 (the labels of another SAE), a label
    that is not text (a number, list or object). A label that is null, empty or missing is skipped
    and counted in the notes: Neuronpedia lists latents it has no explanation for that way.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"{path}: no such file or folder; give Neuronpedia .jsonl.gz batches (a file or a "
                         f"folder of them), a .json or a .csv file")
    files = sorted(path.glob("*.jsonl.gz")) + sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise LabelError(f"{path} holds no .jsonl.gz or .jsonl explanation batches")
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    for file in files:
        found, empty = _read_pairs(file)
        pairs.extend(found)
        skipped += empty
    out_of_range = sorted({i for i, _, _ in pairs if not 0 <= i < d_sae})
    if out_of_range:
        first = next(where for i, _, where in pairs if not 0 <= i < d_sae)
        more = f" and {len(out_of_range) - 5} more" if len(out_of_range) > 5 else ""
        raise LabelError(f"{path} labels latents {out_of_range[:5]}{more} outside 0..{d_sae - 1} (first at "
                         f"{first}): these labels are for another SAE; import them with a store of that SAE")
    label: dict[int, str] = {}
    repeated = 0
    for latent, text, _ in pairs:  # several explanations of one latent: keep the first, as listed
        if latent in label:
            repeated += 1
        else:
            label[latent] = text
    labels = Labels(d_sae, label, {i: f"import:{path.name}" for i in label}, {i: None for i in label})
    notes = [f"{len(label)} of {d_sae} latents labelled ({d_sae - len(label)} unlabelled)"]
    if repeated:
        notes.append(f"{repeated} further explanations of already-labelled latents ignored")
    if skipped:
        notes.append(f"{skipped} entries without a label (null, empty or missing) skipped")
    return labels, notes


def _read_pairs(file: Path) -> tuple[list[tuple[int, str, str]], int]:
    """(latent, label, where it was read) of a label file, and how many entries had no label."""
    name = file.name.lower()
    if not name.endswith((".jsonl.gz", ".jsonl", ".json", ".csv")):
        raise LabelError(f"{file}: unknown label file; give Neuronpedia .jsonl.gz batches, .jsonl, .json or .csv")
    if file.is_dir():
        raise LabelError(f"{file} is a folder; give the label file itself, or a folder of .jsonl.gz batches")
    if file.exists() and not file.stat().st_size:
        raise LabelError(f"{file} is empty (0 bytes); download or copy it again")
    try:
        if name.endswith((".jsonl.gz", ".jsonl")):
            return _read_jsonl(file, gzipped=name.endswith(".gz"))
        data = file.read_bytes()
    except OSError as exc:
        raise LabelError(f"{file}: cannot be read ({exc.strerror or exc}); check the path and its "
                         f"permissions") from None
    text = _utf8(data, file)
    return _read_json(text, file) if name.endswith(".json") else _read_csv(text, file)


def _read_jsonl(file: Path, gzipped: bool) -> tuple[list[tuple[int, str, str]], int]:
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    number = 0
    try:
        with (gzip.open(file, "rb") if gzipped else open(file, "rb")) as fh:
            for number, raw in enumerate(fh, 1):
                where = f"{file} line {number}"
                line = _utf8(raw, file, number).lstrip("\ufeff").strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise LabelError(f"{where}: not JSON ({_first_line(exc)}); each line must be one JSON "
                                     f"object with index and description") from None
                if not isinstance(row, dict):
                    raise LabelError(f"{where}: a JSON {_json_kind(row)}, not an object with index and "
                                     f"description")
                if "index" not in row:
                    raise LabelError(f"{where}: no index field (the latent id); each line needs index and "
                                     f"description")
                latent = _latent_id(row["index"], where, "index")
                text = _label_text(row.get("description"), where, "description")
                if text is None:
                    skipped += 1
                else:
                    pairs.append((latent, text, where))
    except EOFError:
        raise LabelError(f"{file}: the compressed file ends early, after line {number} (it is truncated); "
                         f"download or copy it again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise LabelError(f"{file}: damaged gzip data after line {number} ({_first_line(exc)}); download or "
                         f"copy it again, or decompress it yourself and give the .jsonl") from None
    except OSError as exc:
        raise LabelError(f"{file}: cannot be read ({exc.strerror or exc}); check the path and its "
                         f"permissions") from None
    return pairs, skipped


def _read_json(text: str, file: Path) -> tuple[list[tuple[int, str, str]], int]:
    objects: list[list[tuple[str, Any]]] = []  # every object's (key, value) pairs; the outermost ends last

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=keep_pairs)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{file} line {exc.lineno}: not JSON ({exc.msg}); give one object "
                         f"{{latent id: label}}") from None
    except RecursionError:
        raise LabelError(f"{file}: not JSON this program can read (nested too deep); give one object "
                         f"{{latent id: label}}") from None
    if not isinstance(data, dict):
        raise LabelError(f"{file}: a JSON {_json_kind(data)}; expected one JSON object {{latent id: label}}")
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    for key, value in objects[-1]:  # a repeated key is kept in order, as a repeated latent (the first wins)
        where = f"{file} key {json.dumps(key)[:40]}"
        latent = _latent_id(key, where, "the key")
        label = _label_text(value, where, "the label")
        if label is None:
            skipped += 1
        else:
            pairs.append((latent, label, where))
    return pairs, skipped


def _read_csv(text: str, file: Path) -> tuple[list[tuple[int, str, str]], int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if "latent" not in header or "label" not in header:
            raise LabelError(f"{file}: a labels CSV needs a first line naming the columns latent,label "
                             f"(found {','.join(header)[:60] or 'nothing'})")
        at_latent, at_label = header.index("latent"), header.index("label")
        pairs: list[tuple[int, str, str]] = []
        skipped = 0
        for row in reader:
            where = f"{file} line {reader.line_num}"
            if not row or row == [""]:
                continue  # a blank line
            if len(row) != len(header):
                raise LabelError(f"{where}: {len(row)} field{'s' if len(row) != 1 else ''} where the header has "
                                 f"{len(header)} ({','.join(header)[:60]}); put a label that holds a comma in "
                                 f"double quotes")
            latent = _latent_id(row[at_latent], where, "latent")
            label = _label_text(row[at_label], where, "label")
            if label is None:
                skipped += 1
            else:
                pairs.append((latent, label, where))
    except csv.Error as exc:
        raise LabelError(f"{file} line {reader.line_num}: not CSV ({_first_line(exc)}); give columns "
                         f"latent,label") from None
    return pairs, skipped


def _utf8(data: bytes, file: Path, line: int | None = None) -> str:
    """Bytes as UTF-8 text (a byte order mark dropped), or a LabelError naming the line."""
    try:
        return data.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        if line is None:
            line = data.count(b"\n", 0, exc.start) + 1
        raise LabelError(f"{file} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                         f"UTF-8") from None


def _latent_id(value: Any, where: str, field: str) -> int:
    """A latent id from JSON (an integer, or a string of one, as Neuronpedia writes it) or CSV."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _LATENT_ID.fullmatch(value):
        return int(value.strip())  # int() strips less than \s matches (e.g. not \x1f)
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    raise LabelError(f"{where}: {field} {shown[:40]} is not a latent id (a whole number); fix or remove that "
                     f"entry")


def _label_text(value: Any, where: str, field: str) -> str | None:
    """A label: a JSON or CSV string, stripped; None (skipped) for null or empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise LabelError(f"{where}: {field} is a JSON {_json_kind(value)}, not text; give every label as a "
                         f"string (or null to leave the latent unlabelled)")
    return value.strip() or None


def _json_kind(value: Any) -> str:
    return {list: "list", dict: "object", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "…"


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
