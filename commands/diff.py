"""`saeembed diff`: the concepts whose frequency differs between corpora, with statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.diff_render import render
from commands.inputs import engine_session, open_inputs, open_style_inputs
from commands.ui import check_outputs, emit, print_json, user_errors, working, write_report
from saeembed.analysis.config import DiffConfig


def run(
    inputs: Annotated[list[str], typer.Argument(help="Two corpora or stores (A B); with --vs a target and the "
                                                     "corpora to compare it with.")],
    vs: Annotated[bool, typer.Option("--vs", help="Compare the first input with all the others: a finding must "
                                                  "differ from each of them the same way.")] = False,
    pair_on: Optional[str] = options.setting(DiffConfig, "pair_on"),
    holdout: Optional[float] = options.setting(DiffConfig, "holdout"),
    measure: str = options.setting(DiffConfig, "measure"),
    length: str = options.setting(DiffConfig, "length"),
    length_bands: int = options.setting(DiffConfig, "length_bands"),
    alpha: float = options.setting(DiffConfig, "alpha"),
    min_diff: float = options.setting(DiffConfig, "min_diff"),
    top: Annotated[int, typer.Option(help="Themes shown (and written with --json), strongest first.")] = 8,
    all_rows: Annotated[bool, typer.Option("--all", help="Every theme on screen; --json / -o: every tested "
                                                         "latent, one record each.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout: a summary, then one theme "
                                                          "each (one latent each with --all).")] = False,
    output: options.Output = None,
    html: options.Html = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    seed: int = options.setting(DiffConfig, "seed"),
    form: bool = options.setting(DiffConfig, "form", "--form/--no-form"),
    style: Annotated[bool, typer.Option("--style/--no-style", help="Also compare how the documents are written as "
                                                                  "an LLM reads them (the preset's style reader, "
                                                                  "corpus files only).")] = True,
    style_min_effect: float = options.setting(DiffConfig, "style_min_effect"),
    engine: options.Engine = "local",
    ray_address: options.RayAddress = None,
    quiet: options.Quiet = False,
) -> None:
    """How A differs from B: the length gap; then form counted in the text (lists, headings, '!',
    openings ...); then how it is written (an LLM's token latents, as rates); then what it is about (the
    SAE concepts more frequent in one at equal length), grouped into themes. Each with its 95% interval,
    test and Benjamini-Hochberg q, and an example from both sides."""
    from saeembed.analysis.diff import diff
    from saeembed.errors import SaeEmbedError
    from saeembed.report import write_diff_report

    with user_errors():
        check_outputs(tables=[output], pages=[html], inputs=inputs)
        if vs and len(inputs) < 2:
            raise SaeEmbedError("--vs needs a target and at least one corpus to compare it with")
        if not vs and len(inputs) != 2:
            raise SaeEmbedError(f"give two corpora to compare (got {len(inputs)}); "
                                f"use --vs to compare one with several")
        config = DiffConfig(measure=measure, alpha=alpha, min_diff=min_diff, pair_on=pair_on,  # type: ignore[arg-type]
                            holdout=holdout, length=length, length_bands=length_bands, seed=seed,
                            form=form, style_min_effect=style_min_effect)
        if engine == "ray" and pair_on:
            raise SaeEmbedError("--engine ray reads the stores part by part, and --pair-on needs their rows side "
                                "by side (loaded whole): drop one of them")
        settings = {"text_field": text_field, "id_field": id_field, "cache_dir": cache_dir}
        with engine_session(engine, ray_address):
            # folder stores are read part by part, unless pairs must be aligned row by row
            stores = open_inputs(inputs, preset, quiet or json_out, stream=pair_on is None, engine=engine,
                                 ray_address=ray_address, **settings)
            style_stores, why_not = (open_style_inputs(inputs, preset, quiet or json_out, **settings) if style
                                     else (None, None))
            with working("comparing", quiet or json_out, stores):
                result = diff(stores[0], stores[1:], config, names=_names(inputs), style=style_stores)
        if why_not:
            result.input_notes.append(why_not)
    write_report(html, lambda path: write_diff_report(result, path), quiet)
    rows = _rows(result, all_rows)
    shown = None if all_rows else top
    emit({output: rows} if output else {}, rows, False,
         lambda: _print_json(result, shown) if json_out else render(result, shown), quiet)


def _names(paths: list[str]) -> list[str]:
    """Each corpus by its file stem; by its path where two stems are the same (before/x.jsonl, after/x.jsonl),
    so "more in x" always says which."""
    stems = [Path(p).stem or p for p in paths]
    return [p if stems.count(stem) > 1 else stem for p, stem in zip(paths, stems)]


def _rows(result: Any, all_rows: bool) -> Any:
    """The table written with -o: form features, then latents, each row with its `layer`; the findings,
    or every tested row with --all."""
    import polars as pl

    latents = (result.table if all_rows else result.findings).with_columns(layer=pl.lit("content"))
    parts = []
    if result.form is not None:
        parts.append(result.form if all_rows else result.form_findings)
    if result.style is not None:
        parts.append(result.style if all_rows else result.style_findings)
    if not parts:
        return latents
    return pl.concat([*parts, latents.select("layer", *[c for c in latents.columns if c != "layer"])],
                     how="diagonal_relaxed")


def _print_json(result: Any, top: int | None) -> None:
    """A summary record, then the top form findings and themes (every form feature and tested latent when
    `top` is None), each with its `layer`: form, style or content."""
    print_json(summary(result, top))
    if result.form is not None:
        form = result.form if top is None else result.form_findings.head(top)
        for row in form.iter_rows(named=True):
            print_json({"type": "form", **row})
    if result.style is not None:
        style = result.style if top is None else result.style_themes.head(top)
        for row in style.iter_rows(named=True):
            print_json({"type": "latent" if top is None else "theme", "layer": "style", **row})
    if top is None:
        for row in result.table.iter_rows(named=True):
            print_json({"type": "latent", "layer": "content", **row})
        return
    for row in result.themes.head(top).iter_rows(named=True):
        print_json({"type": "theme", "layer": "content", **row})


def summary(result: Any, top: int | None) -> dict[str, Any]:
    """The result's summary record (`DiffResult.summary`), and how many themes this run shows."""
    record = result.summary().as_dict()
    return {**record, "themes_shown": record["n_themes"] if top is None else min(top, record["n_themes"])}
