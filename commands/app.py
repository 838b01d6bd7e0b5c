"""Entry point: registers one Typer command per module. Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from commands import check, cluster, concepts, correlations, diff, embed, info, labels, presets, risk, search, train_sae

app = typer.Typer(
    name="saeembed",
    help="Corpus analysis with sparse-autoencoder (SAE) embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("embed")(embed.run)
app.command("info")(info.run)
app.command("check")(check.run)
app.command("train-sae")(train_sae.run)
app.command("diff")(diff.run)
app.command("correlations")(correlations.run)
app.command("concepts")(concepts.run)
app.command("search")(search.run)
app.command("cluster")(cluster.run)
app.command("presets")(presets.run)
app.add_typer(labels.app, name="labels")
app.add_typer(risk.app, name="risk")


def main() -> None:
    app()
