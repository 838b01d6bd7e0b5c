"""Embedding on a Ray cluster (`EmbedConfig(engine="ray")`, `saeembed embed --engine ray`).

The same documents, reader, SAE and settings as a local run, through a pool of Ray Data actors that each
load the reader and SAE once; this process (the driver) writes the store as a folder of parts, one per
`window_docs` documents in input order, which every analysis reads as one store.

Flow: the caller has read and checked the corpus (bad input is refused before Ray starts). One task on
the cluster, with a worker's resources, loads the SAE and the model's config and tokenizer: it runs every
reader/SAE check and says what they put in the store's metadata. The documents of the parts not written
yet (identical documents once) become a Ray dataset of blocks; `map_batches` sends the blocks to `_Worker`
actors, which return each document's vectors and its text as the model read it. Ray restarts an actor
that dies and retries its batch. A part is written, atomically, into the work folder `.NAME.ray-work` as
soon as all its documents are back; when every part is there the folder is renamed to NAME (an earlier
store there is replaced only then).

Resume: the work folder holds `job.json`, a hash of the settings that change the store and of every
document and field. A re-run of the same job keeps the parts already written and embeds only the rest;
a re-run of another job into the same output starts the work folder afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from saeembed import atomic
from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.corpus import Corpus, Document
from saeembed.embedding.kernel import (
    EmbedJob,
    EmbedProgress,
    EmbedResult,
    check_templates,
    dense_column,
    embed_window,
    load_pipeline,
    model_metadata,
    store_metadata,
    store_table,
)
from saeembed.embedding.reader import load_reader
from saeembed.errors import ConfigError, ReaderError
from saeembed.hashing import text_key
from saeembed.outputs import OutputError
from saeembed.ray_runtime import ray_session, require_ray, user_error
from saeembed.store import (
    COUNT_STATS,
    META_KEY,
    VECTOR_COLUMNS,
    StoreError,
    atomic_write_table,
    check_compatible,
    read_meta,
)

JOB_FILE = "job.json"
JOB_VERSION = 1
RETRIES = 3
_PART = re.compile(r"part-\d{5,}\.parquet")
# What must be the same in every part of one store: the model, its weights and precision, the SAE, the
# pooling and the context (the job file already pins the settings and the documents).
_SAME_MODEL = (("model", "id"), ("model", "fingerprint"), ("model", "layer"), ("model", "dtype"),
               ("sae", "fingerprint"), ("sae", "d_sae"), ("sae", "compute_dtype"), ("pooling",), ("max_tokens",))
# Settings that change how the work is run but not the store: a resumed run may change them.
_EXECUTION_ONLY = frozenset({"engine", "ray_address", "workers", "gpus_per_worker", "cpus_per_worker",
                             "batch_tokens", "max_batch_docs", "cache_dir", "use_cache", "skip_invalid"})


class RayEngine:
    writes_folder = True

    def check_available(self) -> None:
        require_ray()

    def run(self, job: EmbedJob) -> EmbedResult:
        """The run on a pool of Ray actors; `n_cached` counts the documents of parts an interrupted run had
        already written."""
        _check_templates_before_ray(job.corpus.documents, job.config)

        def report(docs: int, tokens: int) -> None:
            if job.on_progress:
                job.on_progress(EmbedProgress(docs, len(job.keys), tokens))

        run = embed_with_ray(job.corpus, job.fields, job.keys, job.output, job.config, report)
        totals = run.totals
        return EmbedResult(job.output, run.n_docs, run.n_resumed, totals.n_tokens, totals.n_chunked,
                           totals.n_truncated, totals.n_unpooled, job.corpus.skipped)


def _check_templates_before_ray(docs: list[Document], config: EmbedConfig) -> None:
    """With the Ray engine, conversations are rendered here before any actor starts (the tokenizer only: no
    weights, no SAE), as the local engine does. A model this machine cannot read (on the cluster's disks
    only) is left to the actors, which refuse such records in their first batch."""
    if not config.as_chat and not any(doc.messages for doc in docs):
        return
    try:
        # any layer does: rendering a conversation reads the tokenizer and its template, never a block
        reader = load_reader(str(config.model), 0, device="cpu", revision=config.revision,
                             trust_remote_code=config.trust_remote_code, max_tokens=config.max_tokens)
    except ReaderError:
        return
    check_templates(reader, docs, config)


def worker_cpus(config: EmbedConfig) -> float:
    """CPUs each actor reserves (and torch threads in it): the config's, or 1."""
    return config.cpus_per_worker if config.cpus_per_worker is not None else 1.0


def work_folder(output: Path) -> Path:
    """Where the parts of a run into `output` are written until every one is there."""
    return output.with_name(f".{output.name}.ray-work")


def check_target(output: Path, sources: list[str]) -> None:
    """Refuse, before any work and again just before the final rename, an output that rename would lose
    something to: a folder holding anything but the parts of a store an earlier Ray run wrote (a file of
    another name, a single-file store, a subfolder), one that holds an input, or the file system's root."""
    output = Path(os.path.abspath(output))
    if output == output.parent:
        raise OutputError(f"{output} is the root folder; pass a folder for the store as -o")
    for source in sources:
        if source != "<stdin>" and Path(os.path.abspath(source)).is_relative_to(output):
            raise OutputError(f"{source} is inside {output}: writing the store there would replace the corpus; "
                              f"pass another -o")
    if not output.is_dir():
        return
    for entry in sorted(output.iterdir()):
        if (entry.name.startswith(".") and entry.name.endswith(".tmp")) or entry.name == JOB_FILE:
            continue  # a killed writer's temporary file; the job file a killed final rename left
        if not (_PART.fullmatch(entry.name) and entry.is_file() and "part" in _meta_or_empty(entry)):
            raise OutputError(f"{output} holds {entry.name}, which is not a part of a store `--engine ray` wrote; "
                              f"the store replaces the whole folder, so pass a new or empty folder as -o")


def _meta_or_empty(file: Path) -> dict:
    """A store file's saeembed metadata; empty when the file is not a readable store."""
    try:
        return read_meta(file)
    except StoreError:
        return {}


@dataclass
class PartCounts:
    """What one part holds, kept in its metadata so a resumed run can total the store."""

    n_docs: int
    n_tokens: int
    n_chunked: int
    n_truncated: int
    n_unpooled: int


@dataclass
class RayRun:
    """What a Ray run did (the engine-independent summary is built from it by the pipeline)."""

    n_docs: int
    n_resumed: int
    totals: PartCounts


def embed_with_ray(corpus: Corpus, fields: pa.Table, keys: list[str], output: Path, config: EmbedConfig,
                   on_progress: Callable[[int, int], None] | None = None) -> RayRun:
    """Embed `corpus` (checked, with its `fields_table` and cache `keys`) on Ray into the folder store
    `output`. `on_progress(docs_done, tokens_done)` is called as parts are written."""
    require_ray()
    output = Path(os.path.abspath(output))
    check_target(output, corpus.sources)
    work = work_folder(output)
    parts = _plan(len(keys), config.window_docs)
    job = _job_key(config, keys, fields)
    if _job_in(output) == job:  # killed after the final rename, before the job file went
        return RayRun(len(keys), len(keys), _finish(output, len(parts)))
    done = _written_parts(work, job, len(parts))
    progress = [sum(parts[i][1] - parts[i][0] for i in done), 0]
    if on_progress:
        on_progress(*progress)
    model_meta = read_meta(work / _part_name(min(done), len(parts))) if done else None
    todo = [i for i in range(len(parts)) if i not in done]
    if todo:
        with ray_session(config.ray_address) as ray:
            workers, cpus, gpus = _pool_size(ray, config)
            described = _describe_on_cluster(ray, config, cpus, gpus)
            if model_meta is not None:
                _check_same_model(f"the parts in {work}", model_meta, "the model and SAE now", described)
            model_meta = described
            if not done:
                _start_work(work, job)
            for index, rows in _embedded_parts(ray, config, corpus.documents, keys, parts, todo, workers, cpus, gpus):
                counts = _write_part(work, index, parts, rows, fields, config, model_meta, corpus)
                progress[0] += counts.n_docs
                progress[1] += counts.n_tokens
                if on_progress:
                    on_progress(*progress)
    totals = _commit(work, output, len(parts), len(keys), corpus.sources)
    return RayRun(len(keys), sum(parts[i][1] - parts[i][0] for i in done), totals)


# -- the plan and resume ------------------------------------------------------------------------------

def _plan(n_docs: int, part_docs: int) -> list[tuple[int, int]]:
    """The parts: consecutive runs of `part_docs` documents in input order (a corpus has at least one)."""
    return [(start, min(start + part_docs, n_docs)) for start in range(0, n_docs, part_docs)]


def _part_name(index: int, n_parts: int) -> str:
    """Zero-padded so the names sort in input order (how a folder store is read)."""
    return f"part-{index:0{max(5, len(str(n_parts - 1)))}d}.parquet"


def _job_key(config: EmbedConfig, keys: list[str], fields: pa.Table) -> str:
    """A hash of everything that changes the store: the settings (not how the work is run), every
    document's cache key and every field."""
    settings = {name: value for name, value in asdict(config).items() if name not in _EXECUTION_ONLY}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, fields.schema) as stream:
        stream.write_table(fields)
    from saeembed import __version__

    return text_key(json.dumps(settings, sort_keys=True, default=str), __version__, str(JOB_VERSION),
                    "\n".join(keys), hashlib.blake2b(sink.getvalue(), digest_size=16).hexdigest())


def _written_parts(work: Path, job: str, n_parts: int) -> set[int]:
    """The parts an earlier, interrupted run of this job wrote. The parts of another job (other documents,
    fields or settings) are refused, never deleted: they may be hours of work; a work folder without parts
    (a run that failed before its first) is started afresh."""
    if not work.is_dir():
        return set()
    same = _job_in(work) == job
    if not same and not any(_PART.fullmatch(entry.name) for entry in work.iterdir()):
        shutil.rmtree(work)
        return set()
    if not same:
        raise OutputError(f"{work} holds the parts of an interrupted run with other documents or settings; run "
                          f"that command again to finish it, or delete {work} to start this one")
    atomic.sweep_folder(work)
    return {i for i in range(n_parts) if (work / _part_name(i, n_parts)).is_file()}


def _start_work(work: Path, job: str) -> None:
    """The work folder and its job file, made once the cluster has accepted the run."""
    work.mkdir(parents=True, exist_ok=True)
    atomic.write_text(work / JOB_FILE, json.dumps({"job": job}))


def _job_in(folder: Path) -> str | None:
    """The job a work folder (or a store a killed final rename left it in) belongs to; None when it says none."""
    try:
        job = json.loads((folder / JOB_FILE).read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return None
    return job if isinstance(job, str) else None


# -- running the actors -------------------------------------------------------------------------------

def _describe_on_cluster(ray: Any, config: EmbedConfig, cpus: float, gpus: float) -> dict:
    """What the reader and SAE put in the store's metadata, from one task on the cluster (with a worker's
    resources, so the device and dtype are a worker's). It runs every check of `load_pipeline` (the SAE's
    layer and width against the model) before any actor loads the model: a mismatch is one line here."""
    def describe(config: EmbedConfig) -> dict:
        reader, sae = load_pipeline(config)  # the reader's weights load on first use: not here
        return model_metadata(config, reader, sae)

    task = ray.remote(num_cpus=cpus, num_gpus=gpus or None, max_retries=0)(describe)
    try:
        return ray.get(task.remote(config))
    except Exception as exc:
        raise user_error(exc) from None


def _check_same_model(first_name: str, first: dict, other_name: str, other: dict) -> None:
    """Refuse to put parts embedded differently in one store (a model or SAE changed since an interrupted
    run, or it resumed on other hardware: bfloat16 on GPU, float32 on CPU)."""
    try:
        check_compatible([(first_name, first), (other_name, other)], fields=_SAME_MODEL)
    except StoreError as exc:
        raise StoreError(f"{exc}; the model, SAE or hardware changed since the interrupted run: run it as "
                         f"before, or delete the work folder to start again") from None


def _embedded_parts(ray: Any, config: EmbedConfig, docs: list[Document], keys: list[str],
                    parts: list[tuple[int, int]], todo: list[int], workers: int, cpus: float, gpus: float
                    ) -> Iterator[tuple[int, pa.Table]]:
    """(part index, its rows from the workers in input order) for every part in `todo`, as soon as all its
    documents are back (in whatever order the parts finish)."""
    import ray.data

    blocks, waiting, needed = _dataset_blocks(docs, keys, parts, todo, workers, config.window_docs)
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.raise_original_map_exception  # the caller's, restored after
    context.enable_progress_bars = False  # the caller draws one progress bar
    context.raise_original_map_exception = True  # a worker's own error, not Ray's wrapper of it
    # Ray restarts an actor that dies and retries its batch elsewhere; a batch that kills its worker every
    # time (e.g. the OOM killer) fails the run after RETRIES tries instead of retrying forever. Ray 2.60 has
    # no named parameter for it yet and warns about the generic one (hence `ray[data]<2.64` in the extra).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
        dataset = ray.data.from_arrow(blocks, override_num_blocks=len(blocks)).map_batches(
            type("SaeembedWorker", (_Worker,), {"config": config}), batch_size=max(len(b) for b in blocks),
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=min(workers, len(blocks))),
            num_cpus=cpus, num_gpus=gpus or None, max_task_retries=RETRIES)
    rows: dict[str, tuple[pa.Table, int]] = {}  # key -> (a batch from a worker, row)
    missing = {i: len(set(keys[parts[i][0]: parts[i][1]])) for i in todo}
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.CRITICAL)  # its progress, and failures as stack traces: saeembed says both
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            ready = []
            for row, key in enumerate(batch.column("key").to_pylist()):
                rows[key] = (batch, row)
                for index in waiting.pop(key, ()):
                    missing[index] -= 1
                    if not missing[index]:
                        ready.append(index)
            for index in ready:
                start, end = parts[index]
                yield index, _take(rows, keys[start:end])
                for key in set(keys[start:end]):
                    needed[key] -= 1
                    if not needed[key]:
                        del rows[key]  # a batch is freed once none of its documents is needed
    except Exception as exc:
        raise user_error(exc) from None
    finally:
        data_log.setLevel(level)
        context.enable_progress_bars, context.raise_original_map_exception = saved


def _pool_size(ray: Any, config: EmbedConfig) -> tuple[int, float, float]:
    """Actors, CPUs and GPUs per actor: what was asked, checked against what the cluster's nodes can hold
    (an actor lives on one node); the default is as many actors as they hold."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    have_gpus = sum(node.get("GPU", 0.0) for node in nodes)
    gpus = config.gpus_per_worker if config.gpus_per_worker is not None else (1.0 if have_gpus >= 1 else 0.0)
    cpus = worker_cpus(config)
    slots = sum(min(int(node.get("CPU", 0.0) // cpus), int(node.get("GPU", 0.0) // gpus) if gpus else 1 << 30)
                for node in nodes)
    workers = config.workers or slots
    if not slots or workers > slots:
        raise ConfigError(f"{workers or 1} workers of {cpus:g} CPUs and {gpus:g} GPUs each do not fit the Ray "
                          f"cluster's nodes (room for {slots}; "
                          + ", ".join(f"{n.get('CPU', 0):g} CPUs {n.get('GPU', 0):g} GPUs" for n in nodes)
                          + "); lower --workers, --cpus-per-worker or --gpus-per-worker")
    return workers, cpus, gpus


def _dataset_blocks(docs: list[Document], keys: list[str], parts: list[tuple[int, int]], todo: list[int],
                    workers: int, most: int) -> tuple[list[pa.Table], dict[str, list[int]], dict[str, int]]:
    """The documents of the parts to do (identical documents once; a chat travels as JSON) in input order,
    cut into blocks of at most `most` documents, fewer when that gives every worker at least two blocks (a
    block is what one actor embeds at a time; a part is only how the store is written); which parts wait
    on each document, and how many."""
    waiting: dict[str, list[int]] = {}
    needed: dict[str, int] = {}
    rows = []
    for index in todo:
        start, end = parts[index]
        for row in range(start, end):
            key = keys[row]
            if key not in waiting:
                waiting[key] = []
                rows.append(row)
            if not waiting[key] or waiting[key][-1] != index:
                waiting[key].append(index)
                needed[key] = needed.get(key, 0) + 1
    size = max(1, min(most, -(-len(rows) // (2 * workers))))
    blocks = []
    for start in range(0, len(rows), size):
        block = rows[start: start + size]
        blocks.append(pa.table({"key": pa.array([keys[r] for r in block], pa.string()),
                                "text": pa.array([docs[r].text for r in block], pa.string()),
                                "where": pa.array([docs[r].where for r in block], pa.string()),
                                "messages": pa.array([None if docs[r].messages is None
                                                      else json.dumps(docs[r].messages, default=str)
                                                      for r in block], pa.string())}))
    return blocks, waiting, needed


def _take(rows: dict[str, tuple[pa.Table, int]], keys: list[str]) -> pa.Table:
    """The worker rows of `keys`, in that order."""
    by_batch: dict[int, tuple[pa.Table, list[int], list[int]]] = {}
    for position, key in enumerate(keys):
        batch, row = rows[key]
        entry = by_batch.setdefault(id(batch), (batch, [], []))
        entry[1].append(position)
        entry[2].append(row)
    pieces = [batch.take(pa.array(taken)).append_column("_position", pa.array(positions, pa.int64()))
              for batch, positions, taken in by_batch.values()]
    return pa.concat_tables(pieces).sort_by("_position").drop_columns(["_position"])


class _Worker:
    """A Ray actor: the reader and SAE, loaded once, embedding the batches of documents it is sent. The
    job's config is set on a subclass made per run, so it travels with the class."""

    config: EmbedConfig

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(max(1, int(worker_cpus(self.config))))
        self.reader, self.sae = load_pipeline(self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        config = self.config
        docs = [Document(id=key, text=text, messages=json.loads(chat) if chat is not None else None, where=where)
                for key, text, chat, where in zip(*(batch.column(name).to_pylist()
                                                    for name in ("key", "text", "messages", "where")))]
        pieces: list[pa.Table] = []

        def commit(slots: list[int], vectors: Any, n_chunks: np.ndarray) -> None:
            pieces.append(pa.table({"_slot": pa.array(slots, pa.int64()), **vectors.arrow_columns(config.values_dtype),
                                    "n_chunks": pa.array(n_chunks.astype(np.int32))}))

        embed_window(self.reader, self.sae, docs, config, lambda tokens, fraction: None, commit)
        table = pa.concat_tables(pieces).sort_by("_slot").drop_columns(["_slot"])
        texts = [self.reader.render(doc, config.as_chat)[0] for doc in docs]
        table = table.append_column("key", batch.column("key")).append_column("text", pa.array(texts, pa.string()))
        return table.append_column("dense", dense_column(texts)) if config.dense else table


# -- writing ------------------------------------------------------------------------------------------

def _write_part(work: Path, index: int, parts: list[tuple[int, int]], rows: pa.Table, fields: pa.Table,
                config: EmbedConfig, model_meta: dict, corpus: Corpus) -> PartCounts:
    """Write part `index` (its rows from the workers, in input order) as a store file, atomically."""
    start, end = parts[index]
    window = fields.slice(start, end - start).add_column(1, "text", rows.column("text"))
    table = store_table(window, {name: rows.column(name) for name in (*VECTOR_COLUMNS, *COUNT_STATS)},
                        rows.column("dense") if config.dense else None, config.pool_roles)
    n_tokens = rows.column("n_tokens").to_numpy()
    n_chunks = rows.column("n_chunks").to_numpy()
    counts = PartCounts(end - start, int(n_tokens.sum()), int((n_chunks > 1).sum()), int((n_chunks < 0).sum()),
                        int((n_tokens == 0).sum()))
    meta = store_metadata(config, model_meta, corpus)
    meta.update(n_docs=len(fields), part={"index": index, "of": len(parts), **asdict(counts)})
    atomic_write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta)}),
                       work / _part_name(index, len(parts)))
    return counts


def _commit(work: Path, output: Path, n_parts: int, n_docs: int, sources: list[str]) -> PartCounts:
    """Check every part is there and belongs with the others, put the store's totals in the first part's
    metadata (the one analyses read), and rename the work folder to `output`, replacing what was there."""
    files = [work / _part_name(i, n_parts) for i in range(n_parts)]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise StoreError(f"the Ray run ended without {len(missing)} part(s) ({missing[0]}, ...); the parts written "
                         f"are kept in {work}: run the same command again to finish")
    metas = [(file, read_meta(file)) for file in files]
    for file, meta in metas[1:]:
        _check_same_model(metas[0][0].name, metas[0][1], file.name, meta)
    totals = _totals([meta for _, meta in metas])
    meta = metas[0][1]
    meta.update(n_docs=n_docs, n_tokens=totals.n_tokens, n_chunked=totals.n_chunked, n_truncated=totals.n_truncated)
    first = pq.read_table(files[0])
    atomic_write_table(first.replace_schema_metadata({META_KEY: json.dumps(meta)}), files[0])
    check_target(output, sources)  # nothing the user put there during the run is replaced
    _swap(work, output)
    _drop_job_file(output)
    return totals


def _finish(output: Path, n_parts: int) -> PartCounts:
    """The last step of a run killed between the final rename and it: the job file goes; the totals are
    read back from the parts."""
    _drop_job_file(output)
    return _totals([read_meta(output / _part_name(i, n_parts)) for i in range(n_parts)])


def _drop_job_file(output: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (output / JOB_FILE).unlink()


def _totals(metas: list[dict]) -> PartCounts:
    counts = [[meta["part"][name] for name in PartCounts.__dataclass_fields__] for meta in metas]
    return PartCounts(*(int(sum(column)) for column in zip(*counts)))


def _swap(work: Path, output: Path) -> None:
    """Rename the finished work folder to `output`; an earlier store there is moved aside first and deleted
    after (and one a killed swap left aside is deleted on the next)."""
    import glob

    old = output.with_name(f".{output.name}.replaced-{secrets.token_hex(4)}")
    if output.exists():
        os.replace(output, old)
    os.replace(work, output)
    for stale in glob.glob(str(output.with_name(f".{glob.escape(output.name)}.replaced-*"))):
        shutil.rmtree(stale, ignore_errors=True)
