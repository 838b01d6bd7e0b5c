"""Ray for the parts of saeembed that scale out (embedding, the analyses of folder stores): joining or starting a
Ray, and its failures told as one line. Ray is an optional extra: nothing here imports it before it is asked for.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from saeembed.errors import ConfigError, SaeEmbedError, first_line

INSTALL = 'pip install "saeembed[ray]"'


def require_ray() -> None:
    """Refuse `engine="ray"` in one line when Ray is not installed (checked before any work)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, joined (`address`: a cluster's HOST:PORT, ray://..., auto) or started here on this machine (None),
    and then shut down after the run; a Ray the caller started is used as it is."""
    import ray

    started = False
    if not ray.is_initialized():
        local = address is None
        if address is not None:  # not local
            _check_reachable(address)
        no_dashboard: dict[str, Any] = {"include_dashboard": False} if local else {}
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **no_dashboard)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            where = f"the Ray cluster at {address}" if not local else "a local Ray"
            raise ConfigError(f"cannot start or join {where} ({first_line(exc)}); start the cluster "
                              f"(`ray start --head`) or check --ray-address") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT address (or ray://HOST:PORT) that refuses connections is one line at once; Ray itself
    retries it for minutes."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it "
                          f"(`ray start --head`) or check --ray-address") from None


def user_error(exc: BaseException, advice: str = "the parts written so far are kept: fix that and run the same "
                                                 "command again to resume") -> SaeEmbedError:
    """The saeembed error a worker raised (e.g. a chunk that does not fit in memory, a damaged store part),
    found inside Ray's wrappers; any other failure as one line naming the worker's own error (e.g. weights
    that cannot be read), not Ray's wrapper of it, then `advice`."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__  # Ray keeps a task's error as `cause`
    for error in chain:
        if isinstance(error, SaeEmbedError):
            # Ray re-raises a task's error as a class deriving from both RayTaskError and the original.
            original = next(k for k in type(error).__mro__ if issubclass(k, SaeEmbedError)
                            and k.__module__.startswith("saeembed"))
            return original(*error.args) if error.args else original(str(error))
    innermost = next((e for e in reversed(chain) if not type(e).__module__.startswith("ray")), chain[-1])
    first = (str(innermost).strip().splitlines() or [""])[0]
    return SaeEmbedError(f"the Ray run failed ({type(innermost).__name__}: {first_line(first) if first else '-'}); "
                         f"{advice}")
