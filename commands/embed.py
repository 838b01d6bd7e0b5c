"""`saeembed embed`: corpus files -> a Parquet store of SAE embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from commands.ui import parse_roles, print_json, shown, stderr, user_errors
from saeembed.embedding.config import POOLINGS, EmbedConfig

_D = EmbedConfig.__dataclass_fields__  # CLI defaults come from the library's config


def run(
    inputs: Annotated[list[str], typer.Argument(help="JSONL, CSV, Parquet or text files, globs, or - for stdin.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Store to write (.parquet; a folder with "
                                                                "--engine ray).")],
    model: Annotated[Optional[str], typer.Option(help="Reader: Hugging Face id or local folder.")] = None,
    sae: Annotated[Optional[str], typer.Option(help="SAE: local file/folder or hub id org/repo[/subfolder].")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Named reader + SAE bundle (`saeembed presets`); "
                                                  "without --model/--sae the offline `default`.")] = None,
    layer: Annotated[Optional[int], typer.Option(help="Read the output of block L (0-based); "
                                                 "default: the layer the SAE's files name.")] = None,
    sae_format: Annotated[Optional[str], typer.Option(help="Force the SAE format.")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Model revision on the hub.")] = None,
    sae_revision: Annotated[Optional[str], typer.Option(help="SAE revision on the hub.")] = None,
    input_format: Annotated[str, typer.Option(help="auto, jsonl, csv, parquet or txt.")] = _D["input_format"].default,
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = _D["text_field"].default,
    id_field: Annotated[str, typer.Option(help="Field holding the id (else the 0-based line).")
                        ] = _D["id_field"].default,
    pool: Annotated[str, typer.Option(help=f"Pooling over tokens: {', '.join(POOLINGS)}.")] = _D["pooling"].default,
    pool_roles: Annotated[Optional[str], typer.Option(help="Chats: pool only these roles' tokens, "
                                                      "e.g. assistant.")] = None,
    as_chat: Annotated[Optional[str], typer.Option(help="Wrap plain text as one chat turn of this role.")] = None,
    long: Annotated[str, typer.Option(help="Documents longer than the context: chunk or truncate.")
                    ] = _D["long"].default,
    max_tokens: Annotated[Optional[int], typer.Option(help="Context of one forward window.")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Token budget per batch.")] = _D["batch_tokens"].default,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = _D["device"].default,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16.")
                     ] = _D["dtype"].default,
    values_dtype: Annotated[str, typer.Option(help="Stored values: float16 or float32.")] = _D["values_dtype"].default,
    skip_invalid: Annotated[bool, typer.Option(help="Embed the valid documents and list the others.")] = False,
    dense: Annotated[bool, typer.Option("--dense", help="Also store a dense sentence embedding per document "
                                                        "(all-MiniLM-L6-v2), for search --dense/--hybrid.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Vector cache folder (local engine; --engine ray "
                                                      "resumes from its parts).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not keep vectors for later runs (local "
                                                              "engine).")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code to run.")] = False,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (a pool of Ray actors; writes a folder "
                                             "store of parts and resumes from them).")] = _D["engine"].default,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (auto, ray://HOST:10001); "
                                                       "default: start a local Ray.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray actors, each holding the reader and SAE; "
                                                   "default: as many as the GPUs (or CPUs) allow.")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per Ray actor; default: 1 when the "
                                                             "cluster has GPUs, else 0.")] = None,
    cpus_per_worker: Annotated[Optional[float], typer.Option(help="CPUs per Ray actor (torch threads in it); "
                                                             "default 1.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON on stdout.")] = False,
) -> None:
    """Embed documents into sparse SAE vectors (pooled token codes, or one document code) stored as Parquet."""
    from commands.progress import embed_progress
    from saeembed.embedding.pipeline import embed
    from saeembed.embedding.presets import resolve_config

    with user_errors():
        # pooling, long, values_dtype, engine ...: EmbedConfig refuses a bad value naming the option
        on_ray = engine == "ray"
        ray_settings = {"ray_address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker,
                        "cpus_per_worker": cpus_per_worker}
        if not on_ray and any(value is not None for value in ray_settings.values()):
            raise typer.BadParameter("--ray-address, --workers, --gpus-per-worker and --cpus-per-worker need "
                                     "--engine ray", param_hint="--engine")
        config = resolve_config(preset, model, sae, layer=layer, sae_format=sae_format, revision=revision,
                                sae_revision=sae_revision, input_format=input_format,
                                pooling=pool, values_dtype=values_dtype, device=device, dtype=dtype,
                                batch_tokens=batch_tokens, max_tokens=max_tokens, long=long,
                                pool_roles=parse_roles(pool_roles), as_chat=as_chat, text_field=text_field,
                                id_field=id_field, skip_invalid=skip_invalid, cache_dir=cache_dir, dense=dense,
                                use_cache=not no_cache, trust_remote_code=trust_remote_code, engine=engine,
                                **{name: value for name, value in ray_settings.items() if value is not None})
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
        reused = "from parts an interrupted run wrote" if on_ray else "from cache"
        stderr.print(f"[green]wrote[/green] {shown(result.path)}: {result.n_docs} documents, {result.n_tokens} tokens "
                     f"({result.n_cached} {reused}) in {result.seconds:.1f}s"
                     + (f"; {'; '.join(notes)}" if notes else ""), highlight=False)
