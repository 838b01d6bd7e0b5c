"""`saeembed correlations`: concepts that co-occur more than chance, trivial pairs filtered."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import engine_session, open_inputs
from commands.ui import check_outputs, emit, print_json, result_console, shown, user_errors, working, write_report
from saeembed.analysis.config import CorrelationConfig

if TYPE_CHECKING:
    import polars as pl

    from saeembed.analysis.associations import AssociationResult
    from saeembed.analysis.correlations import CorrelationResult


def run(
    corpus: Annotated[str, typer.Argument(help="A store, or a corpus file (embedded with the preset, cached).")],
    with_column: Annotated[Optional[str], typer.Option("--with", help="Latents vs this metadata column: per "
                                                       "value (categorical) or rank correlation (numeric).")] = None,
    and_corpus: Annotated[Optional[str], typer.Option("--and", help="A second corpus row-aligned with the first "
                                                      "(e.g. responses to its prompts): cross correlations.")] = None,
    pair_on: Annotated[Optional[str], typer.Option(help="With --and: the column that aligns the rows.")] = None,
    top: Annotated[int, typer.Option(help="Pairs shown, or printed with --json (-o writes them all).")] = 50,
    min_support: int = options.setting(CorrelationConfig, "min_support"),
    min_freq: float = options.setting(CorrelationConfig, "min_freq"),
    max_freq: float = options.setting(CorrelationConfig, "max_freq"),
    alpha: float = options.setting(CorrelationConfig, "alpha"),
    length_bands: int = options.setting(CorrelationConfig, "length_bands"),
    show_dropped: Annotated[bool, typer.Option(help="List the pairs dropped as trivial instead.")] = False,
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
    """Latent pairs that fire in the same documents more than chance at equal length: NPMI with a
    Cochran-Mantel-Haenszel test over length bands and BH control; pairs peaking on the same/adjacent
    token, near-duplicate decoders or labels dropped."""
    from saeembed.analysis.associations import AssociationResult, associations
    from saeembed.analysis.correlations import correlations, cross_correlations
    from saeembed.errors import SaeEmbedError
    from saeembed.report import write_correlations_report

    with user_errors():
        check_outputs(tables=[output], pages=[html], inputs=[corpus, and_corpus])
        if (and_corpus is None) != (pair_on is None):
            raise SaeEmbedError("--and and --pair-on go together: name the second corpus and the column aligning rows")
        if with_column and and_corpus:
            raise SaeEmbedError("choose --with (a metadata column) or --and (a second corpus), not both")
        config = CorrelationConfig(min_support=min_support, min_freq=min_freq, max_freq=max_freq, alpha=alpha,
                                   length_bands=length_bands)
        if engine == "ray" and (and_corpus or with_column):
            raise SaeEmbedError("--engine ray runs correlations within one store: --and and --with read the "
                                "stores whole")
        with engine_session(engine, ray_address):
            # a folder store is read part by part, unless rows are aligned with another or matched to a column
            stores = open_inputs([corpus] + ([and_corpus] if and_corpus else []), preset, quiet or json_out,
                                 stream=not (and_corpus or with_column), engine=engine, ray_address=ray_address,
                                 text_field=text_field, id_field=id_field, cache_dir=cache_dir)
            if with_column:
                with working("testing latents against the column", quiet or json_out):
                    result: CorrelationResult | AssociationResult = associations(stores[0], with_column, config)
                rows = result.table
            else:
                with working("testing pairs", quiet or json_out, stores):
                    result = (cross_correlations(stores[0], stores[1], pair_on, config) if and_corpus
                              else correlations(stores[0], config))
                rows = result.dropped_pairs if show_dropped else result.table
            sides = (_side_name(corpus), _side_name(and_corpus)) if and_corpus else None
            write_report(html, lambda path: write_correlations_report(  # its example documents: read by the engine
                result, path, store=None if and_corpus else stores[0], top=top, sides=sides), quiet)

    def render() -> None:
        if isinstance(result, AssociationResult):
            _render_associations(result, top)
        else:
            _render_pairs(result, rows, top, show_dropped)

    if json_out:
        print_json(result.summary().as_dict())
    emit({output: rows} if output else {}, rows.head(top), json_out, render, quiet)


def _side_name(path: str) -> str:
    return Path(path).stem or path


def _render_pairs(result: CorrelationResult, rows: pl.DataFrame, top: int, dropped: bool) -> None:
    console = result_console()
    summary = result.summary()
    for line in summary.lines():
        console.print(shown(line), highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False)
    if not len(rows):
        console.print("No pair to show.", style="yellow")
        return
    side = ("prompt ", "response ") if result.paired else ("", "")
    at_length = " at these lengths" if result.length_bands > 1 else ""
    for row in rows.head(top).iter_rows(named=True):
        console.print(f"  [bold]{row['npmi']:.2f}[/bold]  {side[0]}[cyan]{row['latent_a']}[/cyan] "
                      f"{shown(row['label_a'] or '(no label)')}  x  {side[1]}[cyan]{row['latent_b']}[/cyan] "
                      f"{shown(row['label_b'] or '(no label)')}", highlight=False)
        extra = f"   dropped: {row['reason'].replace('_', ' ')}" if dropped else ""
        console.print(f"        together in {row['support']:,} documents ({row['expected']:.1f} expected"
                      f"{at_length}); "
                      f"alone {row['freq_a']:.1%} / {row['freq_b']:.1%}; q {row['q']:.1e}{extra}", highlight=False)


def _render_associations(result: AssociationResult, top: int) -> None:
    console = result_console()
    table = result.table
    for line in result.summary().lines():
        console.print(shown(line), highlight=False, soft_wrap=True)
    if result.kind == "numeric":
        for row in table.head(top).iter_rows(named=True):
            label = shown(row["label"] or "(no label)")
            console.print(f"  rho {row['rho']:+.2f}  [cyan]{row['latent']}[/cyan] {label}   q {row['q']:.1e}",
                          highlight=False)
        return
    for value in table["value"].unique(maintain_order=True).to_list():
        part = table.filter(table["value"] == value)
        console.print(f"\n[bold]{shown(str(value))}[/bold] ({len(part):,} latents)")
        for row in part.head(top).iter_rows(named=True):
            console.print(f"  {row['npmi']:.2f}  [cyan]{row['latent']}[/cyan] {shown(row['label'] or '(no label)')}"
                          f"   {row['freq_in_value']:.0%} vs {row['freq_elsewhere']:.0%} elsewhere, q {row['q']:.1e}",
                          highlight=False)
