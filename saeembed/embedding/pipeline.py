"""The embedding pipeline: corpus -> reader -> SAE -> pool -> store, with cache and resume.

`Embedder` checks the input and the output before any work, builds the job (`kernel.EmbedJob`), and hands it
to the engine the config names (`ENGINES`: `local_engine`, `ray_engine`), which share the kernel."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.corpus import Corpus, read_corpus
from saeembed.embedding.kernel import (
    EmbedJob,
    EmbedProgress,
    EmbedResult,
    Engine,
    ProgressFn,
    document_key,
    fields_table,
    load_pipeline,
)
from saeembed.embedding.local_engine import LocalEngine
from saeembed.embedding.ray_engine import RayEngine
from saeembed.embedding.reader import Reader
from saeembed.errors import ConfigError
from saeembed.outputs import OutputError, check_output
from saeembed.sae import SAE
from saeembed.store import Store

__all__ = ["ENGINES", "EmbedProgress", "EmbedResult", "Embedder", "ProgressFn", "embed", "scratch_folder"]

ENGINES: dict[str, type[Engine]] = {"local": LocalEngine, "ray": RayEngine}
"""Each `EmbedConfig.engine` choice and the engine that runs it."""


class Embedder:
    """A reader and an SAE, loaded once, that embed documents into stores: in memory (`embed`) or from
    files (`embed_files`, what `saeembed embed` runs). Vectors go through the content-addressed cache,
    so a document already embedded with the same reader, SAE and settings costs no model run. With
    `engine="ray"` the work runs on a pool of Ray actors instead (`saeembed.embedding.ray_engine`): the
    store is then a folder of parts, and an interrupted run resumes from the parts already written.

    Args:
        preset: a preset name (`saeembed presets`); None with no `model`/`sae` is the offline default.
        config: a whole EmbedConfig instead of a preset and settings.
        settings: EmbedConfig fields on top of the preset (`model`, `sae`, `layer`, `pooling`, ...).

    Examples:
        >>> embedder = Embedder()                                  # the offline default  # doctest: +SKIP
        >>> store = embedder.embed(["a first text", "a second one"])  # doctest: +SKIP
        >>> store = embedder.embed(frame, path="tweets.parquet")   # a DataFrame; other columns kept  # doctest: +SKIP
    """

    def __init__(self, preset: str | None = None, *, config: EmbedConfig | None = None, **settings: Any) -> None:
        from saeembed.embedding.presets import resolve_config

        if config is not None and (preset is not None or settings):
            raise ConfigError("give either config or a preset and settings, not both")
        self.config = config if config is not None else resolve_config(
            preset, settings.pop("model", None), settings.pop("sae", None), **settings)
        self._loaded: tuple[Reader, SAE] | None = None

    @property
    def reader(self) -> Reader:
        return self._load()[0]

    @property
    def sae(self) -> SAE:
        return self._load()[1]

    def _load(self) -> tuple[Reader, SAE]:
        """The reader and SAE, loaded on first use (so bad input is refused before the model loads)."""
        if self._loaded is None:
            self._loaded = load_pipeline(self.config)
        return self._loaded

    def embed(self, documents: Any, path: str | Path | None = None, *, text_field: str | None = None,
              id_field: str | None = None, on_progress: ProgressFn | None = None) -> Store:
        """A store of in-memory documents: one string, a list (or pandas / polars Series) of strings, a list
        of records (dicts; the text under `text_field`, the id under `id_field`, other keys kept as
        fields), or a polars or pandas DataFrame with a text column (other columns kept). `text_field` and
        `id_field` default to the config's. Written to `path` too when given."""
        from saeembed.embedding.corpus import records_corpus
        from saeembed.store import load_store

        config = replace(self.config, text_field=text_field or self.config.text_field,
                         id_field=id_field or self.config.id_field)
        output = check_output(path, folder=ENGINES[config.engine].writes_folder, suffixes=(".parquet",),
                              what="a store (Parquet)") if path is not None else None
        corpus = records_corpus(documents, text_field=config.text_field, id_field=config.id_field,
                                skip_invalid=config.skip_invalid, check_field_types=True)
        if output is not None:
            self._run(corpus, output, on_progress, config)
            return load_store(output)
        with scratch_folder() as tmp:
            self._run(corpus, Path(tmp) / "store.parquet", on_progress, config)
            store = load_store(Path(tmp) / "store.parquet")
        store.path = Path("<in memory>")
        return store

    def embed_files(self, inputs: list[str] | str, output: str | Path,
                    on_progress: ProgressFn | None = None) -> EmbedResult:
        """Embed the documents of `inputs` (JSONL, CSV, Parquet, TXT files, globs, `-`) into the store
        `output`. Every input problem (including a field whose kind of value differs across records,
        which the store could not hold), an output that cannot be written, and every reader/SAE
        mismatch are reported before the model is loaded. Running the same call again after an
        interruption resumes: what was finished (every window, and within a window what was done every
        `COMMIT_SECONDS`) comes from the cache."""
        config = self.config
        engine = ENGINES[config.engine]()
        engine.check_available()
        output = check_output(output, folder=engine.writes_folder, suffixes=(".parquet",), what="a store (Parquet)")
        corpus = read_corpus(inputs, text_field=config.text_field, id_field=config.id_field,
                             fmt=config.input_format, skip_invalid=config.skip_invalid, check_field_types=True)
        _refuse_overwriting_an_input(output, corpus)
        return self._run(corpus, output, on_progress)

    def _run(self, corpus: Corpus, output: Path, on_progress: ProgressFn | None,
             config: EmbedConfig | None = None) -> EmbedResult:
        """Embed `corpus` into `output` with this embedder's reader and SAE (`config`: the embedder's, or a
        copy whose reading fields differ)."""
        started = time.perf_counter()
        config = config or self.config
        fields = fields_table(corpus.documents, config.id_field)  # refuses what a store cannot hold, before work
        keys = [document_key(doc, config.as_chat) for doc in corpus.documents]
        job = EmbedJob(corpus, fields, keys, output, config, on_progress, self._load)
        result = ENGINES[config.engine]().run(job)
        result.seconds = time.perf_counter() - started
        return result


def embed(inputs: list[str] | str, output: str | Path, config: EmbedConfig,
          on_progress: ProgressFn | None = None) -> EmbedResult:
    """Embed the documents of `inputs` into the store `output` (`Embedder(config=config).embed_files`).

    Examples:
        >>> cfg = EmbedConfig(model="gpt2", sae="jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre")
        >>> embed(["corpus.jsonl"], "corpus.parquet", cfg)  # doctest: +SKIP
    """
    return Embedder(config=config).embed_files(inputs, output, on_progress)


def scratch_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder for a store that is loaded and dropped; one line when none can be made."""
    try:
        return tempfile.TemporaryDirectory(prefix="saeembed-")
    except OSError as exc:
        raise OutputError(f"cannot create a temporary folder in {tempfile.gettempdir()} ({exc.strerror or exc}); "
                          f"set TMPDIR to a writable folder") from None


def _refuse_overwriting_an_input(output: Path, corpus: Corpus) -> None:
    for source in corpus.sources:
        if source != "<stdin>" and Path(source).resolve() == output.resolve():
            raise OutputError(f"{output} is also an input: writing the store there would replace the corpus; "
                              f"pass another -o")
