"""`saeembed info`: what a store holds and how it was made."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from commands.ui import print_json, result_console, shown, user_errors


def run(
    store: Annotated[Path, typer.Argument(help="A store written by `saeembed embed`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Read the store as the analyses do and refuse "
                                                                   "what they refuse (--no-check: metadata and "
                                                                   "latent counts only, fast).")] = True,
) -> None:
    """Rows, tokens, model, SAE, mean active latents per document and bytes per document."""
    from rich.table import Table

    from saeembed.summary import summarize

    with user_errors():
        summary = summarize(store, check=check)
    if json_out:
        print_json(summary)
        return
    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        table.add_row(f"[bold]{key}[/bold]", f"{value:,.1f}" if isinstance(value, float) else shown(value))
    result_console().print(table)
