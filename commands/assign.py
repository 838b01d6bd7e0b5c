"""`saeembed assign`: place new documents in a clustering saved with `saeembed cluster --save`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import open_inputs
from commands.ui import check_outputs, emit, result_console, shown, stderr, user_errors, working


def run(
    store: Annotated[str, typer.Argument(help="A store, or a corpus file (embedded with the preset, cached).")],
    clustering: Annotated[Path, typer.Option("--clustering", help="A folder written by `saeembed cluster ... "
                                                                  "--save FOLDER`.")],
    json_out: options.Json = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the assignments (id, cluster, "
                                                   "membership, outlier_score) to .csv, .parquet, .json or .jsonl.")
                      ] = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Place each document in a saved clustering: its cluster, how strongly it belongs there (0..1) and how
    much of an outlier it is (0..1). The store must be embedded as the clustered one was."""
    from saeembed.analysis.assign import load_clustering
    from saeembed.store import is_store

    with user_errors():
        check_outputs(tables=[output], inputs=[store])
        model = load_clustering(clustering)  # checked before anything is embedded
        if is_store(Path(store)):  # read part by part: a store of any size
            with working("assigning", quiet or json_out):
                result = model.assign(Path(store), with_soft=False)  # the CLI writes no soft memberships
        else:
            (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                    cache_dir=cache_dir)
            with working("assigning", quiet or json_out):
                result = model.assign(opened, with_soft=False)
    emit({output: result.assignments} if output else {}, result.assignments, json_out,
         lambda: _render(result, clustering), quiet)
    if json_out and not quiet:  # the rows are the documents: the count of those in no cluster goes to stderr
        stderr.print(result.notes[0], highlight=False)


def _render(result: Any, clustering: Path) -> None:
    console = result_console()
    console.print(f"{result.n_docs:,} documents placed in the {len(result.cluster_ids)} clusters of "
                  f"{shown(clustering)} ({result.method})", highlight=False)
    console.print(result.notes[0], highlight=False)
    for note in result.notes[1:]:
        console.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False)
    for row in result.clusters.iter_rows(named=True):
        console.print(f"\n[bold]cluster {row['cluster']}[/bold] {row['assigned']:,} documents ({row['share']:.1%}), "
                      f"mean membership {row['mean_membership']:.2f}; {row['trained'] or 0:,} when clustered",
                      highlight=False)
        if row["top_latents"]:
            console.print(f"  [cyan]{shown(row['top_latents'])}[/cyan]", highlight=False)
