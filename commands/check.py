"""`saeembed check`: is this SAE read at the right hook? FVU and L0 on sample text."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from commands.ui import print_json, shown, stderr, user_errors
from saeembed.embedding.config import EmbedConfig

_D = EmbedConfig.__dataclass_fields__


def run(
    model: Annotated[Optional[str], typer.Option(help="Reader: Hugging Face id or local folder.")] = None,
    sae: Annotated[Optional[str], typer.Option(help="SAE: local file/folder or hub id org/repo[/subfolder].")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Named reader + SAE bundle; default without "
                                                  "--model/--sae.")] = None,
    sample: Annotated[Optional[Path], typer.Argument(help="Sample corpus: text (one per line), JSONL, CSV or "
                                                     "Parquet (default: a built-in varied sample).")] = None,
    layer: Annotated[Optional[int], typer.Option(help="Block whose output is read (0-based).")] = None,
    sae_format: Annotated[Optional[str], typer.Option(help="Force the SAE format.")] = None,
    as_chat: Annotated[Optional[str], typer.Option(help="Wrap each sample as a chat turn of this role.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = _D["device"].default,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16.")] = _D["dtype"].default,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code to run.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Reconstruction FVU and mean L0 on sample text; exits 1 when they say the hook is wrong."""
    from saeembed.embedding.check import check
    from saeembed.embedding.corpus import read_corpus
    from saeembed.embedding.presets import resolve_config

    with user_errors():
        config = resolve_config(preset, model, sae, layer=layer, sae_format=sae_format, as_chat=as_chat,
                                device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        report = check(config, read_corpus([str(sample)]).documents if sample else None)
    if json_out:
        print_json({**asdict(report), "ok": report.ok})
    else:
        expected = f" (the SAE's own: {report.expected_l0:g})" if report.expected_l0 else ""
        stderr.print(f"{shown(report.sae)} at layer {report.layer} of {shown(report.model)}\n"
                     f"  FVU {report.fvu:.3f}   L0 {report.l0:.1f}{expected}   "
                     f"{report.n_tokens} tokens, {report.active_fraction:.1%} of latents fired", highlight=False)
        for warning in report.warnings:
            stderr.print(f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False)
        if report.ok:
            stderr.print("[green]ok[/green]")
    if not report.ok:
        raise typer.Exit(1)
