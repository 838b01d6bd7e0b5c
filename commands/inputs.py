"""The corpora an analysis command reads: stores as they are, corpus files embedded first (cached), with a
progress bar per corpus on stderr."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from commands.progress import embed_progress, read_progress


def open_inputs(inputs: list[str], preset: str | None, quiet: bool, stream: bool = False, engine: str = "local",
                ray_address: str | None = None, **settings: Any) -> list[Any]:
    """Stores for the given paths: stores load as they are (the parts read so far on stderr), corpus files
    are embedded first (cached) with the preset (default: the offline one), a progress bar per corpus on
    stderr. With `stream`, a folder store of several parts is read part by part instead
    (`saeembed.stream.StoreStream`: checked now, its vectors read again by each pass of the analysis); with
    `engine` ray every store is, its parts' work run as Ray tasks (corpus files are refused: embed them first)."""
    from saeembed.embedding.open_store import open_store
    from saeembed.embedding.presets import embed_config
    from saeembed.errors import SaeEmbedError
    from saeembed.store import is_store, store_files
    from saeembed.stream import StoreStream

    if engine not in ("local", "ray"):
        raise SaeEmbedError(f"--engine is local or ray, not {engine!r}")
    if ray_address is not None and engine != "ray":
        raise SaeEmbedError("--ray-address needs --engine ray")
    if engine == "ray":
        corpora = [s for s in inputs if s == "-" or not is_store(Path(s))]
        if corpora:
            raise SaeEmbedError(f"--engine ray reads stores, and {corpora[0]} is a corpus file: embed it first "
                                f"(`saeembed embed {corpora[0]} -o STORE --engine ray`), then run this on STORE")
    config = embed_config(preset, **settings)
    stores = []
    for source in inputs:
        if source != "-" and is_store(Path(source)):  # one bar at a time: rich draws one live display
            with read_progress(disabled=quiet) as on_read:
                parted = engine == "ray" or (stream and Path(source).is_dir() and len(store_files(Path(source))) > 1)
                stores.append(StoreStream(source, on_read, engine=engine, ray_address=ray_address)  # type: ignore[arg-type]
                              if parted else open_store(source, config, on_read=on_read))
        else:
            with embed_progress(disabled=quiet) as on_progress:
                stores.append(open_store(source, config, on_progress))
    return stores


@contextlib.contextmanager
def engine_session(engine: str, ray_address: str | None) -> Iterator[None]:
    """A Ray for the run with --engine ray (joined at `ray_address` or started here, shut down after)."""
    if engine != "ray":
        yield
        return
    from saeembed.ray_runtime import ray_session, require_ray

    require_ray()
    with ray_session(ray_address):
        yield


def open_style_inputs(inputs: list[str], preset: str | None, quiet: bool,
                      **settings: Any) -> tuple[list[Any] | None, str | None]:
    """The same corpora read by the preset's style companion (diff's "how it is written" layer), or None and
    why not: the preset has none, an input is a store (it holds only its own SAE's latents), or the LLM
    reader is not installed."""
    from saeembed.embedding.open_store import open_store
    from saeembed.embedding.presets import style_config
    from saeembed.errors import ReaderError
    from saeembed.store import is_store

    try:
        config = style_config(preset, **settings)
    except ReaderError as exc:
        return None, f"how it is written: not read ({exc})"
    if config is None:
        return None, None
    if "-" in inputs:
        return None, "how it is written: not read (stdin is read once; pass the corpus files)"
    if any(is_store(Path(source)) for source in inputs):
        return None, ("how it is written: not read (a store holds only its own SAE's latents; pass the corpus "
                      "files to read them with the LLM reader too)")
    stores = []
    for source in inputs:
        with embed_progress(disabled=quiet, what="reading how it is written") as on_progress:
            stores.append(open_store(source, config, on_progress))
    return stores, None
