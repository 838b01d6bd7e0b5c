"""`saeembed train-sae`: train a TopK SAE on a corpus; saved in SAELens format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from commands.ui import print_json, shown, stderr, user_errors


def run(
    inputs: Annotated[list[str], typer.Argument(help="Corpus files (JSONL, CSV, Parquet, text), globs or -.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for cfg.json + sae_weights.safetensors.")],
    model: Annotated[str, typer.Option(help="Reader: Hugging Face id or local folder.")],
    layer: Annotated[int, typer.Option(help="Train on the output of block L (0-based).")],
    latents: Annotated[int, typer.Option(help="Number of latents.")] = 8192,
    k: Annotated[int, typer.Option(help="Active latents per token (per document with --reads document).")] = 32,
    reads: Annotated[str, typer.Option(help="tokens: an SAE of every token; document: of each document's "
                                            "normalised mean activation (k latents per document).")] = "tokens",
    matryoshka: Annotated[Optional[str], typer.Option(
        help="Nested prefixes, e.g. 128,512: the first m latents alone must also reconstruct.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the corpus.")] = 1,
    max_train_tokens: Annotated[Optional[int], typer.Option(help="Stop after this many tokens.")] = None,
    batch_size: Annotated[int, typer.Option(help="Tokens (documents) per optimiser step.")] = 4096,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default 2e-4/sqrt(latents/16384)).")] = None,
    activations_dir: Annotated[Optional[Path], typer.Option(help="Cache activations here (float16).")] = None,
    save_dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    skip_invalid: Annotated[bool, typer.Option(help="Train on the valid documents and list the others.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the held-out figures as JSON.")] = False,
) -> None:
    """Train a TopK SAE (Gao et al. 2024 recipe) on the reader's activations; resumable."""
    from commands.progress import train_progress
    from saeembed.train.train import TrainConfig, train_sae

    with user_errors():
        if save_dtype not in ("float32", "float16", "bfloat16"):
            raise typer.BadParameter("choose float32, float16 or bfloat16", param_hint="--save-dtype")
        if reads not in ("tokens", "document"):
            raise typer.BadParameter("choose tokens or document", param_hint="--reads")
        try:
            prefixes = tuple(int(m) for m in matryoshka.split(",")) if matryoshka else ()
        except ValueError:
            raise typer.BadParameter("give latent counts separated by commas, e.g. 128,512",
                                     param_hint="--matryoshka") from None
        config = TrainConfig(model=model, layer=layer, latents=latents, k=k, reads=reads, matryoshka=prefixes,
                             epochs=epochs,
                             max_train_tokens=max_train_tokens, batch_size=batch_size, lr=lr,
                             activations_dir=activations_dir, save_dtype=save_dtype, text_field=text_field,
                             skip_invalid=skip_invalid,
                             seed=seed, device=device)
        with train_progress(disabled=quiet) as on_progress:
            result = train_sae(inputs, output, config, on_progress=on_progress)
    for problem in result.skipped:
        stderr.print(f"[yellow]skipped[/yellow] {shown(problem)}", highlight=False)
    figures = {"path": str(result.path), "steps": result.steps, "tokens": result.tokens,
               "resumed_from_step": result.resumed_from_step, "seconds": round(result.seconds, 1),
               "skipped": len(result.skipped), **result.eval}
    if json_out:
        print_json(figures)
    elif not quiet:
        held_out = (f"held-out FVU {result.eval['fvu']:.3f}, L0 {result.eval['l0']:.1f}, "
                    f"dead {result.eval['dead_fraction']:.1%}") if result.eval else "no held-out text"
        stderr.print(f"[green]saved[/green] {shown(result.path)}: {result.steps} steps, {result.tokens:,} tokens; "
                     f"{held_out}", highlight=False)
