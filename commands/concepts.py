"""`saeembed concepts`: which latents a concept query selects, with labels and weights."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.ui import open_inputs, print_rows, result_console, shown, stderr, user_errors


def run(
    query: Annotated[Optional[str], typer.Argument(help="Comma-separated terms: latent ids, words or phrases, "
                                                        "-term to exclude.")] = None,
    store: Annotated[str, typer.Option(help="The store (or corpus file) whose SAE and labels are used.")] = "",
    like: Annotated[Optional[list[str]], typer.Option(help="An example text; its strongest latents are added "
                                                           "(repeatable).")] = None,
    top: Annotated[int, typer.Option(help="Latents kept per phrase or example.")] = 100,
    show: Annotated[int, typer.Option(help="Latents shown.")] = 30,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one latent each.")] = False,
    preset: options.Preset = None,
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Show the latents a concept query selects (ids, labels, weights, why), to check or edit it."""
    from saeembed.concepts import select_concepts
    from saeembed.errors import SaeEmbedError

    with user_errors():
        if not store:
            raise SaeEmbedError("name the store whose SAE and labels to use: --store tweets.parquet")
        if not query and not like:
            raise SaeEmbedError("give a query (words, phrases, latent ids) or --like \"an example\"")
        (opened,) = open_inputs([store], preset, quiet or json_out, cache_dir=cache_dir)
        selected = select_concepts(query, opened, like=like, top=top)
    frame = selected.frame()
    for note in selected.notes:  # on stderr, so --json output stays clean
        stderr.print(f"[yellow]warning:[/yellow] {shown(note)}", highlight=False, soft_wrap=True)
    if json_out:
        print_rows(frame)
        return
    console = result_console()
    console.print(f"{len(selected)} latents selected; ids to reuse: "
                  f"{','.join(str(i) for i in selected.latents[:show])}", highlight=False, soft_wrap=True)
    for row in frame.head(show).iter_rows(named=True):
        matched = f"   matched: {shown(', '.join(row['matched']))}" if row["matched"] else ""
        console.print(f"  [cyan]{row['latent']:>6}[/cyan]  {row['weight']:.2f}  {shown(row['label'] or '(no label)')}"
                      f"{matched}   [dim]{shown(row['why'])}[/dim]", highlight=False)
