"""saeembed: corpus analysis with sparse-autoencoder (SAE) embeddings.

Heavy dependencies (torch, transformers) load only when a function that needs them is called,
so importing the package and running `saeembed --help` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "embed": "saeembed.pipeline", "Embedder": "saeembed.pipeline", "EmbedConfig": "saeembed.config",
    "EmbedResult": "saeembed.pipeline",
    "load_store": "saeembed.store", "Store": "saeembed.store", "read_meta": "saeembed.store",
    "read_corpus": "saeembed.corpus", "Document": "saeembed.corpus",
    "load_sae": "saeembed.sae", "SAE": "saeembed.sae", "load_reader": "saeembed.reader",
    "check": "saeembed.selfcheck", "SaeEmbedError": "saeembed.errors",
    "open_store": "saeembed.sources", "select_concepts": "saeembed.concepts",
    "diff": "saeembed.analysis.diff", "correlations": "saeembed.analysis.correlations",
    "associations": "saeembed.analysis.associations", "search": "saeembed.analysis.search",
    "cluster": "saeembed.analysis.cluster", "fit_risk": "saeembed.analysis.risk",
    "score_risk": "saeembed.analysis.risk", "Probe": "saeembed.analysis.risk", "DiffConfig": "saeembed.analysis.config",
    "CorrelationConfig": "saeembed.analysis.config", "ClusterConfig": "saeembed.analysis.config",
    "RiskConfig": "saeembed.analysis.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'saeembed' has no attribute {name!r}")
