"""`saeembed train-sae`: train a TopK SAE on a corpus's activations and save it in SAELens format.

Activations stream from the corpus through the reader (windows of documents, optionally cached
as float16 on disk) into a bounded shuffle buffer. Checkpoints are written every
`checkpoint_seconds`; running the same command again resumes from the last one (the activations
that were waiting in the shuffle buffer at that moment are skipped, so a resumed run sees slightly
fewer tokens than an uninterrupted one).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypedDict

import torch

from saeembed.atomic import atomic_write
from saeembed.embedding.corpus import read_corpus
from saeembed.embedding.reader import load_reader
from saeembed.errors import SAEError
from saeembed.hashing import text_key
from saeembed.outputs import check_output
from saeembed.train.activations import ActivationCache, ShuffleBuffer, window_activations
from saeembed.train.config import Reads, TrainConfig
from saeembed.train.topk import TopKSAE, TopKTrainer, default_lr, evaluate

CHECKPOINT = "checkpoint.safetensors"  # tensors + the run's position in its metadata: one atomic file


@dataclass
class TrainProgress:
    step: int
    tokens: int
    epoch: int
    train_fvu: float
    dead_fraction: float
    eval: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    path: Path
    steps: int
    tokens: int
    eval: dict
    resumed_from_step: int
    seconds: float
    skipped: list = field(default_factory=list)
    """Documents left out with `skip_invalid` (corpus.Problem: where and why)."""


class _Stream(TypedDict):
    """The arguments of `window_activations` every pass over the corpus shares."""

    window_docs: int
    batch_tokens: int
    max_batch_docs: int
    reads: Reads


def train_sae(inputs: list[str] | str, output: str | Path, config: TrainConfig,
              on_progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train a TopK SAE on the reader's layer-`layer` activations of the corpus; save to `output`.

    Examples:
        >>> cfg = TrainConfig(model="sentence-transformers/all-MiniLM-L6-v2", layer=3, latents=4096)
        >>> train_sae(["corpus.jsonl"], "my-sae/", cfg)  # doctest: +SKIP
    """
    started = time.perf_counter()
    output = check_output(output, folder=True)  # before the corpus and the model: not at the final save
    corpus = read_corpus(inputs, text_field=config.text_field, id_field=config.id_field,
                         skip_invalid=config.skip_invalid)
    reader = load_reader(str(config.model), config.layer, device=config.device, dtype=config.dtype,
                         revision=config.revision, trust_remote_code=config.trust_remote_code)
    docs = list(corpus.documents)
    random.Random(config.seed).shuffle(docs)
    n_holdout = max(1, int(len(docs) * config.holdout_fraction)) if len(docs) > 1 else 0
    holdout, train_docs = docs[:n_holdout], docs[n_holdout:]
    stream = _Stream(window_docs=config.window_docs, batch_tokens=config.batch_tokens, max_batch_docs=256,
                     reads=config.reads)
    cache = ActivationCache(config.activations_dir, reader, train_docs, config.window_docs, config.reads) \
        if config.activations_dir else None
    eval_x = _held_out(window_activations(reader, holdout, **stream), config.eval_tokens, reader.spec.hidden_size)

    generator = torch.Generator().manual_seed(config.seed)
    sae = TopKSAE(reader.spec.hidden_size, config.latents, config.k, generator).to(reader.device)  # fp32
    dead_after = config.dead_after_tokens or (10_000 if config.reads == "document" else 500_000)
    trainer = TopKTrainer(sae, config.lr or default_lr(config.latents), config.aux_k or reader.spec.hidden_size // 2,
                          config.aux_coef, dead_after, prefixes=tuple(config.matryoshka))
    run_key = text_key(json.dumps(_identity(config), sort_keys=True), *(d.text or "" for d in docs))
    position = _resume(output, run_key, trainer)
    resumed_from = position["step"]
    progress = TrainProgress(position["step"], position["tokens"], position["epoch"], float("nan"), 0.0)
    last_checkpoint = time.monotonic()
    buffer = ShuffleBuffer(config.buffer_tokens, config.batch_size, generator)
    # Document vectors are small (one row per document): read the corpus once and keep them for every epoch.
    kept = list(window_activations(reader, train_docs, cache=cache, **stream)) if config.reads == "document" else None
    done = False
    for epoch in range(position["epoch"], config.epochs):
        start_window = position["window"] if epoch == position["epoch"] else 0
        windows = kept[start_window:] if kept is not None else \
            window_activations(reader, train_docs, start_window=start_window, cache=cache, **stream)
        for window, acts in windows:
            if progress.step == 0 and window == 0 and epoch == 0:
                with torch.no_grad():
                    sae.b_dec.copy_(acts.mean(0))  # the paper starts b_dec at the data's centre
            for batch in buffer.add(acts):
                done = _step(trainer, batch, progress, config, eval_x, on_progress)
                if done:
                    break
            if done:
                break
            if time.monotonic() - last_checkpoint > config.checkpoint_seconds:
                _checkpoint(output, run_key, trainer, progress, epoch, window + 1)
                last_checkpoint = time.monotonic()
        if not done:
            for batch in buffer.drain():
                done = _step(trainer, batch, progress, config, eval_x, on_progress)
                if done:
                    break
        if done:
            break
        _checkpoint(output, run_key, trainer, progress, epoch + 1, 0)
    if progress.step == 0:
        raise SAEError(f"the corpus gave fewer than one batch of training tokens ({config.batch_size}); "
                       f"add documents or lower --batch-size")
    final = evaluate(sae, eval_x) if len(eval_x) else {}
    _save_saelens(output, sae, config, reader, corpus.sources, progress, final)
    (output / CHECKPOINT).unlink(missing_ok=True)
    return TrainResult(output, progress.step, progress.tokens, final, resumed_from, time.perf_counter() - started,
                       corpus.skipped)


def _held_out(windows, max_tokens: int, width: int) -> torch.Tensor:
    """The first `max_tokens` held-out activations; stops running the model once it has them."""
    parts, n = [torch.zeros(0, width)], 0
    for _, acts in windows:
        parts.append(acts)
        n += len(acts)
        if n >= max_tokens:
            break
    return torch.cat(parts)[:max_tokens]


def _step(trainer: TopKTrainer, batch: torch.Tensor, progress: TrainProgress, config: TrainConfig,
          eval_x: torch.Tensor, on_progress: Callable[[TrainProgress], None] | None) -> bool:
    stats = trainer.step(batch)
    progress.step += 1
    progress.tokens += len(batch)
    progress.train_fvu, progress.dead_fraction = stats.fvu, stats.dead_fraction
    if len(eval_x) and progress.step % config.eval_every_steps == 0:
        progress.eval = evaluate(trainer.sae, eval_x)
    if on_progress:
        on_progress(progress)
    return config.max_train_tokens is not None and progress.tokens >= config.max_train_tokens


def _identity(config: TrainConfig) -> dict:
    """The settings a checkpoint must share with the run that resumes it."""
    skip = {"checkpoint_seconds", "eval_every_steps", "activations_dir", "device", "save_dtype", "skip_invalid"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in skip}


def _resume(output: Path, run_key: str, trainer: TopKTrainer) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = output / CHECKPOINT
    fresh = {"step": 0, "tokens": 0, "epoch": 0, "window": 0}
    if not path.exists():
        return fresh
    try:
        with safe_open(str(path), "pt") as fh:
            state = json.loads((fh.metadata() or {}).get("state", "{}"))
        if state.get("run_key") != run_key:
            raise SAEError(f"{output} holds a checkpoint of a different training run (other corpus or settings); "
                           f"pass another -o, or delete {path} to start over")
        trainer.load_state(load_file(str(path)))
        return {key: state[key] for key in fresh}
    except SAEError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON and shape errors of a damaged file alike
        raise SAEError(f"{path} is damaged ({' '.join(str(exc).split())[:120]}); delete it to train from the "
                       f"start") from None


def _checkpoint(output: Path, run_key: str, trainer: TopKTrainer, progress: TrainProgress, epoch: int,
                window: int) -> None:
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    state = {"run_key": run_key, "step": progress.step, "tokens": progress.tokens, "epoch": epoch, "window": window}
    atomic_write(output / CHECKPOINT, lambda p: save_file(trainer.state(), str(p),
                                                           metadata={"state": json.dumps(state)}))


def _save_saelens(output: Path, sae: TopKSAE, config: TrainConfig, reader, sources: list[str],
                  progress: TrainProgress, final: dict) -> None:
    from safetensors.torch import save_file

    from saeembed import __version__

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.save_dtype]
    output.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    atomic_write(output / "sae_weights.safetensors", lambda p: save_file(
        {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}, str(p)))
    cfg = {
        "architecture": "topk", "d_in": sae.W_enc.shape[0], "d_sae": sae.W_enc.shape[1], "k": config.k,
        "dtype": config.save_dtype, "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {
            "model_name": reader.spec.model, "model_revision": reader.spec.revision,
            "hook_name": f"blocks.{config.layer}.hook_resid_post", "prepend_bos": True,
            "exclude_special_tokens": True, "l0": final.get("l0"),
            "saeembed": {"version": __version__, "recipe": "topk, Gao et al. 2024 (AuxK, unit-norm decoder)",
                         "reads": config.reads,
                         "training_data": sources, "training_tokens": progress.tokens, "steps": progress.step,
                         "held_out": final, "config": _identity(config)},
        },
    }
    atomic_write(output / "cfg.json", lambda p: p.write_text(json.dumps(cfg, indent=2, default=str)))
