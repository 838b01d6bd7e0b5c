"""saeembed: corpus analysis with sparse-autoencoder (SAE) embeddings.

Heavy dependencies (torch, transformers) load only when a function that needs them is called,
so importing the package and running `saeembed --help` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # embedding
    "Embedder": "saeembed.embedding.pipeline", "embed": "saeembed.embedding.pipeline",
    "EmbedResult": "saeembed.embedding.pipeline", "EmbedConfig": "saeembed.embedding.config",
    "read_corpus": "saeembed.embedding.corpus", "records_corpus": "saeembed.embedding.corpus",
    "Document": "saeembed.embedding.corpus", "load_reader": "saeembed.embedding.reader",
    "check": "saeembed.embedding.check", "open_store": "saeembed.embedding.open_store",
    # stores and SAEs
    "load_store": "saeembed.store", "Store": "saeembed.store", "read_meta": "saeembed.store",
    "load_sae": "saeembed.sae", "SAE": "saeembed.sae", "TrainConfig": "saeembed.train.config",
    "train_sae": "saeembed.train.train",
    # analyses
    "select_concepts": "saeembed.analysis.concepts", "diff": "saeembed.analysis.diff",
    "correlations": "saeembed.analysis.correlations", "associations": "saeembed.analysis.associations",
    "search": "saeembed.analysis.search", "cluster": "saeembed.analysis.cluster",
    "save_clustering": "saeembed.analysis.assign", "load_clustering": "saeembed.analysis.assign",
    "assign": "saeembed.analysis.assign", "ClusteringModel": "saeembed.analysis.assign",
    "fit_risk": "saeembed.analysis.risk", "score_risk": "saeembed.analysis.risk", "Probe": "saeembed.analysis.risk",
    "DiffConfig": "saeembed.analysis.config", "CorrelationConfig": "saeembed.analysis.config",
    "ClusterConfig": "saeembed.analysis.config", "RiskConfig": "saeembed.analysis.config",
    "SearchConfig": "saeembed.analysis.config",
    "SaeEmbedError": "saeembed.errors",
}

# The registered analyses (`saeembed.analysis.registry`): each function and its config, by name.
from saeembed.analysis.registry import ANALYSES  # noqa: E402  (dataclasses only: no heavy import)

_EXPORTS.update({name: a.module for a in ANALYSES for name in (a.name, a.config)})

# Subpackages reached as attributes (`saeembed.report.write_diff_report(...)` after `import saeembed`).
_SUBPACKAGES = ("analysis", "embedding", "labels", "report", "sae", "train", "errors", "store")

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES:
        return import_module(f"saeembed.{name}")
    raise AttributeError(f"module 'saeembed' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What tab completion offers: the public names and the subpackages, not this module's imports."""
    return sorted({*__all__, *_SUBPACKAGES})
