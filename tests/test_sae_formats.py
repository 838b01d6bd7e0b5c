"""Every published SAE format and architecture loads into the canonical SAE and encodes like its source."""

from __future__ import annotations

import pickle

import pytest
import torch

from saeembed.errors import SAEError
from saeembed.sae import layer_from_hook, load_sae
from tests import sae_files

D_IN = 24

CASES = {
    "saelens-standard": lambda p: sae_files.saelens(p, D_IN, arch="standard"),
    "saelens-jumprelu": lambda p: sae_files.saelens(p, D_IN, arch="jumprelu"),
    "saelens-topk": lambda p: sae_files.saelens(p, D_IN, arch="topk"),
    "saelens-gated": lambda p: sae_files.saelens(p, D_IN, arch="gated"),
    "saelens-legacy-topk": lambda p: sae_files.saelens(p, D_IN, arch="topk", legacy_cfg=True),
    "saelens-legacy-relu": lambda p: sae_files.saelens(p, D_IN, arch="standard", legacy_cfg=True),
    "sparsify": lambda p: sae_files.sparsify(p, D_IN),
    "goodfire": lambda p: sae_files.goodfire(p, D_IN),
    "gemmascope-v1": lambda p: sae_files.gemmascope(p, D_IN),
    "gemmascope-v2": lambda p: sae_files.gemmascope(p, D_IN, v2=True),
    "dictlearn-relu": lambda p: sae_files.dictionary_learning(p, D_IN),
    "dictlearn-topk": lambda p: sae_files.dictionary_learning(p, D_IN, kind="AutoEncoderTopK"),
    "dictlearn-batchtopk": lambda p: sae_files.dictionary_learning(p, D_IN, kind="BatchTopKSAE"),
}
FORMAT_OF = {"saelens": "saelens", "sparsify": "sparsify", "goodfire": "goodfire", "gemmascope": "gemmascope",
             "dictlearn": "dictionary_learning"}


@pytest.mark.parametrize("case", CASES)
def test_encode_matches_the_publishers_definition(case, tmp_path):
    path, reference = CASES[case](tmp_path / "sae")
    sae = load_sae(path, layer=1)
    assert sae.info.format == FORMAT_OF[case.split("-")[0]]
    assert (sae.d_in, sae.d_sae) == (D_IN, 96)
    assert sae.info.layer == 1, "every writer records layer 1 in its own convention"
    x = torch.randn(50, D_IN) * 2
    expected = reference(x)
    assert (expected > 0).float().mean() > 0.02, "the test weights must make latents fire"
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-4, rtol=1e-4)
    rows, latents, values = sae.encode_sparse(x)
    dense = torch.zeros_like(expected)
    dense[rows, latents] = values
    torch.testing.assert_close(dense, expected, atol=1e-4, rtol=1e-4)


def test_topk_rescaled_by_decoder_norm_selects_on_scaled_preactivations(tmp_path):
    import json

    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, arch="topk", k=4)
    cfg = json.loads((path / "cfg.json").read_text())
    (path / "cfg.json").write_text(json.dumps({**cfg, "rescale_acts_by_decoder_norm": True}))
    from safetensors.torch import load_file

    w = load_file(str(path / "sae_weights.safetensors"))
    x = torch.randn(20, D_IN)
    norm = w["W_dec"].norm(dim=-1)
    pre = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * norm
    values, idx = pre.topk(4, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    sae = load_sae(path)
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-4, rtol=1e-4)
    # the reconstruction is unchanged by folding the norm into the weights
    torch.testing.assert_close(sae.decode(sae.encode(x)), (expected / norm) @ w["W_dec"] + w["b_dec"],
                               atol=1e-4, rtol=1e-4)


def test_sparsify_multi_hookpoint_folder_needs_a_layer(tmp_path):
    root, _ = sae_files.sparsify(tmp_path / "ckpt", D_IN, layer=2)
    with pytest.raises(SAEError, match="several hookpoints|pass --layer"):
        load_sae(root)
    with pytest.raises(SAEError, match="no SAE for layer 5; it has layers.2"):
        load_sae(root, layer=5)
    assert load_sae(root, layer=2).info.layer == 2


def test_hub_id_resolves_through_the_hub_client_offline(tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub's real snapshot resolution (here from a local cache)."""
    commit = "0" * 40
    snapshot = tmp_path / "hub" / "models--someorg--tiny-saes" / "snapshots" / commit
    sae_files.saelens(snapshot / "blocks.1.hook_resid_post", D_IN, arch="topk")
    (tmp_path / "hub" / "models--someorg--tiny-saes" / "refs").mkdir(parents=True)
    (tmp_path / "hub" / "models--someorg--tiny-saes" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    try:
        sae = load_sae("someorg/tiny-saes/blocks.1.hook_resid_post")
        assert sae.info.architecture == "topk" and sae.info.source == "someorg/tiny-saes/blocks.1.hook_resid_post"
        with pytest.raises(SAEError, match="cannot fetch SAE 'someorg/missing'"):
            load_sae("someorg/missing")
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)


def test_pickled_code_is_never_loaded(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil-l1.pth"
    path.write_bytes(pickle.dumps({"encoder_linear.weight": Payload()}))
    with pytest.raises(SAEError, match="only plain tensors are loaded"):
        load_sae(path)


def test_unknown_files_are_refused_with_the_formats_listed(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(SAEError, match="no known SAE files.*SAELens.*sparsify.*Goodfire.*Gemma Scope"):
        load_sae(tmp_path)
    with pytest.raises(SAEError, match="neither a local file/folder nor a hub id"):
        load_sae("definitely not a path")


@pytest.mark.parametrize("hook,layer", [
    ("blocks.7.hook_resid_post", 7), ("blocks.8.hook_resid_pre", 7), ("layers.19", 19),
    ("model.layers.12.output", 12), ("resid_post_layer_3", 3),
])
def test_hook_names_map_to_the_block_they_read(hook, layer):
    assert layer_from_hook(hook) == layer


@pytest.mark.parametrize("hook", ["blocks.3.hook_mlp_out", "blocks.0.hook_resid_pre", "blocks.2.attn.hook_z"])
def test_non_residual_hooks_are_refused(hook):
    with pytest.raises(SAEError, match="residual stream"):
        layer_from_hook(hook)
