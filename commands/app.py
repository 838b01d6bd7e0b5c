"""Entry point: registers one Typer command per module. Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from commands import (
    assign,
    check,
    cluster,
    concepts,
    correlations,
    diff,
    embed,
    info,
    labels,
    presets,
    registered,
    risk,
    search,
    train_sae,
)
from commands.ui import no_traceback
from saeembed.analysis.registry import ANALYSES

app = typer.Typer(
    name="saeembed",
    help="Corpus analysis with sparse-autoencoder (SAE) embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: `[/subfolder]` in an option's help is not markup
)


def _version(value: bool) -> None:
    if value:
        from saeembed import __version__

        typer.echo(f"saeembed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Corpus analysis with sparse-autoencoder (SAE) embeddings."""


# Short help is written out: click cuts a docstring's first sentence at 45 characters or at "et al.".
app.command("embed", short_help="Embed documents into SAE vectors stored as Parquet.")(embed.run)
app.command("info", short_help="What a store holds: documents, tokens, model, SAE, latents.")(info.run)
app.command("check", short_help="Is the reader + SAE hook right? FVU and L0 on sample text.")(check.run)
app.command("train-sae", short_help="Train a TopK SAE on a reader's activations (resumable).")(train_sae.run)
app.command("diff", short_help="How corpora differ: length, form counted in the text, concepts.")(diff.run)
app.command("correlations", short_help="Concepts that fire together more often than chance.")(correlations.run)
app.command("concepts", short_help="The latents a concept query selects, with why.")(concepts.run)
app.command("search", short_help="Documents that carry a query's concepts, best first.")(search.run)
app.command("cluster", short_help="Cluster documents along the concepts you pick.")(cluster.run)
app.command("assign", short_help="Place documents in a saved clustering.")(assign.run)
app.command("presets", short_help="The reader + SAE presets, and when to use which.")(presets.run)
for _analysis in ANALYSES:  # the registered analyses (`saeembed.analysis.registry`), one command each
    app.command(_analysis.name, short_help=_analysis.short_help)(registered.command(_analysis))
app.add_typer(labels.app, name="labels", short_help="Latent labels: import, generate offline or by an LLM, show.")
app.add_typer(risk.app, name="risk", short_help="Hallucination-risk probes that read concept patterns.")


def main() -> None:
    with no_traceback():
        app()
