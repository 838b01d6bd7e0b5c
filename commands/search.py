"""`saeembed search`: documents that carry the concepts of a query."""

from __future__ import annotations

from typing import Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import open_inputs
from commands.ui import (
    check_outputs,
    emit,
    label_markup,
    result_console,
    shown,
    stderr,
    user_errors,
    working,
    write_report,
)
from saeembed.analysis.config import SearchConfig
from saeembed.spans import marked_context


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
    json_out: options.Json = False,
    output: options.Output = None,
    html: options.Html = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
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
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        with working("searching", quiet or json_out):
            result = search(opened, query, config, like=like, where=where)
    write_report(html, lambda path: write_search_report(result, path, query=query), quiet)
    emit({output: result.table} if output else {}, result.table, json_out, lambda: _render(result, top), quiet)
    note = _shortfall(result, top)
    if note and json_out and not quiet:  # stdout holds only the rows
        stderr.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False, soft_wrap=True)


def _shortfall(result: Any, top: int) -> str | None:
    """Why fewer than --top documents are listed (sae mode lists only documents the query's latents
    fire in), or None."""
    matched = getattr(result, "n_matched", None)
    if result.mode != "sae" or matched is None or matched >= top:
        return None
    searched = f"{result.n_candidates:,} documents searched"
    if not matched:
        return (f"no document carries the query's latents ({searched}); try other words, an example with --like, "
                f"or see which latents it picks with `saeembed concepts`")
    return f"only {matched:,} of the {searched} carry the query's latents: {matched:,} listed, not {top:,}"


def _render(result: Any, top: int) -> None:
    console = result_console()
    if result.concepts is not None:
        concepts = result.concepts
        added = sum(why.startswith("feedback") for why in concepts.why)
        console.print(f"{len(concepts) - added} latents from the query (see `saeembed concepts`)"
                      + (f", {added} more from its first results (--feedback)" if added else "")
                      + ", strongest: " + " | ".join(label_markup(name, score) for name, score
                                                     in list(zip(concepts.labels, concepts.label_scores))[:3] if name),
                      highlight=False, soft_wrap=True)
    console.print(f"{result.n_candidates:,} documents searched ({result.mode})", highlight=False)
    note = _shortfall(result, top)
    if note:
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
