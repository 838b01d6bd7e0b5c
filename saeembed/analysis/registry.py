"""Analyses registered once: each entry here becomes a library name (`saeembed.drift`), a command
(`saeembed drift`, its options built from the config's declared fields) and, with a template, an HTML page.
How to add one: `docs/adding-an-analysis.md`.

A registered analysis lives in one module that holds:
- the function named like the analysis: `(store, *inputs, config=None) -> result`;
- its config, a dataclass whose fields declare their limits and flags (`saeembed.settings`);
- the result: `.table` (every tested row, a polars DataFrame: what `-o` writes), `.findings` (the rows a
  person reads, what `--json` prints), `.summary()` (a record with `.as_dict()`, read by the terminal,
  `--json` and the page alike);
- `describe(result, top) -> list[str]`: the result as plain lines for the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable


@dataclass(frozen=True)
class Input:
    """An input of the analysis beyond its store and config (e.g. drift's field to order by): a required
    argument of the function and a required option of the command."""

    name: str
    flag: str
    help: str


@dataclass(frozen=True)
class Analysis:
    name: str
    """The function's name in its module, the library's public name and the command's."""
    short_help: str
    """One line for `saeembed --help`."""
    module: str
    config: str
    """The config class's name in the module."""
    inputs: tuple[Input, ...] = ()
    page: str | None = None
    """Its page's template in `saeembed/report/templates` (None: no `--html`)."""

    def function(self) -> Callable[..., Any]:
        return getattr(import_module(self.module), self.name)

    def config_class(self) -> type:
        return getattr(import_module(self.module), self.config)

    def describe(self, result: Any, top: int | None) -> list[str]:
        return import_module(self.module).describe(result, top)


ANALYSES: tuple[Analysis, ...] = (
    Analysis("drift", "Concepts that rise or fall along an ordered field (a date).", "saeembed.analysis.drift",
             "DriftConfig", inputs=(Input("by", "--by", "The field the documents are ordered by: numbers, dates, "
                                                        "or text holding either (e.g. ISO dates)."),),
             page="drift.html"),
)
