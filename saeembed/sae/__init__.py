"""Sparse autoencoders: one canonical form (`SAE`) loaded from every published format."""

from __future__ import annotations

import re
from pathlib import Path

from saeembed.errors import SAEError
from saeembed.sae.formats import FORMATS, detect_format, load_format
from saeembed.sae.hooks import layer_from_hook
from saeembed.sae.model import SAE, SAEInfo

__all__ = ["SAE", "SAEInfo", "FORMATS", "load_sae", "layer_from_hook", "resolve_local"]

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(/.+)?$")


def load_sae(spec: str | Path, *, layer: int | None = None, fmt: str | None = None,
             revision: str | None = None, local_only: bool = False) -> SAE:
    """Load an SAE from a local file/folder or a Hugging Face id (`org/repo[/subfolder]`).

    Args:
        spec: a path, or a hub id whose path components after `org/repo` name a subfolder
            (e.g. `google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82`).
        layer: the block the caller reads; picks `layers.L/` in multi-hookpoint sparsify folders.
        fmt: force a format instead of detecting it from the files.
        revision: hub revision (branch, tag or commit).
        local_only: never reach the hub; a hub id is read from the local hub cache only (analyses that
            find the SAE through a store's metadata, which anyone can edit, use this).

    Examples:
        >>> sae = load_sae("Goodfire/Llama-3.1-8B-Instruct-SAE-l19")  # doctest: +SKIP
        >>> sae.d_sae  # doctest: +SKIP
        65536
    """
    path = resolve_local(str(spec), revision=revision, local_only=local_only)
    path = _pick_hookpoint(path, layer)
    if fmt is not None and fmt not in FORMATS:
        raise SAEError(f"unknown SAE format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return load_format(path, fmt or detect_format(path), str(spec))


def resolve_local(spec: str, *, revision: str | None = None, local_only: bool = False) -> Path:
    """A local path for `spec`: the path itself, or the hub snapshot folder it names (from the local hub
    cache alone with `local_only`)."""
    try:
        path = Path(spec).expanduser()
        if path.exists():
            return path
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, an unknown ~user
        pass
    if not _HUB_ID.match(spec):
        raise SAEError(f"SAE not found: {spec!r} is neither a local file/folder nor a hub id (org/repo)")
    parts = spec.split("/")
    if any(part in ("", ".", "..") for part in parts):  # `org/repo/../../x` would leave the snapshot folder
        raise SAEError(f"{spec!r} is not a hub id: its parts cannot be empty, '.' or '..'")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*", f"{subfolder}/**"] if subfolder else None
    try:
        root = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                      local_files_only=local_only))
    except Exception as exc:  # noqa: BLE001 - hub client errors vary by version and cause
        raise SAEError(f"cannot fetch SAE {repo_id!r} from the hub ({type(exc).__name__}: {exc}); "
                       f"check the id and network, or download it and pass the local folder") from None
    path = root / subfolder if subfolder else root
    if not path.exists():
        raise SAEError(f"hub repo {repo_id!r} has no folder {subfolder!r}")
    return path


def _pick_hookpoint(path: Path, layer: int | None) -> Path:
    """In a sparsify checkpoint with one folder per hookpoint, choose the one for `layer`."""
    if not path.is_dir() or (path / "cfg.json").exists():
        return path
    try:
        hookpoints = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "sae.safetensors").exists())
    except OSError as exc:
        raise SAEError(f"cannot list the SAE folder {path}: {exc.strerror or exc}; check the path and its "
                       f"permissions") from None
    if not hookpoints:
        return path
    if layer is None:
        raise SAEError(f"{path} holds SAEs for several hookpoints ({', '.join(hookpoints)}); set layer (--layer) "
                       f"or the hookpoint folder itself")
    chosen = path / f"layers.{layer}"
    if not chosen.exists():
        raise SAEError(f"{path} has no SAE for layer {layer}; it has {', '.join(hookpoints)}")
    return chosen
