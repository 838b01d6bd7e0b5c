"""`saeembed concepts`: which latents a concept query selects, with labels and weights."""

from __future__ import annotations

from typing import Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import open_inputs
from commands.ui import check_outputs, emit, label_markup, result_console, shown, stderr, user_errors


def run(
    store: Annotated[str, typer.Argument(help="The store (or corpus file) whose SAE and labels are used.")],
    query: Annotated[Optional[str], typer.Argument(help="Comma-separated terms: latent ids, words or phrases, "
                                                        "-term to exclude.")] = None,
    like: Annotated[Optional[list[str]], typer.Option(help="An example text; its strongest latents are added "
                                                           "(repeatable).")] = None,
    concept_latents: options.ConceptLatents = options.CONCEPT_LATENTS,
    top: Annotated[int, typer.Option(min=1, help="Latents shown.")] = 30,
    json_out: options.Json = False,
    output: options.Output = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Show the latents a concept query selects (ids, labels, weights, why), to check or edit it."""
    from saeembed.analysis.concepts import select_concepts
    from saeembed.errors import SaeEmbedError

    with user_errors():
        check_outputs(tables=[output], inputs=[store])
        if not query and not like:
            raise SaeEmbedError("give a query (words, phrases, latent ids) or --like \"an example\"")
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        selected = select_concepts(query, opened, like=like, top=concept_latents)
    frame = selected.frame()
    for note in selected.notes:  # on stderr, so --json output stays clean
        stderr.print(f"[yellow]warning:[/yellow] {shown(note)}", highlight=False, soft_wrap=True)
    emit({output: frame} if output else {}, frame.head(top), json_out, lambda: _render(selected, frame, top), quiet)


def _render(selected: Any, frame: Any, show: int) -> None:
    console = result_console()
    console.print(f"{len(selected)} latents selected; ids to reuse: "
                  f"{','.join(str(i) for i in selected.latents[:show])}", highlight=False, soft_wrap=True)
    for row in frame.head(show).iter_rows(named=True):
        matched = f"   matched: {shown(', '.join(row['matched']))}" if row["matched"] else ""
        label = label_markup(row["label"], row["label_score"])
        console.print(f"  [cyan]{row['latent']:>6}[/cyan]  {row['weight']:.2f}  {label}{matched}   "
                      f"[dim]{shown(row['why'])}[/dim]", highlight=False)
