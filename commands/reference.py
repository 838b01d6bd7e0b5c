"""The references in `docs/`, written from the code itself so they cannot go stale (a test regenerates both
and compares): `cli.md` from the app (every command and group, its help, arguments and options with their
defaults) and `api.md` from the library's public names (signatures and docstrings, a config's fields with
theirs).

    python -m commands.reference            # rewrites docs/cli.md and docs/api.md
"""

from __future__ import annotations

from typing import Any

import typer


def reference() -> str:
    """The whole CLI as Markdown, commands in the order `saeembed --help` lists them."""
    from commands.app import app

    root = typer.main.get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the app by `python -m commands.reference`; a test checks it is current.",
             ""]
    _command(root, "saeembed", lines, root.context_class(root, info_name="saeembed"))
    return "\n".join(lines).rstrip() + "\n"


def _command(command: Any, path: str, lines: list[str], ctx: Any) -> None:
    # click's objects (typer carries its own copy of click): read by their attributes
    lines += [f"{'#' * min(path.count(' ') + 2, 4)} `{path}`", ""]
    if command.help:
        lines += [" ".join(command.help.split()), ""]
    pieces = command.collect_usage_pieces(ctx)
    lines += ["```", f"{path} {' '.join(pieces)}".rstrip(), "```", ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    if arguments:
        lines += ["| argument | |", "|---|---|"]
        lines += [f"| `{a.name}` | {_cell(getattr(a, 'help', '') or '')}"
                  f"{' (required)' if a.required else ''} |" for a in arguments]
        lines.append("")
    if options:
        lines += ["| option | default | |", "|---|---|---|"]
        for option in options:
            names = ", ".join(f"`{n}`" for n in [*option.opts, *option.secondary_opts])
            lines.append(f"| {names} | {_default(option)} | {_cell(option.help or '')} |")
        lines.append("")
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            _command(sub, f"{path} {name}", lines, sub.context_class(sub, info_name=name, parent=ctx))


def _default(option: Any) -> str:
    if option.required:
        return "required"
    if option.is_flag and not option.secondary_opts:
        return ""
    value = option.default
    if value is None or callable(value):
        return ""
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def api_reference() -> str:
    """The library's public names (`saeembed.__all__`) as Markdown: each one's signature and docstring; a
    dataclass's fields with their types, defaults and docstrings; a class's public methods."""
    import dataclasses
    import inspect

    import saeembed
    from saeembed.settings import field_docs

    lines = ["# Library reference", "",
             "Generated from the docstrings by `python -m commands.reference`; a test checks it is current. "
             "Every name is importable from `saeembed` (`from saeembed import diff, DiffConfig`).", ""]
    for name in sorted((n for n in saeembed.__all__ if n != "__version__"), key=str.lower):
        obj = getattr(saeembed, name)
        kind = "class" if inspect.isclass(obj) else "function"
        lines += [f"## `{name}`", "", f"`{kind} saeembed.{name}{_signature(obj)}` "
                  f"(from `{obj.__module__}`)", "", inspect.getdoc(obj) or "(no docstring)", ""]
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
            docs = field_docs(obj)
            lines += ["| field | type | default | |", "|---|---|---|---|"]
            for f in dataclasses.fields(obj):
                default = "" if f.default is dataclasses.MISSING else f"`{f.default!r}`"
                help_ = _cell(docs.get(f.name, ""))
                lines.append(f"| `{f.name}` | `{_cell(str(f.type))}` | {_cell(default)} | {help_} |")
            lines.append("")
        if inspect.isclass(obj):
            for method, member in sorted(vars(obj).items()):
                if method.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                doc = inspect.getdoc(member) or ""
                head = method if isinstance(member, property) else f"{method}{_signature(member)}"
                lines += [f"- `{head}`" + (f": {' '.join(doc.split())}" if doc else "")]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _signature(obj: Any) -> str:
    import inspect

    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def write() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    (docs / "cli.md").write_text(reference(), encoding="utf-8")
    (docs / "api.md").write_text(api_reference(), encoding="utf-8")


if __name__ == "__main__":
    write()
