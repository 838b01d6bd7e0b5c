"""`saeembed embed`: corpus files -> a Parquet store of SAE embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.ui import parse_roles, print_json, shown, stderr, user_errors
from saeembed.embedding.config import EmbedConfig

# Every option is EmbedConfig's field of the same name (its help is the field's docstring); unset (None), a
# field keeps the preset's value or the config's default, so a preset's own pooling or context is not
# overridden by a CLI default.
_S = options.preset_setting


def run(
    inputs: Annotated[list[str], typer.Argument(help="JSONL, CSV, Parquet or text files, globs, or - for stdin.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Store to write (.parquet; a folder with "
                                                                "--engine ray).")],
    model: Optional[str] = _S(EmbedConfig, "model", "--model"),
    sae: Optional[str] = _S(EmbedConfig, "sae", "--sae"),
    preset: Annotated[Optional[str], typer.Option(help="Named reader + SAE bundle (`saeembed presets`); "
                                                  "without --model/--sae the offline `default`.")] = None,
    layer: Optional[int] = _S(EmbedConfig, "layer", "--layer"),
    sae_format: Optional[str] = _S(EmbedConfig, "sae_format", "--sae-format"),
    revision: Optional[str] = _S(EmbedConfig, "revision", "--revision"),
    sae_revision: Optional[str] = _S(EmbedConfig, "sae_revision", "--sae-revision"),
    input_format: Optional[str] = _S(EmbedConfig, "input_format", "--input-format"),
    text_field: Optional[str] = _S(EmbedConfig, "text_field", "--text-field"),
    id_field: Optional[str] = _S(EmbedConfig, "id_field", "--id-field"),
    pool: Optional[str] = _S(EmbedConfig, "pooling", "--pool"),
    pool_roles: Optional[str] = _S(EmbedConfig, "pool_roles", "--pool-roles"),
    as_chat: Optional[str] = _S(EmbedConfig, "as_chat", "--as-chat"),
    long: Optional[str] = _S(EmbedConfig, "long", "--long"),
    max_tokens: Optional[int] = _S(EmbedConfig, "max_tokens", "--max-tokens"),
    batch_tokens: Optional[int] = _S(EmbedConfig, "batch_tokens", "--batch-tokens"),
    device: Optional[str] = _S(EmbedConfig, "device", "--device"),
    dtype: Optional[str] = _S(EmbedConfig, "dtype", "--dtype"),
    sae_dtype: Optional[str] = _S(EmbedConfig, "sae_dtype", "--sae-dtype"),
    values_dtype: Optional[str] = _S(EmbedConfig, "values_dtype", "--values-dtype"),
    skip_invalid: bool = _S(EmbedConfig, "skip_invalid", "--skip-invalid"),
    dense: bool = _S(EmbedConfig, "dense", "--dense"),
    cache_dir: Optional[Path] = _S(EmbedConfig, "cache_dir", "--cache-dir"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not keep vectors for later runs (local "
                                                              "engine).")] = False,
    trust_remote_code: bool = _S(EmbedConfig, "trust_remote_code", "--trust-remote-code"),
    engine: Optional[str] = _S(EmbedConfig, "engine", "--engine"),
    ray_address: Optional[str] = _S(EmbedConfig, "ray_address", "--ray-address"),
    workers: Optional[int] = _S(EmbedConfig, "workers", "--workers"),
    gpus_per_worker: Optional[float] = _S(EmbedConfig, "gpus_per_worker", "--gpus-per-worker"),
    cpus_per_worker: Optional[float] = _S(EmbedConfig, "cpus_per_worker", "--cpus-per-worker"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout.")] = False,
) -> None:
    """Embed documents into sparse SAE vectors (pooled token codes, or one document code) stored as Parquet."""
    from commands.progress import embed_progress
    from saeembed.embedding.pipeline import embed
    from saeembed.embedding.presets import resolve_config

    with user_errors():
        # every value is checked by EmbedConfig, which names the option of a bad one
        config = resolve_config(preset, model, sae, layer=layer, sae_format=sae_format, revision=revision,
                                sae_revision=sae_revision, input_format=input_format,
                                pooling=pool, values_dtype=values_dtype, device=device, dtype=dtype,
                                sae_dtype=sae_dtype, batch_tokens=batch_tokens, max_tokens=max_tokens, long=long,
                                pool_roles=parse_roles(pool_roles), as_chat=as_chat, text_field=text_field,
                                id_field=id_field, skip_invalid=skip_invalid, cache_dir=cache_dir, dense=dense,
                                use_cache=not no_cache, trust_remote_code=trust_remote_code, engine=engine,
                                ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker)
        with embed_progress(disabled=quiet) as on_progress:
            result = embed(inputs, output, config, on_progress=on_progress)
    for problem in result.skipped:
        stderr.print(f"[yellow]skipped[/yellow] {shown(problem)}", highlight=False)
    notes = []
    if result.n_chunked:
        notes.append(f"{result.n_chunked} longer than the context, read in chunks")
    if result.n_truncated:
        notes.append(f"{result.n_truncated} truncated to the context")
    if result.n_unpooled:
        notes.append(f"{result.n_unpooled} with no token to pool")
    if json_out:
        print_json({"path": str(result.path), "docs": result.n_docs, "cached": result.n_cached,
                    "tokens": result.n_tokens, "chunked": result.n_chunked, "truncated": result.n_truncated,
                    "unpooled": result.n_unpooled, "skipped": [str(p) for p in result.skipped],
                    "seconds": round(result.seconds, 3)})
    elif not quiet:
        reused = "from parts an interrupted run wrote" if config.engine == "ray" else "from cache"
        stderr.print(f"[green]wrote[/green] {shown(result.path)}: {result.n_docs} documents, {result.n_tokens} tokens "
                     f"({result.n_cached} {reused}) in {result.seconds:.1f}s"
                     + (f"; {'; '.join(notes)}" if notes else ""), highlight=False)
