"""`saeembed risk`: hallucination-risk probes that read concept patterns (fit, score, scramble, baseline)."""

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
from saeembed.analysis.config import RiskConfig

if TYPE_CHECKING:
    from saeembed.analysis.risk import RiskReport

app = typer.Typer(help="Hallucination-risk probes that read concept patterns.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("fit", short_help="Cross-validate a risk probe against baselines and save it.")
def fit(
    store: Annotated[str, typer.Argument(help="Labelled documents: a store, or a corpus file (embedded, cached).")],
    label: Annotated[str, typer.Option(help="Column saying which documents are hallucinated / risky.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the probe (JSON + safetensors).")],
    positive: Annotated[Optional[str], typer.Option(help="The label value meaning risky (default: true, yes, "
                                                         "1, hallucinated).")] = None,
    group: Annotated[Optional[str], typer.Option(help="Keep rows sharing this column (e.g. question_id) in the "
                                                      "same fold.")] = None,
    model: str = options.setting(RiskConfig, "model"),
    folds: int = options.setting(RiskConfig, "folds"),
    bootstrap: int = options.setting(RiskConfig, "bootstrap"),
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout: the summary record, then one "
                                                         "row per feature set.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Leave out documents without a label "
                                                                       "(by default they are refused).")] = False,
    html: options.Html = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Cross-validate a probe (AUROC and AP with bootstrap intervals) against length-only, surface-form,
    concept-count and dense baselines on the same folds, say whether it beats them, and save the probe fitted
    on all documents with its report (report.json)."""
    from saeembed.analysis.risk import fit_risk
    from saeembed.report import write_risk_report

    with user_errors():
        check_outputs(folders=[output], pages=[html], inputs=[store])
        config = RiskConfig(model=model, folds=folds, bootstrap=bootstrap)  # type: ignore[arg-type]
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        with working("cross-validating the probe and its baselines", quiet or json_out):
            report = fit_risk(opened, label, config, positive=positive, group=group, skip_unlabelled=skip_invalid)
        report.save(output)
    write_report(html, lambda path: write_risk_report(report, path, store=opened), quiet)
    if json_out:
        print_json(report.summary().as_dict())
    emit({}, report.table, json_out, lambda: _render_report(report, output), quiet)


@app.command("score", short_help="Risk per document from a probe, or z-scores from a baseline.")
def score(
    store: Annotated[str, typer.Argument(help="Documents to score: a store, or a corpus file.")],
    probe: Annotated[Optional[Path], typer.Option(help="A probe folder from `saeembed risk fit`.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="A baseline folder from `saeembed risk baseline`.")
                        ] = None,
    top: Annotated[int, typer.Option(help="Riskiest documents shown.")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one document each.")] = False,
    output: options.Output = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Risk in [0, 1] per document and the concepts that pushed it up (probe), and z-scores of its concept
    counts against a trusted corpus (baseline)."""
    from saeembed.analysis.risk import Baseline, Probe, score_risk

    with user_errors():
        check_outputs(tables=[output], inputs=[store])
        fitted = Probe.load(probe) if probe else None
        reference = Baseline.load(baseline) if baseline else None
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        scored = score_risk(opened, fitted, reference)
    key = "risk" if fitted is not None else "z_risk"
    ranked = scored.sort(key, descending=True)
    emit({output: scored} if output else {}, scored, json_out, lambda: _render_scores(ranked, key, top), quiet)


@app.command("baseline", short_help="Concept-count statistics of a trusted corpus.")
def baseline(
    store: Annotated[str, typer.Argument(help="A trusted corpus: a store, or a corpus file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the baseline.")],
    json_out: Annotated[bool, typer.Option("--json", help="The baseline's statistics as JSON lines on stdout.")
                        ] = False,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Record the concept-count statistics of a trusted corpus; `risk score --baseline` then adds z-scores."""
    from saeembed.analysis.risk import Baseline

    with user_errors():
        check_outputs(folders=[output], inputs=[store])
        (opened,) = open_inputs([store], preset, quiet or json_out, text_field=text_field, id_field=id_field,
                                cache_dir=cache_dir)
        fitted = Baseline.fit(opened)
        fitted.save(output)
    if json_out:
        for name, mean, std in zip(fitted.names, fitted.mean.tolist(), fitted.std.tolist()):
            print_json({"statistic": name, "mean": mean, "std": std})
    if not quiet:
        stderr.print(f"[green]wrote[/green] {shown(output)}: baseline of {opened.n_docs:,} documents", highlight=False)


@app.command("scramble", short_help="Sanity check: concept counts as n-grams are shuffled.")
def scramble(
    corpus: Annotated[str, typer.Argument(help="Documents (JSONL, CSV, Parquet, TXT) to scramble.")],
    levels: Annotated[str, typer.Option(help="Comma-separated shares of n-grams to shuffle.")] = "0,0.25,0.5,0.75,1",
    ngram: Annotated[int, typer.Option(help="Words per n-gram.")] = 3,
    limit: Annotated[int, typer.Option(help="Documents used at most.")] = 500,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the counts per level into this PNG.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one level each.")] = False,
    output: options.Output = None,
    text_field: options.TextField = "text",
    preset: options.Preset = None,
    cache_dir: options.CacheDir = None,
    quiet: options.Quiet = False,
) -> None:
    """Sanity check: shuffle word n-grams at rising levels and report the concept counts per level; with a
    working reader + SAE they rise as the text loses structure."""
    from commands.progress import embed_progress
    from saeembed.analysis.scramble import scramble_check
    from saeembed.embedding.corpus import read_corpus
    from saeembed.embedding.presets import embed_config
    from saeembed.errors import SaeEmbedError

    with user_errors():
        check_outputs(tables=[output], images=[plot], inputs=[corpus])
        try:
            shares = [float(v) for v in levels.split(",") if v.strip()]
        except ValueError:
            raise SaeEmbedError(f"--levels takes numbers in [0, 1] separated by commas, got {levels!r}") from None
        texts = [doc.text for doc in read_corpus([corpus], text_field=text_field).documents[:limit]]
        with embed_progress(disabled=quiet or json_out) as on_progress:
            table = scramble_check(texts, embed_config(preset, cache_dir=cache_dir), shares, ngram,
                                   on_progress=on_progress)
        if plot:
            _plot(table, plot)
    emit({output: table} if output else {}, table, json_out, lambda: _render_scramble(table), quiet)


def _render_report(report: RiskReport, output: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    console = result_console()
    summary = report.summary()
    lines = summary.lines()
    console.print(shown(lines[0]) + "; out-of-fold scores", highlight=False, soft_wrap=True)
    # AP without its interval (in --json and report.json) so the table fits 80 columns
    table = Table("features", "AUROC [95% CI]", "AP", "probe gain [95% CI]")
    for row in report.table.iter_rows(named=True):
        table.add_row(Text(row["features"]), f"{row['auroc']:.3f} [{row['auroc_low']:.3f}, {row['auroc_high']:.3f}]",
                      f"{row['ap']:.3f}", _gain(row))
    console.print(table)
    console.print("probe gain: the probe's AUROC minus the baseline's, paired over the same bootstrap resamples",
                  style="dim", highlight=False)
    console.print(f"[{'green' if summary.beaten else 'yellow'}]{shown(lines[1])}[/]", highlight=False, soft_wrap=True)
    for warning in summary.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {shown(warning)}", highlight=False)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False)
    console.print("concepts with the largest weights (positive: more risk):")
    for row in report.top_concepts.head(15).iter_rows(named=True):
        console.print(f"  {row['weight']:+.3f}  [cyan]{row['latent']}[/cyan] {shown(row['label'] or '(no label)')}",
                      highlight=False)
    console.print(f"probe and report.json saved to {shown(output)}", style="green", highlight=False)


def _gain(row: dict[str, Any]) -> Any:
    """The table cell of a baseline's probe gain: green when the probe beats it, yellow when not."""
    from rich.text import Text

    if row["gain"] is None:  # the probe's own row
        return Text()
    return Text(f"{row['gain']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}]",
                "green" if row["beaten"] else "yellow")


def _render_scores(ranked: Any, key: str, top: int) -> None:
    console = result_console()
    for row in ranked.head(top).iter_rows(named=True):
        text = row["text"].replace("\n", " ")
        console.print(f"[bold]{row[key]:.3f}[/bold] [dim]{shown(str(row['id']))}[/dim]  "
                      f"{shown(text if len(text) <= 140 else text[:140] + '…')}", highlight=False)
        if row.get("pushed_up_by"):
            console.print(f"       [cyan]{shown(row['pushed_up_by'])}[/cyan]", highlight=False)


def _render_scramble(table: Any) -> None:
    from rich.table import Table

    out = Table("scrambled", "docs", "active latents / token (mean)", "p90", "active latents / document",
                "overlap with the original")
    for row in table.iter_rows(named=True):
        out.add_row(f"{row['level']:.0%}", str(row["docs"]), f"{row['concepts_mean']:.2f}",
                    f"{row['concepts_p90']:.1f}", f"{row['active_latents']:.1f}", f"{row['overlap']:.2f}")
    result_console().print(out)


def _plot(table: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saeembed.atomic import atomic_write

    panels = [(column, name) for column, name in (("concepts_mean", "active latents per token"),
                                                  ("active_latents", "active latents per document"),
                                                  ("overlap", "overlap with the original"))
              if column == "overlap" or table[column].n_unique() > 1]
    constant = [f"{name}: {table[column][0]:g} at every level" for column, name in
                (("concepts_mean", "active latents per token"), ("active_latents", "active latents per document"))
                if table[column].n_unique() <= 1]  # a document SAE keeps k per document: flat panels said nothing
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4 * len(panels) + 1, 6), 3.6 + 0.25 * len(constant)),
                             squeeze=False)
    levels = table["level"].to_numpy() * 100
    for ax, (column, name) in zip(axes[0], panels):
        ax.plot(levels, table[column].to_numpy(), marker="o")
        ax.set(xlabel="n-grams scrambled (%)", ylabel=name)
    fig.suptitle("\n".join(["Concepts as word n-grams are shuffled", *constant]), fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)

