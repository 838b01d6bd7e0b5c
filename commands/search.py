"""`saeembed search`: documents that carry the concepts of a query."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import engine_session, open_inputs
from commands.ui import (
    check_outputs,
    emit,
    label_markup,
    print_json,
    result_console,
    shown,
    user_errors,
    working,
    write_report,
)
from saeembed.analysis.config import SearchConfig
from saeembed.spans import marked_context

if TYPE_CHECKING:
    from saeembed.analysis.search import SearchResult, SearchSummary


def run(
    store: Annotated[str, typer.Argument(help="A store, or a corpus file (embedded with the preset, cached).")],
    query: Annotated[str, typer.Argument(help="Concept query: words or phrases, latent ids, -term to exclude.")],
    top: int = options.setting(SearchConfig, "top"),
    concept_latents: int = options.setting(SearchConfig, "k", "--concept-latents"),
    like: Annotated[Optional[list[str]], typer.Option(help="An example text whose latents join the query.")] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse with dense retrieval (reciprocal rank).")] = False,
    dense: Annotated[bool, typer.Option("--dense", help="Dense retrieval alone, for comparison.")] = False,
    feedback: int = options.setting(SearchConfig, "feedback"),
    where: Annotated[Optional[str], typer.Option(help="Filter on the store's fields, e.g. \"topic = 'climate' "
                                                      "AND n_tokens < 200\" (comparisons, AND/OR/NOT, IN, "
                                                      "LIKE, BETWEEN, IS NULL).")] = None,
    weak: bool = options.setting(SearchConfig, "weak", "--weak"),
    json_out: options.SummaryJson = False,
    output: options.Output = None,
    html: options.Html = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    engine: options.Engine = "local",
    ray_address: options.RayAddress = None,
    quiet: options.Quiet = False,
) -> None:
    """Rank documents by the query's concepts: each latent scaled by its 90th percentile in the store,
    latents weighted by rank, the query expanded by its first results' latents (--feedback); every
    result shows its top latents with the peak << marked >>."""
    from saeembed.analysis.search import search
    from saeembed.errors import SaeEmbedError
    from saeembed.report import write_search_report

    with user_errors():
        check_outputs(tables=[output], pages=[html], inputs=[store])
        if hybrid and dense:
            raise SaeEmbedError("choose --hybrid or --dense, not both")
        config = SearchConfig(top=top, k=concept_latents, feedback=feedback, weak=weak,
                              mode="hybrid" if hybrid else "dense" if dense else "sae")  # refused before any work
        with engine_session(engine, ray_address):
            (opened,) = open_inputs([store], preset, quiet or json_out, stream=True, engine=engine,
                                    ray_address=ray_address, text_field=text_field, id_field=id_field,
                                    cache_dir=cache_dir)  # a folder store: part by part
            with working("searching", quiet or json_out, [opened]):
                result = search(opened, query, config, like=like, where=where)
    write_report(html, lambda path: write_search_report(result, path, query=query), quiet)
    summary = result.summary(query)
    if json_out:
        print_json(summary.as_dict())
    emit({output: result.table} if output else {}, result.table, json_out, lambda: _render(result, summary), quiet)


def _render(result: SearchResult, summary: SearchSummary) -> None:
    console = result_console()
    lines = [shown(line) for line in summary.lines()]
    if result.concepts is not None:  # the strongest of the query's latents, each label with its quality
        concepts = result.concepts
        lines[0] += ", strongest: " + " | ".join(label_markup(name, score) for name, score
                                                 in list(zip(concepts.labels, concepts.label_scores))[:3] if name)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False, soft_wrap=True)
    for row in result.table.iter_rows(named=True):
        console.print(f"\n[bold]{row['rank']:>3}.[/bold] [dim]{shown(str(row['id']))}  score {row['score']:.3g}[/dim]",
                      highlight=False)
        if row.get("top_latents"):
            contributors = " | ".join(f"{latent} {label or ''}".strip()
                                      for latent, label in zip(row["top_latents"], row["top_labels"]))
            console.print(f"     [cyan]{shown(contributors)}[/cyan]", highlight=False)
        if row.get("peak_start") is not None:  # the strongest contributor's peak, marked << >> as in the paper
            text = marked_context(row["text"], (row["peak_start"], row["peak_end"]), width=150)
        else:
            text = row["text"].replace("\n", " ")
            text = text if len(text) <= 300 else text[:300] + "…"
        console.print(f"     {shown(text)}", highlight=False)
