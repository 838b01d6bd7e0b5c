"""The summary record every analysis result gives (`result.summary()`): what was tested and found, as numbers
and as plain sentences. The terminal's headline, `--json`'s first record and the page's lead are all read from
it, so the three views cannot disagree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Base of the summary records: subclasses add their numbers and write `lines`."""

    def as_dict(self) -> dict[str, Any]:
        """The `--json` summary record (the first line, before one line per row)."""
        return {"type": "summary", **dataclasses.asdict(self)}

    def lines(self) -> list[str]:
        """The headline in plain sentences; notes are not included (each renderer marks them its way)."""
        raise NotImplementedError


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 pair`, `2,345 pairs`."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
