"""What every command shares: one-line user errors, stderr progress, JSON on stdout."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape

# emoji off: data holding `:smile:` is printed as written, not as a picture
stderr = Console(stderr=True, emoji=False, highlight=False)

# ANSI escape sequences (CSI, OSC up to BEL or ST, two-character ESC forms), then any other control
# character except newline and tab: C0, DEL, C1, the bidirectional marks and overrides that reorder a
# line, and the Unicode line and paragraph separators some terminals break lines at.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def result_console() -> Console:
    """The console for results on stdout (no emoji codes, no guessing of highlights)."""
    return Console(emoji=False, highlight=False)


def label_markup(label: str | None, score: float | None) -> str:
    """A label as printed wherever one is shown: with its held-out quality score (detection accuracy,
    0.5 = chance), and marked weak below the bar the labelers keep (0.75)."""
    from saeembed.labels.offline import KEEP_SCORE

    text = shown(label or "(no label)")
    if score is None or score != score:  # unscored (None, or NaN from a table)
        return f"{text} [dim](unscored)[/dim]" if label else text
    if score < KEEP_SCORE:
        return f"{text} [yellow](label quality {score:.2f}, weak)[/yellow]"
    return f"{text} [dim](label quality {score:.2f})[/dim]"


def shown(value: Any, *, one_line: bool = False) -> str:
    """Data (a label, an id, a document, a file name) made safe to print with rich markup on: escape
    sequences and control characters removed, brackets escaped so `[/oops]` or `[link=...]` print as
    written. `one_line`: newlines and tabs become spaces."""
    text = _CONTROL.sub("", _ESCAPES.sub("", str(value)))
    if one_line:
        text = " ".join(text.split())
    return escape(text)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one red line on stderr and exit code 1; no traceback."""
    from saeembed.errors import SaeEmbedError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        yield
    except SaeEmbedError as exc:
        # escaped: a message may hold brackets (`saeembed[plot]`, `list[int]`) that rich would eat as markup
        stderr.print(f"[red]error:[/red] {shown(exc)}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]: run the same command again to resume")
        raise typer.Exit(130) from None


@contextlib.contextmanager
def no_traceback() -> Iterator[None]:
    """Around the whole CLI: what the commands did not turn into a user error still reaches the user as
    one line. The environment's failures (disk full, permission denied, a file vanishing) say what and
    where; anything else is a bug: the traceback goes to a log file whose path is printed."""
    import warnings

    from saeembed.errors import SaeEmbedError

    try:
        with warnings.catch_warnings():
            # Libraries' warnings (sklearn's "Graph is not fully connected", torch's deprecations) are
            # addressed to developers; what a user must know, the analyses say in their notes.
            warnings.simplefilter("ignore")
            yield
    except SaeEmbedError as exc:
        stderr.print(f"[red]error:[/red] {shown(exc)}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]: run the same command again to resume")
        sys.exit(130)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        stderr.print(f"[red]error:[/red] {shown(exc.strerror or exc)}{shown(where)}; check the path, "
                     f"its permissions and the free space, then run the same command again", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: a bug, reported with its traceback saved
        log = write_crash_log(exc)
        stderr.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {shown(exc, one_line=True)[:300]}; "
                     f"the traceback is in {shown(log)} (please attach it to a bug report)", soft_wrap=True)
        sys.exit(1)


def write_crash_log(exc: BaseException) -> Path:
    """The traceback of an unexpected error in `<cache>/logs/` (the system temp folder when that cannot
    be written): named by time and process, never overwritten."""
    import tempfile

    from saeembed.cache_root import default_cache_root

    name = f"error-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    text = f"saeembed {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc))
    for folder in (default_cache_root() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with open(path, "x", encoding="utf-8") as fh:  # never follows or replaces an existing file
                fh.write(text)
            return path
        except OSError:
            continue
    return Path("(no writable place for the log)")


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
        written = ", ".join(f"{shown(path)} ({len(frame):,} rows)" for path, frame in files.items())
        stderr.print(f"[green]wrote[/green] {written}", highlight=False)


@contextlib.contextmanager
def working(what: str, quiet: bool, stores: Any = ()) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while an analysis runs (gone when it ends), so a run of
    minutes is not silent; nothing with --quiet or --json, nor where stderr is not a terminal (a
    transient spinner there leaves blank lines in logs and pipes). Stores read by parts among `stores` say
    which pass and part they are at."""
    if quiet or not stderr.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from saeembed.stream import StoreStream

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr,
                  transient=True) as bar:
        task = bar.add_task(what, total=None)
        for store in stores:
            if isinstance(store, StoreStream):
                store.on_part = lambda passes, done, parts, name=store.path.name: bar.update(
                    task, description=f"{what}: {name}, pass {passes}, part {done}/{parts}")
        yield


def check_outputs(tables: Any = (), folders: Any = (), pages: Any = (), images: Any = (), inputs: Any = ()) -> None:
    """Refuse, before any work, outputs the final write would fail on: table files (suffix, a folder in
    the way, permissions, space), folders (a file in the way, permissions, space), HTML pages and PNG
    images (their suffix too); and
    any output that is one of the command's `inputs` (a store replaced by a table loses the embedding)
    or another output."""
    from saeembed.errors import SaeEmbedError

    seen: dict[Any, str] = {}
    for source in inputs:
        if source is not None and str(source) != "-":
            seen[Path(source).resolve()] = "an input"
    for path in [*tables, *folders, *pages, *images]:
        if path is None:
            continue
        where = Path(path).resolve()
        if where in seen:
            raise SaeEmbedError(f"{path} is {seen[where]} of this command; write the output somewhere else")
        seen[where] = "another output"
    from saeembed.export import check_table_output
    from saeembed.outputs import PAGE_SUFFIXES, check_output

    for path in tables:
        if path is not None:
            check_table_output(path)
    for path in folders:
        if path is not None:
            check_output(path, folder=True)
    for path in pages:
        if path is not None:
            check_output(path, suffixes=PAGE_SUFFIXES, what="an HTML page")
    for path in images:
        if path is not None:
            check_output(path, suffixes=(".png",), what="a PNG image")


def write_report(html: Any, write: Callable[[Any], Any], quiet: bool) -> None:
    """The HTML report of a result (`write(path)`, from saeembed.report), when --html asked for one."""
    if html is None:
        return
    with user_errors():
        write(html)
    if not quiet:
        stderr.print(f"[green]wrote[/green] {shown(html)}", highlight=False)


def parse_roles(value: str | None) -> tuple[str, ...] | None:
    """`assistant,user` -> ("assistant", "user")."""
    return tuple(r.strip() for r in value.split(",") if r.strip()) if value else None
