"""Presets, and the offline default bundle: MiniLM + saeembed's own SAE + its labels, no flags needed."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from commands.app import app
from saeembed import load_sae, load_store
from saeembed.embedding.presets import (
    DEFAULT,
    STYLE,
    STYLE_WINDOW,
    TOKENS,
    TOPICS,
    default_bundle,
    embed_config,
    presets,
    resolve_config,
    style_config,
)
from saeembed.errors import SaeEmbedError
from saeembed.labels import labels_for

runner = CliRunner()


@pytest.mark.parametrize("name, layer, reads, d_in, d_sae", [("default-sae", 5, "document", 384, 2048),
                                                             (TOKENS, 3, "tokens", 384, 4096),
                                                             (STYLE, 15, "tokens", 576, 4096)])
def test_bundled_saes_are_small_float16_topk_with_labels_and_card(name, layer, reads, d_in, d_sae):
    folder = default_bundle(name)
    assert (folder / "sae_weights.safetensors").stat().st_size <= 12 * 2**20
    sae = load_sae(folder)
    assert (sae.info.architecture, sae.k, sae.info.layer, sae.d_in, sae.info.reads) == ("topk", 32, layer, d_in, reads)
    assert sae.d_sae == d_sae
    from safetensors import safe_open

    with safe_open(str(folder / "sae_weights.safetensors"), "pt") as fh:
        assert fh.get_tensor("W_enc").dtype == torch.float16
    card = (folder / "MODEL_CARD.md").read_text()
    assert "saeembed train-sae" in card and "halueval" in card.lower()


def test_default_labels_carry_no_speaker_words_and_a_held_out_score():
    import polars as pl

    labels = pl.read_parquet(default_bundle() / "labels.parquet")
    assert len(labels) >= 0.9 * 2048
    assert labels["label"].str.contains(r"(?i)\b(assistant|human|user|system)\b").sum() <= 0.01 * len(labels)
    assert not labels["label"].str.contains(r"(?i)semst").any(), "TweetEval's stance tag is not in the training text"
    scores = labels["score"].drop_nulls()
    assert len(scores) >= 0.8 * len(labels) and 0.5 < scores.mean() <= 1


def test_resolution_rules():
    assert resolve_config(None, None, None).sae == str(default_bundle())
    explicit = resolve_config(None, "m", "s")
    assert (explicit.model, explicit.sae, explicit.layer) == ("m", "s", None), "no preset layer leaks in"
    tuned = resolve_config("llama-3.1-8b-goodfire", None, None, pooling="mean")
    assert (tuned.layer, tuned.as_chat, tuned.pooling) == (19, "assistant", "mean")
    with pytest.raises(SaeEmbedError, match="pass both --model and --sae"):
        resolve_config(None, "m", None)
    with pytest.raises(SaeEmbedError, match="unknown preset 'nope'"):
        resolve_config("nope", None, None)
    listed = json.loads(runner.invoke(app, ["presets", "--json"]).stdout)
    assert listed[0]["name"] == DEFAULT and listed[0]["offline"] and len(listed) == len(presets()) == 7


def test_the_default_reads_topics_with_minilm_and_style_with_an_llm():
    """`default` = MiniLM's document SAE (what it is about) + its style companion, SmolLM2 read in windows
    and counted per token (how it is written); `minilm-topics` is the first alone."""
    default, topics = presets()[DEFAULT], presets()[TOPICS]
    assert default.style == STYLE and topics.style is None
    assert (default.sae, default.model) == (topics.sae, topics.model)
    style = style_config(None, text_field="body", cache_dir="/x", pooling="max")
    assert (style.pooling, style.max_tokens, style.long, style.layer) == ("count", STYLE_WINDOW + 1, "chunk", 15)
    assert style.model.endswith(".gguf") and style.text_field == "body", "reader settings stay the preset's"
    assert style_config(TOPICS) is None
    assert embed_config(STYLE).sae == str(default_bundle(STYLE))


def test_embed_without_model_flags_runs_offline_and_finds_the_bundled_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in [
        "def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)",
        "The striker scored twice as the home side won the league title.",
        "Oh great, another Monday. Just what I needed."]))
    out = tmp_path / "s.parquet"
    result = runner.invoke(app, ["embed", str(corpus), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    store = load_store(out)
    assert store.meta["sae"]["source"] == str(default_bundle()) and store.meta["model"]["layer"] == 5
    assert (store.meta["pooling"], store.matrix.nnz) == ("document", 3 * 32), "32 latents per document"
    labels = labels_for(store)
    active = store.matrix[0].indices
    assert sum(labels.get(i) is not None for i in active) >= 0.9 * len(active)
    shown = json.loads(runner.invoke(app, ["labels", "show", str(out), str(active[0]), "--json"]).stdout)
    assert shown["label"] and shown["source"] == "offline"


@pytest.mark.parametrize("preset", [DEFAULT, TOKENS])
def test_check_bundled_presets_pass(preset):
    result = runner.invoke(app, ["check", "--preset", preset, "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"] and report["fvu"] < 0.5 and report["l0"] == 32
