"""Atomic file writes: a file appears under its name complete, or not at all.

Every writer goes through here: write to a temporary sibling `.NAME.HOST-PID-RANDOM.tmp` (same folder,
so the final rename never crosses a file system), fsync it, `os.replace` it onto NAME, fsync the folder.

A run killed during the write (kill -9, power loss) leaves its temporary file behind. The next write to
the same NAME removes the ones whose writer is gone: same host and a process id that no longer runs.
A temporary file of a process that still runs is never touched, so two runs writing one output
concurrently both finish (the last rename wins, whole). Temporary files of another host (a shared
file system, where this host cannot see the process) are removed only after a day untouched, and those
of older saeembed versions (`.NAME.RANDOM.tmp`, no process id) after an hour untouched.

Examples (a streaming writer: begin, write to the temporary path, then commit, or discard on failure):
    >>> atomic_write(Path("out.csv"), lambda tmp: frame.write_csv(tmp))  # doctest: +SKIP
    >>> tmp = begin(Path("store.parquet"))  # doctest: +SKIP
    >>> writer = pq.ParquetWriter(tmp, schema)  # doctest: +SKIP
    >>> commit(tmp, Path("store.parquet"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Callable

HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
"""This host's tag in temporary names: a process id means something only on the host that issued it."""
OTHER_HOST_STALE_SECONDS = 24 * 3600
LEGACY_STALE_SECONDS = 3600
_TAGGED = re.compile(r"(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}")
_LEGACY = re.compile(r"[0-9a-f]{8}")


def temp_path(target: str | Path) -> Path:
    """A fresh temporary name next to `target`, tagged with this host and process."""
    target = Path(target)
    return target.with_name(f".{target.name}.{HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def begin(target: str | Path) -> Path:
    """Prepare a write of `target`: create its folder, remove stale temporary files of earlier writes
    of it (see the module), and return the temporary path to write to."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target)
    return temp_path(target)


def commit(tmp: Path, target: str | Path) -> Path:
    """Flush `tmp` to disk and rename it onto `target` (atomic), then flush the folder entry."""
    target = Path(target)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_folder(target.parent)
    return target


def discard(tmp: Path) -> None:
    """Remove an abandoned temporary file (a write that failed or was interrupted)."""
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


def atomic_write(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to produce the file, then commit it as `target`; on any error `target` is left as
    it was and the temporary file is removed."""
    target = Path(target)
    tmp = begin(target)
    try:
        write(tmp)
        commit(tmp, target)
    except OSError as exc:
        if exc.filename not in (None, str(tmp)) and Path(exc.filename) != tmp:
            raise
        # a full disk (or a quota, a read-only remount) says only "No space left on device": name the file
        # being written, not the temporary name nobody knows
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
    finally:
        discard(tmp)  # gone already after a commit
    return target


def write_bytes(target: str | Path, data: bytes) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def write_text(target: str | Path, text: str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sweep(target: str | Path) -> list[Path]:
    """Remove the stale temporary files of earlier writes of `target`; return what was removed."""
    target = Path(target)
    name = re.escape(target.name)
    pattern = re.compile(rf"\.{name}\.(?P<tag>[^.]+)\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for sibling in target.parent.iterdir():
            match = pattern.fullmatch(sibling.name)
            if match and _stale(sibling, match["tag"]):
                discard(sibling)
                removed.append(sibling)
    return removed


def sweep_folder(folder: str | Path) -> list[Path]:
    """Remove the stale temporary files of any target in `folder` (writers of unique names, such as cache
    parts, never write the same target twice)."""
    removed = []
    with contextlib.suppress(OSError):
        for sibling in Path(folder).iterdir():
            name = sibling.name
            if name.startswith(".") and name.endswith(".tmp") and "." in name[1:-4]:
                if _stale(sibling, name[1:-4].rsplit(".", 1)[1]):
                    discard(sibling)
                    removed.append(sibling)
    return removed


def _stale(path: Path, tag: str) -> bool:
    tagged = _TAGGED.fullmatch(tag)
    if tagged:
        pid = int(tagged["pid"])
        if tagged["host"] == HOST:
            return pid != os.getpid() and not pid_alive(pid)
        return _age(path) > OTHER_HOST_STALE_SECONDS
    if _LEGACY.fullmatch(tag):
        return _age(path) > LEGACY_STALE_SECONDS
    return False  # not a name this module makes: leave it alone


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (True when it cannot be known)."""
    if os.name == "nt" or pid <= 0:
        return True  # os.kill(pid, 0) is no probe on Windows; pid 0 names a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. PermissionError: it runs, as another user
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
