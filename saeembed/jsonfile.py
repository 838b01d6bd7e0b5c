"""Reading files someone else wrote (an SAE config and weights, a probe, a baseline): a JSON object or a
safetensors file; whatever is wrong with it is one error of the caller's kind naming the file, never a
parser's traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

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
