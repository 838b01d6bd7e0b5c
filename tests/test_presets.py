"""Presets, and the offline default bundle: MiniLM + saeembed's own SAE + its labels, no flags needed."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from commands.app import app
from saeembed import load_sae, load_store
from saeembed.errors import SaeEmbedError
from saeembed.labels import labels_for
from saeembed.presets import DEFAULT, default_bundle, presets, resolve_config

runner = CliRunner()


def test_bundled_sae_is_small_float16_topk_with_labels_and_card():
    folder = default_bundle()
    assert (folder / "sae_weights.safetensors").stat().st_size <= 12 * 2**20
    sae = load_sae(folder)
    assert (sae.info.architecture, sae.k, sae.info.layer, sae.d_in) == ("topk", 32, 3, 384)
    assert sae.d_sae >= 4096
    from safetensors import safe_open

    with safe_open(str(folder / "sae_weights.safetensors"), "pt") as fh:
        assert fh.get_tensor("W_enc").dtype == torch.float16
    card = (folder / "MODEL_CARD.md").read_text()
    assert "saeembed train-sae" in card and "halueval" in card.lower()


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
    assert listed[0]["name"] == DEFAULT and listed[0]["offline"] and len(listed) == len(presets()) == 4


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
    assert store.meta["sae"]["source"] == str(default_bundle()) and store.meta["model"]["layer"] == 3
    assert store.matrix.nnz > 0
    labels = labels_for(store)
    active = store.matrix[0].indices
    assert sum(labels.get(i) is not None for i in active) >= 0.9 * len(active)
    shown = json.loads(runner.invoke(app, ["labels", "show", str(active[0]), "--store", str(out), "--json"]).stdout)
    assert shown["label"] and shown["source"] == "offline"


def test_check_default_preset_passes():
    result = runner.invoke(app, ["check", "--preset", "default", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"] and report["fvu"] < 0.5 and report["l0"] == 32
