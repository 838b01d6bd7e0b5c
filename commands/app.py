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
    risk,
    search,
    train_sae,
)
from commands.ui import no_traceback

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


app.command("embed")(embed.run)
app.command("info")(info.run)
app.command("check")(check.run)
app.command("train-sae")(train_sae.run)
app.command("diff")(diff.run)
app.command("correlations")(correlations.run)
app.command("concepts")(concepts.run)
app.command("search")(search.run)
app.command("cluster")(cluster.run)
app.command("assign")(assign.run)
app.command("presets")(presets.run)
app.add_typer(labels.app, name="labels")
app.add_typer(risk.app, name="risk")


def main() -> None:
    with no_traceback():
        app()
