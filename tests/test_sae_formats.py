"""Every published SAE format and architecture loads into the canonical SAE and encodes like its source."""

from __future__ import annotations

import pickle
import re

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
    with pytest.raises(SAEError, match="several hookpoints|set layer"):
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


# -- broken files: one SAEError of one line naming the file and the field, before any model loads ------------

D_SAE = 16


def _refusal(path, *, layer=None) -> str:
    with pytest.raises(SAEError) as caught:
        load_sae(path, layer=layer)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def _nan_at_0(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def test_nan_weights_are_refused_naming_the_file_and_tensor(tmp_path):
    """NaN weights used to load and embed every document as an empty vector."""
    path, _ = sae_files.saelens(tmp_path / "a", D_IN, D_SAE, arch="topk")
    sae_files.edit_tensors(path / "sae_weights.safetensors", W_enc=_nan_at_0(torch.randn(D_IN, D_SAE)))
    message = _refusal(path)
    assert f"{path / 'sae_weights.safetensors'}: W_enc holds 1 non-finite values" in message
    assert "download the SAE again" in message

    goodfire, _ = sae_files.goodfire(tmp_path / "b", D_IN, D_SAE)
    sae_files.edit_tensors(goodfire, **{"decoder_linear.bias": torch.full((D_IN,), float("nan"))})
    assert f"{goodfire}: decoder_linear.bias holds {D_IN} non-finite" in _refusal(goodfire)

    gemma, _ = sae_files.gemmascope(tmp_path / "c", D_IN, D_SAE)
    sae_files.edit_tensors(gemma / "params.npz", threshold=torch.full((D_SAE,), float("nan")))
    assert f"{gemma / 'params.npz'}: threshold holds {D_SAE} non-finite" in _refusal(gemma)


def test_an_inf_bias_is_refused(tmp_path):
    """An inf bias used to load and store inf values."""
    root, _ = sae_files.sparsify(tmp_path / "s", D_IN, D_SAE)
    weights = root / "layers.1" / "sae.safetensors"
    sae_files.edit_tensors(weights, **{"encoder.bias": torch.full((D_SAE,), float("inf"))})
    assert f"{weights}: encoder.bias holds {D_SAE} non-finite values (NaN or inf)" in _refusal(root, layer=1)


@pytest.mark.parametrize("name,shape,expected", [
    ("W_dec", (D_SAE, D_IN + 1), f"W_dec has shape [{D_SAE}, {D_IN + 1}]; expected [{D_SAE}, {D_IN}] ([d_sae, d_in]"),
    ("W_dec", (D_IN, D_SAE), f"W_dec has shape [{D_IN}, {D_SAE}]; expected [{D_SAE}, {D_IN}]"),
    ("b_dec", (D_IN + 3,), f"b_dec has shape [{D_IN + 3}]; expected [{D_IN}] ([d_in]"),
    ("b_enc", (D_SAE, 1), f"b_enc has shape [{D_SAE}, 1]; expected [{D_SAE}] ([d_sae]"),
    ("threshold", (2,), f"threshold has shape [2]; expected [{D_SAE}] or a scalar or [1]"),
    ("W_enc", (D_IN,), f"W_enc has shape [{D_IN}]; expected a 2-D matrix [d_in, d_sae]"),
])
def test_tensors_of_the_wrong_shape_are_refused_at_load(tmp_path, name, shape, expected):
    """A W_dec or b_dec of the wrong shape used to fail with a traceback, some only after the model loaded."""
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="jumprelu")
    sae_files.edit_tensors(path / "sae_weights.safetensors", **{name: torch.zeros(shape)})
    message = _refusal(path)
    assert message.startswith(f"{path / 'sae_weights.safetensors'}: {expected}"), message


def test_integer_weights_are_refused(tmp_path):
    path, _ = sae_files.dictionary_learning(tmp_path / "sae", D_IN, D_SAE)
    sae_files.edit_tensors(path / "ae.pt", **{"encoder.weight": torch.ones(D_SAE, D_IN, dtype=torch.int64)})
    assert f"{path / 'ae.pt'}: encoder.weight has dtype int64; SAE weights are floating point" in _refusal(path)


@pytest.mark.parametrize("k,expected", [
    (sae_files.DROP, "a topk SAE needs k, the latents kept per token, and the file has none"),
    ("eight", "k is 'eight'; expected a whole number >= 1"),
    (0, "k is 0; expected a whole number >= 1"),
    (-2, "k is -2; expected a whole number >= 1"),
    (8.5, "k is 8.5; expected a whole number >= 1"),
    (True, "k is True; expected a whole number >= 1"),
    (D_SAE + 1, f"k is {D_SAE + 1}, but a TopK SAE of {D_SAE} latents keeps between 1 and {D_SAE} per token"),
])
def test_a_topk_k_that_is_missing_not_a_number_or_out_of_range_is_refused(tmp_path, k, expected):
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="topk")
    sae_files.edit_json(path / "cfg.json", k=k)
    message = _refusal(path)
    assert message.startswith(f"{path / 'cfg.json'}: {expected}"), message


def test_k_in_range_loads_including_the_edges(tmp_path):
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="topk")
    for k in (1, D_SAE, 4.0):
        sae_files.edit_json(path / "cfg.json", k=k)
        assert load_sae(path).k == int(k)


def test_k_of_other_formats_is_checked_too(tmp_path):
    root, _ = sae_files.sparsify(tmp_path / "s", D_IN, D_SAE)
    sae_files.edit_json(root / "layers.1" / "cfg.json", k="8")
    assert f"{root / 'layers.1' / 'cfg.json'}: k is '8'; expected a whole number" in _refusal(root, layer=1)
    legacy, _ = sae_files.saelens(tmp_path / "l", D_IN, D_SAE, arch="topk", legacy_cfg=True)
    sae_files.edit_json(legacy / "cfg.json", activation_fn_kwargs={"k": 99})
    assert f"{legacy / 'cfg.json'}: activation_fn_kwargs.k is 99, but a TopK SAE" in _refusal(legacy)
    dl, _ = sae_files.dictionary_learning(tmp_path / "d", D_IN, D_SAE, kind="AutoEncoderTopK")
    sae_files.edit_tensors(dl / "ae.pt", k=torch.tensor(0))
    assert f"{dl / 'ae.pt'}: k is 0; expected one whole number >= 1" in _refusal(dl)
    sae_files.edit_tensors(dl / "ae.pt", k=None)
    sae_files.edit_json(dl / "config.json", trainer={"dict_class": "AutoEncoderTopK"})
    assert "an AutoEncoderTopK SAE needs k" in _refusal(dl)


@pytest.mark.parametrize("content,expected", [
    (b"[1, 2]", "cfg.json holds a JSON list, not an object"),
    (b'"topk"', "cfg.json holds a JSON string, not an object"),
    (b"{architecture: topk}", "cfg.json is not valid JSON (Expecting property name enclosed in double quotes at "
                              "line 1, column 2)"),
    (b"", "cfg.json is not valid JSON (Expecting value at line 1, column 1)"),
    (b'{"k": "\xff"}', "cfg.json is not UTF-8 text, so not JSON"),
])
def test_a_cfg_json_that_is_not_a_json_object_is_refused(tmp_path, content, expected):
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="topk")
    (path / "cfg.json").write_bytes(content)
    assert _refusal(path).startswith(f"{path}/{expected}")


@pytest.mark.parametrize("field,value,expected", [
    ("metadata", [1], "metadata is [1]; expected a JSON object"),
    ("apply_b_dec_to_input", "false", "apply_b_dec_to_input is 'false'; expected true or false"),
    ("architecture", "tanh-relu", "architecture is 'tanh-relu'; expected standard/relu, jumprelu, topk or gated"),
    ("activation_fn_str", "tanh-relu", "activation_fn_str is 'tanh-relu'; expected relu or topk"),
    ("normalize_activations", "constant_norm_rescale", "normalize_activations is 'constant_norm_rescale'"),
    ("metadata", {"model_name": 7}, "metadata.model_name is 7; expected a string"),
    ("l0", float("nan"), "l0 is nan; expected a finite number >= 0"),
    ("metadata", {"hook_name": "blocks.1.hook_mlp_out"}, "metadata.hook_name: the SAE was trained on hook "
                                                         "'blocks.1.hook_mlp_out'"),
])
def test_saelens_cfg_fields_of_the_wrong_type_or_value_are_refused(tmp_path, field, value, expected):
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="standard")
    sae_files.edit_json(path / "cfg.json", **{field: value})
    message = _refusal(path)
    assert message.startswith(f"{path / 'cfg.json'}: {expected}"), message


def test_truncated_or_garbage_weight_files_are_refused(tmp_path):
    path, _ = sae_files.saelens(tmp_path / "a", D_IN, D_SAE)
    weights = path / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert _refusal(path).startswith(f"cannot read {weights} (")
    goodfire, _ = sae_files.goodfire(tmp_path / "b", D_IN, D_SAE)
    goodfire.write_bytes(goodfire.read_bytes()[:200])
    assert f"cannot read {goodfire} as a tensor file" in _refusal(goodfire)
    gemma, _ = sae_files.gemmascope(tmp_path / "c", D_IN, D_SAE)
    (gemma / "params.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert f"cannot read SAE weights {gemma / 'params.npz'}" in _refusal(gemma)


def test_standard_architecture_with_a_topk_activation_is_topk(tmp_path):
    """SAELens 5 wrote TopK SAEs as architecture 'standard' + activation_fn_str 'topk'; they loaded as relu."""
    path, reference = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="topk", k=3)
    sae_files.edit_json(path / "cfg.json", architecture="standard", activation_fn_str="topk",
                        activation_fn_kwargs={"k": 3}, k=sae_files.DROP)
    sae = load_sae(path)
    assert sae.info.architecture == "topk" and sae.k == 3
    x = torch.randn(10, D_IN)
    torch.testing.assert_close(sae.encode(x), reference(x), atol=1e-4, rtol=1e-4)


def test_rescaling_by_decoder_norm_keeps_a_zero_decoder_row_finite(tmp_path):
    path, _ = sae_files.saelens(tmp_path / "sae", D_IN, D_SAE, arch="topk", k=4)
    sae_files.edit_json(path / "cfg.json", rescale_acts_by_decoder_norm=True)
    w_dec = sae_files.read_tensors(path / "sae_weights.safetensors")["W_dec"].clone()
    w_dec[5] = 0
    sae_files.edit_tensors(path / "sae_weights.safetensors", W_dec=w_dec)
    sae = load_sae(path)
    assert all(bool(torch.isfinite(t).all()) for t in (sae.W_enc, sae.b_enc, sae.W_dec))
    codes = sae.encode(torch.randn(30, D_IN))
    assert bool(torch.isfinite(codes).all()) and not codes[:, 5].any(), "a latent with no decoder never wins"


def test_store_metadata_never_sends_an_analysis_to_the_hub(monkeypatch):
    """diff and correlations find the SAE's decoder through the store's metadata, which anyone can edit:
    a hub id there is looked up in the local hub cache only; `..` never leaves the snapshot folder."""
    import huggingface_hub

    from saeembed.analysis.correlations import decoder_directions

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the local cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    decoder, why = decoder_directions({"sae": {"source": "someone/evil-sae/layer_1", "layer": 1}})
    assert decoder is None and "not available here" in why
    assert calls == [("someone/evil-sae", {"revision": None, "allow_patterns": ["layer_1/*", "layer_1/**"],
                                            "local_files_only": True})]
    for spec in ("org/repo/../../etc", "org/../x", "org/repo//x", "./repo"):
        with pytest.raises(SAEError, match="not a hub id|neither a local"):
            load_sae(spec)
    assert len(calls) == 1, "refused before any look-up"


@pytest.mark.parametrize("writer, field, value, says", [
    ("saelens", "d_in", 128, "d_in is 128, but the weights in sae_weights.safetensors are 64 wide (d_in)"),
    ("saelens", "d_sae", 50, "d_sae is 50, but the weights in sae_weights.safetensors are 96 wide (d_sae)"),
    ("sparsify", "num_latents", 50, "num_latents is 50, but the weights in sae.safetensors are 96 wide"),
])
def test_a_config_that_disagrees_with_its_tensors_is_refused_naming_both(tmp_path, writer, field, value, says):
    path, _ = getattr(sae_files, writer)(tmp_path / "sae", 64)
    config = next(p for p in ([path] if path.is_dir() else [path.parent]) for p in p.rglob("cfg.json"))
    sae_files.edit_json(config, **{field: value})
    with pytest.raises(SAEError, match=re.escape(says)):
        load_sae(path, layer=1)
