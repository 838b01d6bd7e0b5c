"""What every command shares: one-line user errors, stderr progress, JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any, Callable, Iterator

import typer
from rich.console import Console

stderr = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one red line on stderr and exit code 1; no traceback."""
    from saeembed.errors import SaeEmbedError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        yield
    except SaeEmbedError as exc:
        from rich.markup import escape

        # escaped: a message may hold brackets (`saeembed[plot]`, `list[int]`) that rich would eat as markup
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]: run the same command again to resume")
        raise typer.Exit(130) from None


def print_json(obj: Any) -> None:
    """One JSON document on stdout (machine output stays clean of decoration)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def print_rows(frame: Any) -> None:
    """A polars DataFrame as JSON lines on stdout, one object per row."""
    for row in frame.iter_rows(named=True):
        print_json(row)


def emit(files: dict[Any, Any], json_rows: Any, json_out: bool, render: Callable[[], None], quiet: bool) -> None:
    """How every analysis hands over its result: tables to the files asked for (atomic, format by
    suffix), then JSON lines on stdout or the rendering for people, and a note of what was written."""
    from saeembed.export import write_frame

    with user_errors():
        for path, frame in files.items():
            write_frame(frame, path)
    if json_out:
        print_rows(json_rows)
    else:
        render()
    if files and not quiet:
        written = ", ".join(f"{path} ({len(frame):,} rows)" for path, frame in files.items())
        stderr.print(f"[green]wrote[/green] {written}", highlight=False)


def open_inputs(inputs: list[str], preset: str | None, quiet: bool, **settings: Any) -> list[Any]:
    """Stores for the given paths: stores load as they are, corpus files are embedded first (cached)
    with the preset (default: the offline one), a progress bar per corpus on stderr."""
    from commands.progress import embed_progress
    from saeembed.presets import embed_config
    from saeembed.sources import open_store

    config = embed_config(preset, **settings)
    stores = []
    for source in inputs:
        with embed_progress(disabled=quiet) as on_progress:
            stores.append(open_store(source, config, on_progress))
    return stores


def parse_roles(value: str | None) -> tuple[str, ...] | None:
    """`assistant,user` -> ("assistant", "user")."""
    return tuple(r.strip() for r in value.split(",") if r.strip()) if value else None
