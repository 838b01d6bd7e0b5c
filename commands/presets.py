"""`saeembed presets`: the named reader + SAE bundles."""

from __future__ import annotations

import typer
from typing_extensions import Annotated

from commands.ui import print_json, result_console


def run(json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List the presets: `default` runs offline; the others fetch hub models on first use."""
    from dataclasses import asdict

    from rich.table import Table

    from saeembed.embedding.presets import presets

    table = presets()
    if json_out:
        print_json([asdict(p) for p in table.values()])
        return
    view = Table("preset", "model", "layer", "SAE", "what")
    for p in table.values():
        view.add_row(p.name, p.model if not p.offline else "all-MiniLM-L6-v2 (bundled)", str(p.layer),
                     p.sae if not p.offline else "saeembed default (bundled)", p.description)
    result_console().print(view)
