"""Reading files someone else wrote (an SAE's config and weights, a probe, a baseline, a saved clustering):
a JSON object read field by field (`read_fields`, `Fields`), a safetensors file, and the SHA-256 that ties
the files of one save together (`sha256_hex`, `check_sha256`). Whatever is wrong is one error of the
caller's kind naming the file and the field and saying what to do, never a parser's traceback and never a
wrong value passed on. The one place these checks are written."""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Callable, NoReturn, cast

from saeembed.errors import SaeEmbedError


def read_json_object(path: Path, error: type[SaeEmbedError], fix: str) -> dict[str, Any]:
    """The JSON object in `path`; anything else (unreadable, not UTF-8, not JSON, not an object) raises
    `error` in one line naming the file and ending with `fix` (what to do)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}; check its permissions, or {fix}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text, so not JSON; {fix}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {fix}") from None
    except (ValueError, RecursionError) as exc:  # numbers too long to convert, nesting too deep
        raise error(f"{path} cannot be parsed as JSON ({' '.join(str(exc).split())[:80]}); {fix}") from None
    if not isinstance(data, dict):
        kind = {list: "list", str: "string", bool: "true/false", type(None): "null"}.get(type(data), "number")
        raise error(f"{path} holds a JSON {kind}, not an object; {fix}")
    return data


def read_safetensors(path: Path, error: type[SaeEmbedError], fix: str, framework: str = "numpy") -> dict[str, Any]:
    """The tensors in a safetensors file (`framework`: numpy arrays or torch tensors); a missing,
    truncated or foreign file raises `error` in one line naming it and ending with `fix`."""
    load_file: Callable[[str], dict[str, Any]]
    if framework == "torch":
        from safetensors.torch import load_file as load_torch

        load_file = load_torch
    else:
        from safetensors.numpy import load_file as load_numpy

        load_file = load_numpy
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise error(f"cannot read {path} ({' '.join(str(exc).split())[:120]}); {fix}") from None


LARGEST = 1e12
"""The largest magnitude a number read from a file may have (a probe's weight, a clustering's distance): far
beyond any real one, so a larger value says the file is damaged; below it a probe's risk and z-scores stay
finite (a weight of 1e300 makes inf - inf = NaN)."""

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 4, 4, 2


def show(value: Any) -> str:
    """A short one-line repr of a value read from a file (for messages)."""
    flat = " ".join(_SHORT.repr(value).split())
    return flat if len(flat) <= 80 else flat[:77] + "..."


class Fields:
    """Typed reads of one JSON object in `path`: a value of the wrong kind or out of range raises `error` in
    one line, `{path}: {field} is {value}; expected {what}. {fix}`. With `optional`, a missing field (or null)
    reads as None or the default (an SAE config, whose fields are optional); otherwise it is refused as
    missing (a file saeembed wrote, which always has them)."""

    def __init__(self, data: dict[str, Any], path: Path, error: type[SaeEmbedError], fix: str, *,
                 optional: bool = False, prefix: str = "") -> None:
        self.data, self.path, self.error, self.fix = data, path, error, fix
        self.optional, self.prefix = optional, prefix

    def refuse(self, key: str, value: Any, expected: str) -> NoReturn:
        shown = "is missing" if value is None else f"is {show(value)}"
        raise self.error(f"{self.path}: {self.prefix}{key} {shown}; expected {expected}. {self.fix}")

    def get(self, key: str | tuple[str, ...]) -> Any:
        """The value at `key` (dotted for nested objects: `store.sae.d_sae`; a tuple of names when a name holds a
        dot itself), None when absent."""
        value: Any = self.data
        for part in key.split(".") if isinstance(key, str) else key:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def _absent(self, key: str, value: Any, expected: str) -> bool:
        """True when `value` is absent and that is allowed; refused when absent and required."""
        if value is not None:
            return False
        if not self.optional:
            self.refuse(key, value, expected)
        return True

    def section(self, key: str) -> Fields:
        """The JSON object at `key` as Fields of its own (empty when absent and optional)."""
        value = self.get(key)
        if self._absent(key, value, "a JSON object"):
            value = {}
        if not isinstance(value, dict):
            self.refuse(key, value, "a JSON object")
        return Fields(value, self.path, self.error, self.fix, optional=self.optional, prefix=f"{self.prefix}{key}.")

    def object(self, key: str) -> dict[str, Any]:
        return self.section(key).data

    def text(self, key: str, choices: tuple | None = None) -> str | None:
        value = self.get(key)
        expected = f"one of {', '.join(str(c) for c in choices)}" if choices else "a string"
        if self._absent(key, value, expected):
            return None
        if not isinstance(value, str) or (choices is not None and value not in choices):
            self.refuse(key, value, expected)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if self._absent(key, value, "true or false"):
            return default
        if not isinstance(value, bool):
            self.refuse(key, value, "true or false")
        return value

    def number(self, key: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float | None:
        """A finite number (not true/false) within [low, high] (`low_open`: above `low`); with neither bound,
        within +-LARGEST."""
        value = self.get(key)
        if low is None and high is None:
            expected = f"a number between -{LARGEST:g} and {LARGEST:g}"
            low, high = -LARGEST, LARGEST
        else:
            expected = "a finite number" + (f" {'>' if low_open else '>='} {low:g}" if low is not None else "") \
                + (f" and <= {high:g}" if high is not None else "")
        if self._absent(key, value, expected):
            return None
        number = _finite(value)
        if number is None or (low is not None and (number <= low if low_open else number < low)) \
                or (high is not None and number > high):
            self.refuse(key, value, expected)
        return number

    def whole(self, key: str, low: int = 0) -> int | None:
        """A whole number >= `low` (written as an int, or a float like 8.0)."""
        value = self.get(key)
        expected = f"a whole number >= {low}"
        if self._absent(key, value, expected):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.refuse(key, value, expected)
        return value

    def numbers(self, key: str, length: int) -> list[float]:
        """A list of `length` numbers within +-LARGEST."""
        value = self.get(key)
        if not isinstance(value, list) or len(value) != length or not all(
                (n := _finite(v)) is not None and abs(n) <= LARGEST for v in value):
            self.refuse(key, value, f"a list of {length} numbers between -{LARGEST:g} and {LARGEST:g}")
        return [float(v) for v in value]

    def strings(self, key: str, length: int, optional: bool = False) -> list[Any]:
        """A list of `length` strings (`optional`: or nulls)."""
        value = self.get(key)
        if not isinstance(value, list) or len(value) != length or not all(
                isinstance(v, str) or (optional and v is None) for v in value):
            self.refuse(key, value, f"a list of {length} strings" + (" or nulls" if optional else ""))
        return value


class Required(Fields):
    """Fields of a file saeembed wrote, which always has them: a missing field is refused, so no read returns
    None."""

    def __init__(self, data: dict[str, Any], path: Path, error: type[SaeEmbedError], fix: str) -> None:
        super().__init__(data, path, error, fix, optional=False)

    def text(self, key: str, choices: tuple | None = None) -> str:
        return cast(str, super().text(key, choices))

    def number(self, key: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
        return cast(float, super().number(key, low=low, high=high, low_open=low_open))

    def whole(self, key: str, low: int = 0) -> int:
        return cast(int, super().whole(key, low))


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None when it is not a finite number (true/false are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def read_fields(path: Path, error: type[SaeEmbedError], fix: str) -> Required:
    """The JSON object in `path` (a file saeembed wrote) for typed reads; `fix` ends every message."""
    return Required(read_json_object(path, error, fix), path, error, fix)


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def check_sha256(fields: Fields, key: str | tuple[str, ...], path: Path, blob: bytes | None = None) -> bytes:
    """The bytes of `path` (or `blob`, already read from it), refused unless their SHA-256 is the one the head
    file records at `key`: a file damaged, a save stopped half-way, or the files of two saves mixed."""
    want = fields.get(key)
    name = key if isinstance(key, str) else ".".join(key)
    if not isinstance(want, str) or not re.fullmatch(r"[0-9a-f]{64}", want):
        fields.refuse(name, want, f"the SHA-256 of {path.name} (64 hex digits)")
    if blob is None:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise fields.error(f"cannot read {path} ({exc.strerror or exc}); every file of the save is needed. "
                               f"{fields.fix}") from None
    if sha256_hex(blob) != want:
        raise fields.error(f"{path} is not the file {fields.path.name} was saved with (its SHA-256 differs from "
                           f"{name}): it is damaged, a save was stopped half-way, or two saves were mixed. "
                           f"{fields.fix}")
    return blob
