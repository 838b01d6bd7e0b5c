"""The engine-neutral kernel of an embed run: what both engines (`local_engine`, `ray_engine`) do the same way.

Load and check the reader and SAE (`load_pipeline`), key each document for the cache (`document_key`),
embed a window of documents in length-sorted batches (`embed_window`), and lay out a store's rows and
metadata (`fields_table`, `store_table`, `model_metadata`, `store_metadata`). An engine decides where this
runs and how finished work is kept (`Engine`); `pipeline.Embedder` picks the engine a config names.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa
import torch

from saeembed.embedding.config import EmbedConfig, Pooling
from saeembed.embedding.corpus import Corpus, Document, Problem
from saeembed.embedding.pool import document_parts, document_vectors, encode_chunks, merge_chunks
from saeembed.embedding.reader import (
    Chunk,
    HeapKeeper,
    Reader,
    inspect_model,
    length_sorted_batches,
    load_reader,
    resolve_dtype,
)
from saeembed.errors import CorpusError, ReaderError, SAEError
from saeembed.form_counts import counted_text, form_meta, stored_columns
from saeembed.hashing import text_key
from saeembed.sae import SAE, load_sae
from saeembed.store import COUNT_STATS, RESERVED, STORE_VERSION, DocVectors

log = logging.getLogger(__name__)
# Resident memory belongs to the process, so one keeper serves every window it embeds.
_HEAP = HeapKeeper()

COMMIT_SECONDS = 30.0
"""Within a window, the documents finished so far go to the cache at least this often (seconds of work),
so an interrupted run resumes from there even when the whole corpus fits in one window."""


@dataclass
class EmbedProgress:
    docs_done: int
    docs_total: int
    tokens_done: int


@dataclass
class EmbedResult:
    """What an embed run did."""

    path: Path
    n_docs: int
    n_cached: int
    n_tokens: int
    n_chunked: int
    """Documents longer than the context, read in several chunks."""
    n_truncated: int
    n_unpooled: int
    """Documents with no token to pool (e.g. no message of the pooled roles)."""
    skipped: list[Problem] = field(default_factory=list)
    seconds: float = 0.0


ProgressFn = Callable[[EmbedProgress], None]


@dataclass
class EmbedJob:
    """One checked run for an engine: the corpus with its stored fields and cache keys (built before any work,
    so bad input was refused already), where the store goes, and how to get the loaded reader and SAE."""

    corpus: Corpus
    fields: pa.Table
    keys: list[str]
    output: Path
    config: EmbedConfig
    on_progress: ProgressFn | None
    load: Callable[[], tuple[Reader, SAE]]


class Engine(Protocol):
    """Where an embed run's work happens. Both engines write equal stores from the same job."""

    writes_folder: bool
    """The store is a folder of parts (else one Parquet file)."""

    def check_available(self) -> None:
        """Refuse, in one line and before any work, an engine this machine cannot run."""

    def run(self, job: EmbedJob) -> EmbedResult:
        """Embed the job's documents into its output; a re-run of an interrupted job resumes."""


def check_templates(reader: Reader, docs: list[Document], config: EmbedConfig) -> None:
    """Render every conversation with the chat template (the tokenizer only; the model's weights are not
    read yet), so one the template rejects is refused with the other bad input, naming every such record,
    not after the model loaded and thousands of documents were embedded."""
    if not config.as_chat and not any(doc.messages for doc in docs):
        return
    bad = []
    for doc in docs:
        if doc.messages or config.as_chat:
            try:
                reader.render(doc, config.as_chat, config.pool_roles)
            except ReaderError as exc:
                bad.append(str(exc))
    if bad:
        more = f" | ... and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CorpusError(f"{len(bad)} conversation(s) cannot be read; nothing was embedded: "
                          f"{' | '.join(bad[:3])}{more}")


def load_pipeline(config: EmbedConfig) -> tuple[Reader, SAE]:
    """Load the SAE and the reader, refusing mismatches before the model's weights are read."""
    sae = load_sae(config.sae, layer=config.layer, fmt=config.sae_format, revision=config.sae_revision)
    layer = config.layer if config.layer is not None else sae.info.layer
    if layer is None:
        raise SAEError("the SAE files do not say which layer it reads; set layer (--layer L)")
    if sae.info.layer is not None and sae.info.layer != layer:
        raise SAEError(f"the SAE was trained on the output of block {sae.info.layer} "
                       f"({sae.info.hook_name}), not {layer}; set layer={sae.info.layer} (--layer {sae.info.layer})")
    model = str(config.model)  # a hub id or a local path, given as str or Path
    spec, _ = inspect_model(model, layer, revision=config.revision,
                            trust_remote_code=config.trust_remote_code)
    if sae.d_in != spec.hidden_size:
        raise SAEError(f"the SAE reads vectors of width {sae.d_in} but {config.model} has hidden size "
                       f"{spec.hidden_size}; pass the SAE trained for this model"
                       + (f" (its files name {sae.info.model_name})" if sae.info.model_name else ""))
    if sae.info.reads == "document" and config.pooling != "max":
        raise SAEError(f"{config.sae} is a document-level SAE: it encodes one vector per document, so "
                       f"--pool {config.pooling} does not apply; drop --pool")
    named = sae.info.model_name
    if named and not Path(model).is_dir() and Path(named).name.lower() not in model.lower():
        log.warning("the SAE was trained on %s; reading it with %s", named, model)
    reader = load_reader(model, layer, device=config.device, dtype=config.dtype,
                         revision=config.revision, trust_remote_code=config.trust_remote_code,
                         max_tokens=config.max_tokens)
    return reader, sae.to(reader.device, encoder_dtype(config.sae_dtype, reader))


def encoder_dtype(sae_dtype: str, reader: Reader) -> torch.dtype:
    """The dtype the SAE encodes in (`EmbedConfig.sae_dtype`)."""
    if sae_dtype == "auto" or (sae_dtype == "fast" and not native_bfloat16(reader.device)):
        return reader.dtype
    return torch.bfloat16 if sae_dtype == "fast" else resolve_dtype(sae_dtype, reader.device)


def native_bfloat16(device: torch.device) -> bool:
    """Does `device` multiply bfloat16 matrices natively (faster than float32)? A CPU without AMX or
    AVX512-BF16 emulates it, several times slower than float32."""
    if device.type == "cuda":  # native from Ampere on; older GPUs emulate it
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(check()) for check in checks if check is not None)


def document_key(doc: Document, as_chat: str | None) -> str:
    """Cache key of a document's content (the namespace covers model, SAE and pooling)."""
    if doc.messages is not None:
        return text_key("messages", json.dumps(doc.messages, sort_keys=True, default=str))
    return text_key("chat:" + as_chat if as_chat else "text", doc.text or "")


def vectors_config(config: EmbedConfig, reader: Reader, sae: SAE) -> dict:
    """Everything that changes the stored vectors: the cache namespace and the store's identity."""
    return {"version": STORE_VERSION, "model": reader.spec.model, "model_revision": reader.spec.revision,
            "model_fingerprint": reader.fingerprint, "layer": reader.spec.layer, "prefix": reader.prefix,
            "sae_fingerprint": sae.info.fingerprint, "pooling": pooling_of(config, sae),
            "pool_roles": list(config.pool_roles) if config.pool_roles else None,
            "max_tokens": reader.max_tokens, "long": config.long, "dtype": str(reader.dtype),
            "values_dtype": config.values_dtype, "concept_counts": True,
            # only when it differs, so caches and stores of the reader's own dtype keep their identity
            **({"sae_dtype": _name(sae.W_enc.dtype)} if sae.W_enc.dtype != reader.dtype else {})}


def pooling_of(config: EmbedConfig, sae: SAE) -> str:
    """How token codes become a document vector: the configured pooling, or `document` for an SAE that
    encodes the document's mean activation itself."""
    return "document" if sae.info.reads == "document" else config.pooling


CommitFn = Callable[[list[int], DocVectors, np.ndarray], None]


def embed_window(reader: Reader, sae: SAE, docs: list[Document], config: EmbedConfig,
                 on_batch: Callable[[int, float], None], commit: CommitFn) -> None:
    """Embed a window of documents; `commit(slots, vectors, n_chunks)` receives every document's vectors
    once: the documents finished so far every `COMMIT_SECONDS`, the rest at the end. A document's vectors
    depend on its own chunks only, so how the window is cut into commits does not change them."""
    prepared = [reader.prepare(doc, pool_roles=config.pool_roles, as_chat=config.as_chat, long=config.long,
                               doc_slot=slot) for slot, doc in enumerate(docs)]
    chunks = [c for p in prepared for c in p.chunks if len(c.pooled)]
    parts: list[list] = [[] for _ in docs]
    waiting = np.zeros(len(docs), np.int64)  # chunks of each document not encoded yet
    for chunk in chunks:
        waiting[chunk.doc] += 1
    pending = np.ones(len(docs), bool)  # not committed yet

    def flush(slots: list[int]) -> None:
        if slots:
            vectors, n_chunks = _window_vectors(sae, config, [parts[s] for s in slots], [prepared[s] for s in slots])
            commit(slots, vectors, n_chunks)
            pending[slots] = False

    chunks_done = 0
    last_commit = time.monotonic()
    for batch in length_sorted_batches(chunks, config.batch_tokens, config.max_batch_docs, reader.device):
        for sub, encoded in _encode_with_retry(reader, sae, batch, config.pooling):
            for row, chunk in enumerate(sub):
                parts[chunk.doc].append((encoded, row))
                waiting[chunk.doc] -= 1
        chunks_done += len(batch)
        _HEAP.after_batch()
        if chunks_done < len(chunks) and time.monotonic() - last_commit >= COMMIT_SECONDS:
            flush(np.flatnonzero(pending & (waiting == 0)).tolist())
            last_commit = time.monotonic()
        on_batch(sum(len(c.pooled) for c in batch), chunks_done / len(chunks))
    flush(np.flatnonzero(pending).tolist())


def _window_vectors(sae: SAE, config: EmbedConfig, parts: list[list], prepared: list) -> tuple[DocVectors, np.ndarray]:
    """Vectors and chunk counts (-1: truncated) of documents from their encoded chunks."""
    vectors = document_vectors(parts, sae) if sae.info.reads == "document" else _merge_documents(parts, config.pooling)
    vectors.n_tokens = np.array([p.n_tokens for p in prepared], dtype=np.int32)
    n_chunks = np.array([-1 if p.truncated else len(p.chunks) for p in prepared], dtype=np.int32)
    return vectors, n_chunks


def _merge_documents(parts: list[list], pooling: Pooling) -> DocVectors:
    """One row per document from the pooled codes of its chunks (token-level SAEs)."""
    merged = [merge_chunks([(v, p, r) for (v, p), r in doc], pooling) if doc else _NO_CODES for doc in parts]
    counts = np.array([len(m[0]) for m in merged], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = [np.concatenate([m[i] for m in merged]) if merged else np.zeros(0) for i in range(4)]
    return DocVectors(offsets, flat[0].astype(np.int32), flat[1].astype(np.float32), flat[2].astype(np.int32),
                      flat[3].astype(np.int32), np.zeros(len(parts), np.int32),
                      np.stack([m[5] for m in merged]) if merged else None)


_NO_CODES = (np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32), 0,
             np.zeros(len(COUNT_STATS), np.float32))


def _encode_with_retry(reader: Reader, sae: SAE, batch: list[Chunk], pooling: Pooling):
    """Encode a batch; on out-of-memory, split it in halves and retry rather than fail."""
    try:
        x, segment = reader.token_activations(batch)
        if sae.info.reads == "document":
            return [(batch, document_parts(x, segment, batch, sae))]
        return [(batch, encode_chunks(x, segment, batch, sae, pooling))]
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise ReaderError(f"a single chunk of {len(batch[0].ids)} tokens does not fit in memory; "
                              f"lower --max-tokens") from None
        log.warning("out of memory on a batch of %d; splitting it", len(batch))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(batch) // 2
        return (_encode_with_retry(reader, sae, batch[:half], pooling)
                + _encode_with_retry(reader, sae, batch[half:], pooling))


def store_table(fields: pa.Table, vector_columns: dict[str, Any], dense: pa.Array | None,
                pool_roles: Sequence[str] | None) -> pa.Table:
    """The rows of a store as written: id, the vector columns, the form counts of the text (of the `pool_roles`
    turns of a chat, as the form layer reads it), the text and every input field, then the dense embedding when
    there is one. One layout for both engines, so their stores are equal."""
    texts = fields.column("text").to_pylist()
    if pool_roles and "messages" in fields.column_names:
        texts = [counted_text(text, messages, pool_roles)
                 for text, messages in zip(texts, fields.column("messages").to_pylist())]
    table = pa.table({"id": fields.column("id"), **vector_columns, **stored_columns(texts),
                      **{name: fields.column(name) for name in fields.column_names if name != "id"}})
    return table.append_column("dense", dense) if dense is not None else table


def dense_column(texts: list[str]) -> pa.Array:
    """Sentence embeddings of a window of documents as a fixed-size list column."""
    from saeembed.embedding.dense import sentence_embeddings

    vectors = sentence_embeddings(texts)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def fields_table(docs: list[Document], id_field: str = "id") -> pa.Table:
    """id, chats (`messages`) and every field of the input (the union over all records, in order of first
    appearance; a record without a field has null there), fields named like a store column renamed
    `input_NAME` (`input_input_NAME` if that is taken too). Built before the model is loaded, so a field
    the store cannot hold is a `CorpusError` before any work; `read_corpus(check_field_types=True)`
    refuses those earlier, naming the record. The rendered `text` column is added when the store is
    written."""
    names = list(dict.fromkeys(name for doc in docs for name in doc.fields if name != id_field))
    taken = {"id", "text", "messages", *RESERVED, *names}
    renamed: dict[str, str] = {}
    for name in names:
        if name in RESERVED or name == "messages":
            target = f"input_{name}"
            while target in taken:
                target = f"input_{target}"
            taken.add(target)
            renamed[name] = target
    columns: dict[str, list] = {"id": [doc.id for doc in docs]}
    if any(doc.messages is not None for doc in docs):
        columns["messages"] = [doc.messages for doc in docs]
    for name in names:
        columns[renamed.get(name, name)] = [doc.fields.get(name) for doc in docs]
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise CorpusError(f"the field {name!r} cannot be stored ({' '.join(str(exc).split())[:200]}); give it "
                              f"one kind of value in every record, e.g. quote the values so they are all text") \
                from None
    table = pa.table(arrays)
    try:
        import pyarrow.parquet as pq

        pq.write_table(table.slice(0, 0), pa.BufferOutputStream())  # a schema Parquet cannot hold fails here
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"the input's fields cannot be stored in Parquet ({' '.join(str(exc).split())[:200]}); "
                          f"drop or quote the field it names") from None
    return table


def model_metadata(config: EmbedConfig, reader: Reader, sae: SAE) -> dict:
    """What the loaded reader and SAE put in a store's metadata (the Ray engine gets it from one task on
    the cluster, with a worker's device and dtype, and writes it into every part)."""
    import transformers

    from saeembed import __version__

    return {
        "model": {"id": reader.spec.model, "revision": reader.spec.revision, "fingerprint": reader.fingerprint,
                  "model_type": reader.spec.model_type, "layer": reader.spec.layer,
                  "hook": f"blocks.{reader.spec.layer}.hook_resid_post", "n_layers": reader.spec.n_layers,
                  "hidden_size": reader.spec.hidden_size, "dtype": _name(reader.dtype)},
        # the encoder's dtype when it is not the reader's (`EmbedConfig.sae_dtype`)
        "sae": {**asdict(sae.info),
                **({"compute_dtype": _name(sae.W_enc.dtype)} if sae.W_enc.dtype != reader.dtype else {})},
        "pooling": pooling_of(config, sae),
        "max_tokens": reader.max_tokens,
        "versions": {"saeembed": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def store_metadata(config: EmbedConfig, model_meta: dict, corpus: Corpus) -> dict:
    """A store's metadata: the reader and SAE (`model_metadata`), how they were applied, and the inputs."""
    return {
        "store_version": STORE_VERSION, "model": model_meta["model"], "sae": model_meta["sae"],
        "pooling": model_meta["pooling"], "pool_roles": list(config.pool_roles) if config.pool_roles else None,
        "as_chat": config.as_chat, "values_dtype": config.values_dtype, "max_tokens": model_meta["max_tokens"],
        "long": config.long, "text_field": config.text_field, "sources": corpus.sources,
        "dense": {"model": "all-MiniLM-L6-v2", "pooling": "mean", "normalized": True} if config.dense else None,
        "form": form_meta(),  # what the form columns were counted with
        "versions": model_meta["versions"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
