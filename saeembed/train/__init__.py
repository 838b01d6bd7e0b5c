"""Training SAEs on a reader's activations: windows of activations, cached and shuffled
(`activations`), the TopK SAE and its trainer (`topk`), the settings (`config`) and the run with checkpoints
(`train`). Names load on first use, so `TrainConfig` is read without importing torch."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"TrainConfig": "saeembed.train.config", "TrainResult": "saeembed.train.train",
            "train_sae": "saeembed.train.train"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'saeembed.train' has no attribute {name!r}")
