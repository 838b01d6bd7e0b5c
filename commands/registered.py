"""The commands of the registered analyses (`saeembed.analysis.registry`), built from their declarations: the
corpus and its reading options (declared once, here), the analysis's own inputs, every config field that
names a flag (default and help from the field, `saeembed.settings`), and the outputs every analysis has:
--top, --all, --json, -o, --html, --quiet."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

import typer
from typing_extensions import Annotated

from commands import options
from commands.inputs import open_inputs
from commands.ui import check_outputs, emit, print_json, result_console, shown, user_errors, working, write_report
from saeembed.analysis.registry import Analysis
from saeembed.settings import field_type, limit_of

# What every registered analysis takes besides its own inputs and config: (name, annotation, default).
CORPUS = [
    ("corpus", Annotated[str, typer.Argument(help="A store, or a corpus file (embedded with the preset, cached).")],
     inspect.Parameter.empty),
    ("preset", options.Preset, None), ("text_field", options.TextField, "text"), ("id_field", options.IdField, "id"),
    ("cache_dir", options.CacheDir, None),
]
OUTPUTS = [
    ("top", Annotated[int, typer.Option(help="Findings shown, or printed with --json.")], 10),
    ("all_rows", Annotated[bool, typer.Option("--all", help="Every finding on screen and with --json; -o writes "
                                                            "every tested row either way.")], False),
    ("json_out", Annotated[bool, typer.Option("--json", help="JSON lines on stdout: the summary, then one finding "
                                                             "each.")], False),
    ("output", options.Output, None), ("quiet", options.Quiet, False),
]


def command(analysis: Analysis) -> Callable[..., None]:
    """The Typer command of `analysis`: its signature is built here, its body runs the analysis as every
    command does (outputs checked first, one-line errors, progress on stderr)."""
    config = analysis.config_class()
    flags = {f.name: limit_of(f).flag for f in dataclasses.fields(config) if limit_of(f).flag}
    settings = list(flags)  # the config fields that are options
    params = [*CORPUS,
              *[(i.name, Annotated[str, typer.Option(i.flag, help=i.help)], inspect.Parameter.empty)
                for i in analysis.inputs],
              *[(name, field_type(config, name), options.setting(config, name, flag)) for name, flag in flags.items()],
              *OUTPUTS]
    if analysis.page:
        params.append(("html", options.Html, None))

    def run(**given: Any) -> None:
        from saeembed.report import write_result_page

        json_out, quiet = given["json_out"], given["quiet"]
        with user_errors():
            check_outputs(tables=[given["output"]], pages=[given.get("html")], inputs=[given["corpus"]])
            settings_given = config(**{name: given[name] for name in settings})
            [store] = open_inputs([given["corpus"]], given["preset"], quiet or json_out, text_field=given["text_field"],
                                  id_field=given["id_field"], cache_dir=given["cache_dir"])
            with working(f"{analysis.name}: testing", quiet or json_out):
                result = analysis.function()(store, *[given[i.name] for i in analysis.inputs], settings_given)
        if analysis.page:
            write_report(given["html"], lambda path: write_result_page(
                result, path, analysis.page, f"{analysis.name}: {Path(given['corpus']).name}"), quiet)
        top = None if given["all_rows"] else given["top"]
        findings = result.findings if top is None else result.findings.head(top)
        if json_out:
            print_json(result.summary().as_dict())

        def render() -> None:
            console = result_console()
            for line in analysis.describe(result, top):
                console.print(shown(line), highlight=False, soft_wrap=True)

        emit({given["output"]: result.table} if given["output"] else {}, findings, json_out, render, quiet)

    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
         for name, annotation, default in params])
    run.__annotations__ = {name: annotation for name, annotation, _ in params}
    run.__doc__ = (inspect.getdoc(analysis.function()) or "").split("\n\n")[0]
    run.__name__ = analysis.name
    return run

