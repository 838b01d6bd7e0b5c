"""The local engine: the whole run in this process, windows of documents through the content-addressed cache
(`saeembed.embedding.cache`), then the store assembled from the cache in input order. An interrupted run
resumes from what the cache holds (every window whose part is on disk, and within a window what was done
every `COMMIT_SECONDS` of `saeembed.embedding.kernel`). Cache parts are written on one background thread,
so a window's write overlaps the next window's forward pass; a window's documents count as done once its
part is on disk (a run killed while a part is being written does that window again)."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa

from saeembed.cache_root import default_cache_root
from saeembed.embedding.cache import VectorCache
from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.corpus import Corpus, Document
from saeembed.embedding.kernel import (
    EmbedJob,
    EmbedProgress,
    EmbedResult,
    check_templates,
    dense_column,
    embed_window,
    model_metadata,
    store_metadata,
    store_table,
    vectors_config,
)
from saeembed.embedding.reader import Reader
from saeembed.sae import SAE
from saeembed.store import DocVectors, StoreWriter

log = logging.getLogger(__name__)


class LocalEngine:
    writes_folder = False

    def check_available(self) -> None:
        """Always available: torch and the reader run in this process."""

    def run(self, job: EmbedJob) -> EmbedResult:
        config, corpus, keys, on_progress = job.config, job.corpus, job.keys, job.on_progress
        reader, sae = job.load()
        cache = _open_cache(config, reader, sae, job.output)
        n_cached = sum(key in cache for key in set(keys))
        todo = _unique_missing(corpus.documents, keys, cache)
        check_templates(reader, [doc for doc, _ in todo], config)
        already = len(corpus.documents) - len(todo)
        progress = EmbedProgress(already, len(corpus.documents), 0)
        if on_progress:
            on_progress(progress)
        with _CacheWriter(cache, done=already) as writer:
            for start in range(0, len(todo), config.window_docs):
                window = todo[start: start + config.window_docs]

                def on_batch(tokens: int, fraction: float, size: int = len(window),
                             before: int = already + start) -> None:
                    # the earlier windows' documents once their parts are on disk, and the share of this window
                    # read so far (never all of it: it is done when its part lands)
                    progress.tokens_done += tokens
                    # never back: while the last window's part is in flight, this one's share can be smaller
                    # than that window's own last report
                    progress.docs_done = max(progress.docs_done,
                                             min(writer.landed(), before) + min(int(size * fraction), size - 1))
                    if on_progress:
                        on_progress(progress)

                def commit(slots: list[int], vectors: DocVectors, n_chunks: np.ndarray, window=window) -> None:
                    writer.put([window[slot][1] for slot in slots], vectors, n_chunks)

                embed_window(reader, sae, [doc for doc, _ in window], config, on_batch, commit)
            writer.flush()
            progress.docs_done = writer.landed()
            if on_progress:
                on_progress(progress)
        result = _write_store(job.output, corpus, keys, cache, reader, sae, config, job.fields)
        result.n_cached = n_cached
        if not config.use_cache:
            cache.remove()
        return result


class _CacheWriter:
    """Cache parts written on one background thread, one at a time (a window's vectors wait in memory at most
    while the next window is read). `landed` counts the documents whose part is on disk; a failed write
    raises at the next `put`, `landed` or `flush`."""

    def __init__(self, cache: VectorCache, done: int) -> None:
        self._cache, self._done = cache, done
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="saeembed-cache")
        self._pending: tuple[Future[None], int] | None = None

    def put(self, keys: list[str], vectors: DocVectors, n_chunks: np.ndarray) -> None:
        self.flush()
        self._pending = (self._pool.submit(self._cache.put, keys, vectors, n_chunks), len(keys))

    def landed(self) -> int:
        if self._pending is not None and self._pending[0].done():
            self.flush()
        return self._done

    def flush(self) -> None:
        """Wait for the part in flight."""
        if self._pending is not None:
            future, n = self._pending
            self._pending = None
            future.result()
            self._done += n

    def __enter__(self) -> _CacheWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        # an interrupted run still finishes the part in flight (written atomically: whole, or not at all)
        self._pool.shutdown(wait=True)
        if error is not None and self._pending is not None and self._pending[0].exception() is not None:
            log.warning("the vector cache's last part was not written either: %s", self._pending[0].exception())


def _open_cache(config: EmbedConfig, reader: Reader, sae: SAE, output: Path) -> VectorCache:
    root = (config.cache_dir or default_cache_root()) if config.use_cache else output.with_name(f".{output.name}.work")
    return VectorCache(root, vectors_config(config, reader, sae), config.values_dtype)


def _unique_missing(docs: list[Document], keys: list[str], cache: VectorCache) -> list[tuple[Document, str]]:
    seen: set[str] = set()
    todo = []
    for doc, key in zip(docs, keys):
        if key not in cache and key not in seen:
            seen.add(key)
            todo.append((doc, key))
    return todo




def _write_store(output: Path, corpus: Corpus, keys: list[str], cache: VectorCache, reader: Reader,
                 sae: SAE, config: EmbedConfig, fields: pa.Table) -> EmbedResult:
    """Assemble the store in input order from the cache, streaming, and rename it into place."""
    n_tokens, n_chunks = cache.counts(keys)
    result = EmbedResult(output, len(keys), 0, int(n_tokens.sum()), int((n_chunks > 1).sum()),
                         int((n_chunks < 0).sum()), int((n_tokens == 0).sum()), corpus.skipped)
    meta = store_metadata(config, model_metadata(config, reader, sae), corpus)
    meta.update(n_docs=result.n_docs, n_tokens=result.n_tokens, n_chunked=result.n_chunked,
                n_truncated=result.n_truncated)
    texts = [reader.render(doc, config.as_chat)[0] for doc in corpus.documents]  # the text as the model read it
    fields = fields.add_column(1, "text", pa.array(texts, pa.string()))
    writer: StoreWriter | None = None
    try:
        for start in range(0, len(keys), config.window_docs):
            vectors, _ = cache.get(keys[start: start + config.window_docs])
            window = fields.slice(start, len(vectors))
            dense = dense_column(window.column("text").to_pylist()) if config.dense else None
            table = store_table(window, vectors.arrow_columns(config.values_dtype), dense, config.pool_roles)
            if writer is None:
                writer = StoreWriter(output, table.schema, meta)
            writer.write(table)
        assert writer is not None  # one key per document, and a Corpus always has at least one
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return result
