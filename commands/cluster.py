"""`saeembed cluster`: clusters along the concepts the user picks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import open_inputs
from commands.ui import (
    check_outputs,
    emit,
    print_json,
    result_console,
    shown,
    stderr,
    user_errors,
    working,
    write_report,
)
from saeembed.analysis.config import ClusterConfig

if TYPE_CHECKING:
    from saeembed.analysis.cluster import ClusterResult
    from saeembed.store import Store


def run(
    store: Annotated[str, typer.Argument(help="A store, or a corpus file (embedded with the preset, cached).")],
    concepts: Annotated[Optional[str], typer.Option(help="Concept query choosing the axis: words, phrases, "
                                                         "latent ids, -term to exclude.")] = None,
    like: Annotated[Optional[list[str]], typer.Option(help="An example text whose latents join the axis.")] = None,
    all_concepts: Annotated[bool, typer.Option("--all-concepts", help="Cluster on every latent, for "
                                                                      "comparison.")] = False,
    clusters: Optional[int] = options.setting(ClusterConfig, "k", "--clusters"),
    method: str = options.setting(ClusterConfig, "method"),
    similarity: str = options.setting(ClusterConfig, "similarity"),
    concept_latents: options.ConceptLatents = options.CONCEPT_LATENTS,
    min_cluster_size: int = options.setting(ClusterConfig, "min_cluster_size"),
    seed: int = options.setting(ClusterConfig, "seed"),
    fit_on: int = options.setting(ClusterConfig, "fit_on"),
    json_out: options.SummaryJson = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write assignments (id, cluster) here; "
                                                   "the description goes beside it as NAME.clusters.EXT.")] = None,
    html: options.Html = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Also save the clustering in this folder (safetensors, "
                                                 "JSON, Parquet), to place new documents with `saeembed assign`.")
                    ] = None,
    by: Annotated[Optional[str], typer.Option(help="Cross-tabulate the clusters against this field (e.g. a known "
                                                   "label): on screen, and as a table and map with --html.")
                  ] = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Cluster documents on the latents a concept query selects (or on all of them), and describe each
    cluster: size, most distinctive latents, most central documents."""
    from saeembed.analysis.assign import save_clustering
    from saeembed.analysis.cluster import cluster
    from saeembed.analysis.concepts import select_concepts
    from saeembed.errors import SaeEmbedError
    from saeembed.report import write_cluster_report

    with user_errors():
        check_outputs(tables=[output, output and output.with_name(f"{output.stem}.clusters{output.suffix}")],
                      pages=[html], folders=[save], inputs=[store])
        if all_concepts == bool(concepts or like):
            raise SaeEmbedError("choose the axis: --concepts \"...\" (and/or --like \"...\"), or --all-concepts")
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        if by is not None and by not in opened.frame.columns:
            raise SaeEmbedError(f"--by {by!r}: the store has no such field; fields: "
                                f"{', '.join(c for c in opened.frame.columns if c not in ('text', 'dense'))}")
        selected = None if all_concepts else select_concepts(concepts, opened, like=like, top=concept_latents)
        config = ClusterConfig(method=method, similarity=similarity, k=clusters,  # type: ignore[arg-type]
                               min_cluster_size=min_cluster_size, seed=seed, fit_on=fit_on)
        with working("clustering", quiet or json_out):
            result = cluster(opened, selected, config)
        if save is not None:
            save_clustering(result, opened, save)
    write_report(html, lambda path: write_cluster_report(result, path, by=by, store=opened, seed=seed), quiet)
    files = {output: result.assignments,
             output.with_name(f"{output.stem}.clusters{output.suffix}"): result.description} if output else {}
    if json_out:
        print_json(result.summary().as_dict())
    emit(files, result.description, json_out, lambda: _render(result, opened if by else None, by), quiet)
    if save is not None and not quiet:
        stderr.print(f"[green]wrote[/green] {shown(save)} (the clustering; place new documents in it with "
                     f"`saeembed assign STORE --clustering {shown(save)}`)", highlight=False)


def _render(result: ClusterResult, store: Store | None = None, by: str | None = None) -> None:
    console = result_console()
    summary = result.summary()
    for line in summary.lines():
        console.print(shown(line), highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False)
    for row in result.description.iter_rows(named=True):
        console.print(f"\n[bold]cluster {row['cluster']}[/bold] ({row['size']:,} documents)", highlight=False)
        console.print(f"  [cyan]{shown(row['top_latents'])}[/cyan]", highlight=False)
        for text in row["central_texts"]:
            text = text.replace("\n", " ")
            console.print(f"  - {shown(text if len(text) <= 160 else text[:160] + '…')}", highlight=False)
    if by is not None and store is not None:
        _render_crosstab(console, result, store, by)


def _render_crosstab(console: Any, result: ClusterResult, store: Store, by: str) -> None:
    """Each cluster's most common values of `by`, and how well the clusters follow it (adjusted Rand)."""
    import numpy as np
    import polars as pl
    from sklearn.metrics import adjusted_rand_score

    frame = pl.DataFrame({"cluster": result.assignments["cluster"],
                          "value": store.frame[by].cast(pl.Utf8).fill_null("(none)")})
    inside = frame.filter(pl.col("cluster") >= 0)
    ari = adjusted_rand_score(inside["value"].to_numpy(), inside["cluster"].to_numpy()) if inside.height else np.nan
    console.print(f"\n[bold]clusters x {shown(by)}[/bold] (adjusted Rand index {ari:.2f} over the "
                  f"{inside.height:,} clustered documents)", highlight=False)
    counts = frame.group_by("cluster", "value").len().sort(["cluster", "len"], descending=[False, True])
    for cluster_id in sorted(set(frame["cluster"].to_list())):
        part = counts.filter(pl.col("cluster") == cluster_id)
        total = int(part["len"].sum())
        top = ", ".join(f"{shown(row['value'])} {row['len']:,} ({row['len'] / total:.0%})"
                        for row in part.head(4).iter_rows(named=True))
        more = f", +{part.height - 4} more" if part.height > 4 else ""
        console.print(f"  cluster {cluster_id:>3}: {top}{more}", highlight=False)
