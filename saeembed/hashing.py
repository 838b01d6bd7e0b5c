"""Content hashes that key the cache and describe models and SAEs in store metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Hash whole files up to this size; beyond it, hash size + head + tail so a 16 GB reader does not
# cost a minute of reading before every run. A retrained model changes every byte, so the sample
# still tells two checkpoints apart.
_FULL_HASH_LIMIT = 1 << 30
_SAMPLE = 1 << 20


def fingerprint(paths: list[Path]) -> str:
    """A short stable hash of the named files' contents (sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with open(path, "rb") as fh:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
            else:
                digest.update(fh.read(_SAMPLE))
                fh.seek(size - _SAMPLE)
                digest.update(fh.read(_SAMPLE))
    return digest.hexdigest()[:16]


def text_key(*parts: str) -> str:
    """Hash of a document's exact model input, used as its cache key."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
