"""The rich progress bar of long runs, drawn on stderr so stdout stays parseable."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from commands.ui import stderr


@contextlib.contextmanager
def embed_progress(disabled: bool = False, what: str = "embedding") -> Iterator[Callable[[Any], None] | None]:
    """Yield an `on_progress` callback that draws docs, docs/s, tokens/s and ETA (on a terminal)."""
    if disabled or not stderr.is_terminal:
        yield None
        return
    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=stderr, transient=True)
    task = progress.add_task("embed", total=None, rate="")
    started = time.perf_counter()
    first_done: list[int] = []

    def update(state: Any) -> None:
        if not first_done:
            first_done.append(state.docs_done)  # documents from the cache do not count in the rates
        elapsed = max(time.perf_counter() - started, 1e-6)
        docs_rate = (state.docs_done - first_done[0]) / elapsed
        progress.update(task, total=state.docs_total, completed=state.docs_done,
                        rate=f"{docs_rate:,.0f} docs/s  {state.tokens_done / elapsed:,.0f} tok/s")

    with progress:
        yield update


@contextlib.contextmanager
def read_progress(disabled: bool = False) -> Iterator[Callable[[int, int], None] | None]:
    """Yield an `on_read(parts read, parts)` callback that draws the parts of a store read so far (on a
    terminal)."""
    if disabled or not stderr.is_terminal:
        yield None
        return
    progress = Progress(TextColumn("reading the store"), BarColumn(), MofNCompleteColumn(), TextColumn("parts"),
                        TimeRemainingColumn(), console=stderr, transient=True)
    task = progress.add_task("read", total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, total=total, completed=done)

    with progress:
        yield update


@contextlib.contextmanager
def train_progress(disabled: bool = False) -> Iterator[Callable[[Any], None] | None]:
    """Yield an `on_progress` callback that shows steps, tokens/s, train FVU and held-out figures (on a
    terminal)."""
    if disabled or not stderr.is_terminal:
        yield None
        return
    progress = Progress(TextColumn("training"), TextColumn("{task.fields[state]}"), console=stderr, transient=True)
    task = progress.add_task("train", total=None, state="")
    started = time.perf_counter()

    def update(state: Any) -> None:
        held_out = state.eval
        text = (f"step {state.step:,}  {state.tokens / max(time.perf_counter() - started, 1e-6):,.0f} tok/s  "
                f"train FVU {state.train_fvu:.3f}  dead {state.dead_fraction:.1%}")
        if held_out:
            text += (f"  | held-out FVU {held_out['fvu']:.3f}  L0 {held_out['l0']:.1f}  "
                     f"dead {held_out['dead_fraction']:.1%}")
        progress.update(task, state=text)

    with progress:
        yield update
