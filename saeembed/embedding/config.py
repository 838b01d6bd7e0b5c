"""Embedding settings, kept free of heavy imports so the CLI can take its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from saeembed.errors import ConfigError
from saeembed.settings import check_fields, refuse, setting

Pooling = Literal["max", "mean", "sum", "count"]
LongMode = Literal["chunk", "truncate"]
ValuesDtype = Literal["float16", "float32"]
ComputeDtype = Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"]
SaeDtype = Literal["auto", "fast", "float32", "bfloat16", "float16"]
InputFormat = Literal["auto", "jsonl", "csv", "parquet", "txt"]
Engine = Literal["local", "ray"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
COMPUTE_DTYPES: tuple[str, ...] = get_args(ComputeDtype)


@dataclass
class EmbedConfig:
    """How documents are embedded. CLI defaults come from here."""

    model: str | Path = setting(flag="--model")
    """Hugging Face id or local folder of the reader."""
    sae: str | Path = setting(flag="--sae")
    """Local file/folder or hub id (`org/repo[/subfolder]`) of the SAE."""
    layer: int | None = setting(None, at_least=0, flag="--layer")
    """Block whose output is read (0-based); defaults to the layer the SAE's files name."""
    sae_format: str | None = setting(None, flag="--sae-format")
    """Force the SAE format instead of detecting it."""
    revision: str | None = setting(None, flag="--revision")
    """Branch, tag or commit of the reader on the hub (None: the default branch)."""
    sae_revision: str | None = setting(None, flag="--sae-revision")
    """Branch, tag or commit of the SAE on the hub."""
    pooling: Pooling = setting("max", flag="--pool")
    """How a per-token SAE's codes become one vector per document: max (the paper), mean, sum, or
    count (tokens on which the latent fires). Document-level SAEs read the mean activation and ignore it."""
    values_dtype: ValuesDtype = setting("float16", flag="--values-dtype")
    """float16 (default, half the bytes) or float32 for the stored values."""
    device: str = setting("auto", flag="--device")
    """auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps."""
    dtype: ComputeDtype = setting("auto", flag="--dtype")
    """Compute dtype of the reader: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16."""
    sae_dtype: SaeDtype = setting("auto", flag="--sae-dtype")
    """Compute dtype of the SAE encoder: auto (the reader's), fast (bfloat16 where this machine multiplies it
    natively: a CUDA GPU from Ampere on, or a CPU with AMX or AVX512-BF16; else the reader's), float32,
    bfloat16, float16. On `minilm-l3-tokens`, bfloat16 keeps 99.3% of a document's latents (Jaccard with
    float32's; the others sit at a token's top-k edge, where rounding reorders near-ties) and their values
    within 0.2% (median). It is recorded in the store; stores of different encoder dtypes are not compared."""
    batch_tokens: int = setting(16384, at_least=1, flag="--batch-tokens")
    """Token budget of one forward batch (padded length x rows)."""
    max_batch_docs: int = setting(256, at_least=1)
    """At most this many windows in one forward batch, however short."""
    max_tokens: int | None = setting(None, at_least=2, flag="--max-tokens")
    """Context of one forward window; longer documents are chunked or truncated (`long`). None: the
    reader's own limit."""
    long: LongMode = setting("chunk", flag="--long")
    """chunk: a longer document is read in windows and pooled over all of them; truncate: only its
    first window is read."""
    pool_roles: tuple[str, ...] | None = setting(None, flag="--pool-roles")
    """Chats: pool only over these roles' tokens while the whole conversation is read."""
    as_chat: str | None = setting(None, flag="--as-chat")
    """Wrap plain text as one chat turn of this role (the paper wraps each document as assistant)."""
    input_format: InputFormat = setting("auto", flag="--input-format")
    """auto (by suffix; stdin is sniffed), jsonl, csv, parquet or txt."""
    text_field: str = setting("text", flag="--text-field")
    """Field of each record holding the document's text."""
    id_field: str = setting("id", flag="--id-field")
    """Field holding the document's id (records without one get their 0-based position)."""
    skip_invalid: bool = setting(False, flag="--skip-invalid")
    """Skip (and report) records without usable text instead of refusing the corpus."""
    cache_dir: Path | None = setting(None, flag="--cache-dir")
    """Where vectors are cached by content; None means `default_cache_root()`."""
    use_cache: bool = True
    """False keeps the work folder beside the output (for resume) and deletes it on success."""
    window_docs: int = setting(2048, at_least=1)
    """Documents per window of work; within a window, finished documents reach the cache every
    `kernel.COMMIT_SECONDS`, so a killed run loses at most that much work."""
    dense: bool = setting(False, flag="--dense")
    """Also store each document's dense sentence embedding (all-MiniLM-L6-v2, column `dense`), for
    `search --dense` / `--hybrid`."""
    trust_remote_code: bool = setting(False, flag="--trust-remote-code")
    """Run model code shipped with a hub model. Off unless asked: it executes code from the hub."""
    engine: Engine = setting("local", flag="--engine")
    """local: this process. ray: a pool of Ray actors that each load the reader and SAE once
    (`pip install "saeembed[ray]"`); the output is then a folder store of parts, one per `window_docs`
    documents, and an interrupted run resumes from the parts already written."""
    ray_address: str | None = setting(None, flag="--ray-address")
    """The Ray cluster to join (`auto`, `ray://host:10001`, host:port); None starts a local Ray in this
    process, or uses the one `ray.init()` already started."""
    workers: int | None = setting(None, at_least=1, flag="--workers")
    """Ray actors in the pool; None: as many as the cluster's GPUs (with `gpus_per_worker`) or CPUs allow."""
    gpus_per_worker: float | None = setting(None, at_least=0, flag="--gpus-per-worker")
    """GPUs each actor reserves; None: 1 when the cluster has GPUs, else 0."""
    cpus_per_worker: float | None = setting(None, at_least=0.01, flag="--cpus-per-worker")
    """CPUs each actor reserves (and the threads torch uses in it); None: 1."""

    def __post_init__(self) -> None:
        for name in ("model", "sae"):
            if not isinstance(getattr(self, name), (str, Path)) or not str(getattr(self, name)).strip():
                refuse(self, name, "give a hub id or a local path")
        check_fields(self)
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda", "mps")
                                                    or self.device.startswith("cuda:")):
            refuse(self, "device", "choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            refuse(self, "ray_address", "give 'auto', 'ray://HOST:PORT' or HOST:PORT, or None for a local Ray")
        ray_only = ("ray_address", "workers", "gpus_per_worker", "cpus_per_worker")
        if self.engine == "local" and any(getattr(self, name) is not None for name in ray_only):
            raise ConfigError("EmbedConfig: ray_address, workers, gpus_per_worker and cpus_per_worker (--ray-address, "
                              "--workers, --gpus-per-worker, --cpus-per-worker) need engine='ray' (--engine ray); "
                              "set it or drop them")
        for name in ("text_field", "id_field"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                refuse(self, name, "give a field name")
        if self.pool_roles is not None:
            if isinstance(self.pool_roles, str) or not all(isinstance(r, str) and r for r in self.pool_roles):
                refuse(self, "pool_roles", "give role names, e.g. ('assistant',)")
            self.pool_roles = tuple(self.pool_roles)
        if self.as_chat is not None and (not isinstance(self.as_chat, str) or not self.as_chat):
            refuse(self, "as_chat", "give a role name, e.g. 'assistant'")
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, Path)) or not str(self.cache_dir).strip():
                refuse(self, "cache_dir", "give a folder, or None for the default cache")
            self.cache_dir = Path(self.cache_dir)
