"""`saeembed presets`: the named reader + SAE bundles."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from commands.ui import print_json, result_console


def run(json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List the presets: `default`, `minilm-topics`, `smollm2-style` and `minilm-l3-tokens` run offline; the
    others fetch hub models on first use. Use `default` to ask what a corpus is about and how it is written
    (diff reads it twice: MiniLM for topics, SmolLM2 for style); `minilm-topics` when only topics matter
    and speed does (~5x faster)."""
    from dataclasses import asdict

    from rich.table import Table

    from saeembed.embedding.presets import presets

    table = presets()
    if json_out:
        print_json([asdict(p) for p in table.values()])
        return
    view = Table("preset", "model", "layer", "SAE", "what")
    for p in table.values():
        model = "SmolLM2-135M-Instruct (package)" if "SmolLM2" in p.model else "all-MiniLM-L6-v2 (package)"
        view.add_row(p.name, p.model if not p.offline else model, str(p.layer),
                     p.sae if not p.offline else f"saeembed's {Path(p.sae).name} (bundled)", p.description)
    result_console().print(view)
