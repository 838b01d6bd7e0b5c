"""`saeembed train-sae`: train a TopK SAE on a corpus; saved in SAELens format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.ui import print_json, shown, stderr, user_errors
from saeembed.settings import field_help
from saeembed.train.config import TrainConfig

_T = TrainConfig


def _required(name: str, flag: str) -> object:
    return typer.Option(..., flag, help=field_help(TrainConfig, name))


def run(
    inputs: Annotated[list[str], typer.Argument(help="Corpus files (JSONL, CSV, Parquet, text), globs or -.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for cfg.json + sae_weights.safetensors.")],
    model: str = _required("model", "--model"),
    layer: int = _required("layer", "--layer"),
    latents: int = options.setting(_T, "latents", "--latents"),
    k: int = options.setting(_T, "k", "--k"),
    reads: str = options.setting(_T, "reads", "--reads"),
    matryoshka: Optional[str] = typer.Option(None, "--matryoshka", help=field_help(TrainConfig, "matryoshka")
                                             + " Give the sizes separated by commas: 128,512."),
    epochs: int = options.setting(_T, "epochs", "--epochs"),
    max_train_tokens: Optional[int] = options.setting(_T, "max_train_tokens", "--max-train-tokens"),
    batch_size: int = options.setting(_T, "batch_size", "--batch-size"),
    lr: Optional[float] = options.setting(_T, "lr", "--lr"),
    activations_dir: Optional[Path] = options.setting(_T, "activations_dir", "--activations-dir"),
    save_dtype: str = options.setting(_T, "save_dtype", "--save-dtype"),
    text_field: str = options.setting(_T, "text_field", "--text-field"),
    id_field: str = options.setting(_T, "id_field", "--id-field"),
    skip_invalid: bool = options.setting(_T, "skip_invalid", "--skip-invalid"),
    seed: int = options.setting(_T, "seed", "--seed"),
    device: str = options.setting(_T, "device", "--device"),
    revision: Optional[str] = options.setting(_T, "revision", "--revision"),
    trust_remote_code: bool = options.setting(_T, "trust_remote_code", "--trust-remote-code"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the held-out figures as JSON.")] = False,
) -> None:
    """Train a TopK SAE (Gao et al. 2024 recipe) on the reader's activations; resumable."""
    from commands.progress import train_progress
    from saeembed.train.train import train_sae

    with user_errors():
        try:
            prefixes = tuple(int(m) for m in matryoshka.split(",")) if matryoshka else ()
        except ValueError:
            raise typer.BadParameter("give latent counts separated by commas, e.g. 128,512",
                                     param_hint="--matryoshka") from None
        # every value is checked by TrainConfig, which names the option of a bad one
        config = TrainConfig(model=model, layer=layer, latents=latents, k=k, reads=reads,  # type: ignore[arg-type]
                             matryoshka=prefixes, epochs=epochs, max_train_tokens=max_train_tokens,
                             batch_size=batch_size, lr=lr, activations_dir=activations_dir,
                             save_dtype=save_dtype, text_field=text_field, id_field=id_field,  # type: ignore[arg-type]
                             skip_invalid=skip_invalid, seed=seed, device=device, revision=revision,
                             trust_remote_code=trust_remote_code)
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
