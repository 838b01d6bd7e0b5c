"""Checking where a command will write, before any work: a run must not fail only at its final write.

Examples:
    >>> check_output("out/store.parquet")  # doctest: +SKIP
    >>> check_output("my-sae", folder=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from saeembed.errors import OutputError

MIN_FREE_BYTES = 1 << 20
"""Less free space than this where the output goes is refused (how much a run needs is not known before)."""


PAGE_SUFFIXES = (".html", ".htm")  # what an HTML page's name ends with (a page named x.pdf is refused)


def check_output(path: str | Path, *, folder: bool = False, need_bytes: int = MIN_FREE_BYTES,
                 suffixes: tuple[str, ...] = (), what: str = "the output") -> Path:
    """Refuse, in one line naming the path and what to do, an output the final write would fail on:
    a file path that is a folder (or, with `folder`, a folder path that is a file), a parent that cannot
    be created because part of it is a file, a place this process cannot write to (checked by creating and
    removing a temporary file there), a disk with less than `need_bytes` free, and a file name not ending
    in one of `suffixes` (when given: `what`, e.g. "an HTML page", says why). A missing parent
    folder is not an error: the writers create it, and the check is made in the nearest folder that exists.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file, but a folder is written there; pass another path")
        place = path
    else:
        if path.is_dir():
            example = f"page{suffixes[0]}" if suffixes and suffixes[0] != ".parquet" else "store.parquet"
            raise OutputError(f"{path} is a folder; give a file name, e.g. {path / example}")
        if suffixes and path.suffix.lower() not in suffixes:
            raise OutputError(f"{path}: {what} is written there, so its name must end {' or '.join(suffixes)}; "
                              f"e.g. {path.with_suffix(suffixes[0]).name}")
        place = path.parent
    existing = place
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file or a broken link, not a folder; "
                          f"choose another output path")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".saeembed-write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write in {existing} ({exc.strerror or exc}); fix its permissions or "
                          f"choose another place for {path}") from None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(existing).free
        if free < need_bytes:
            raise OutputError(f"only {free:,} bytes free on the disk of {existing}; free some space or write "
                              f"{path} elsewhere")
    return path
