"""Fuzz the SAE loaders and the risk probe files with damaged inputs.

Every example starts from intact files of one format, damages them one way (config fields of any JSON value,
config files of any bytes, truncated or overwritten weights, tensors of another shape or dtype, NaN and inf),
and loads. The loader must either refuse with one SaeEmbedError of the right class whose message is one line
naming a file it was given, or return a correct result: the tensors the files hold, finite, of consistent
shapes, with k in range, encoding finite codes. Damage that can never give a usable SAE or probe (truncation,
NaN, inf, integer weights, a wrong shape) must be refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saeembed.analysis.risk import Baseline, Probe
from saeembed.errors import ProbeError, SaeEmbedError, SAEError
from saeembed.sae import load_sae
from saeembed.store import load_store
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store
from tests import sae_files

D_IN, D_SAE = 8, 16
# 60 examples per test keep the file at about 2 s; SAEEMBED_FUZZ_EXAMPLES=2500 searches deeper
# (--hypothesis-show-statistics counts the examples loaded and refused).
FUZZ = settings(max_examples=int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# case -> writer of intact files; each gets (folder, d_in, d_sae) and returns (path to load, reference)
CASES = {
    "saelens-standard": lambda p: sae_files.saelens(p, D_IN, D_SAE, arch="standard"),
    "saelens-jumprelu": lambda p: sae_files.saelens(p, D_IN, D_SAE, arch="jumprelu"),
    "saelens-topk": lambda p: sae_files.saelens(p, D_IN, D_SAE, arch="topk"),
    "saelens-gated": lambda p: sae_files.saelens(p, D_IN, D_SAE, arch="gated"),
    "saelens-legacy-topk": lambda p: sae_files.saelens(p, D_IN, D_SAE, arch="topk", legacy_cfg=True),
    "sparsify": lambda p: sae_files.sparsify(p, D_IN, D_SAE),
    "goodfire": lambda p: sae_files.goodfire(p, D_IN, D_SAE),
    "gemmascope-v1": lambda p: sae_files.gemmascope(p, D_IN, D_SAE),
    "gemmascope-v2": lambda p: sae_files.gemmascope(p, D_IN, D_SAE, v2=True),
    "dictlearn-relu": lambda p: sae_files.dictionary_learning(p, D_IN, D_SAE),
    "dictlearn-topk": lambda p: sae_files.dictionary_learning(p, D_IN, D_SAE, kind="AutoEncoderTopK"),
    "dictlearn-batchtopk": lambda p: sae_files.dictionary_learning(p, D_IN, D_SAE, kind="BatchTopKSAE"),
}
# The field that sets k, where one config field alone does.
K_FIELD = {"saelens-topk": "k", "saelens-legacy-topk": "activation_fn_kwargs.k", "sparsify": "k"}
CONFIG_FIELDS = {
    "saelens": ["architecture", "activation_fn_str", "activation_fn", "activation_fn_kwargs", "activation_fn_kwargs.k",
                "k", "apply_b_dec_to_input", "normalize_activations", "scaling_factor", "rescale_acts_by_decoder_norm",
                "metadata", "metadata.hook_name", "metadata.model_name", "metadata.l0", "metadata.scaling_factor",
                "metadata.saeembed", "metadata.saeembed.reads", "metadata.model_from_pretrained_kwargs",
                "metadata.model_from_pretrained_kwargs.center_writing_weights", "metadata.neuronpedia_id",
                "hook_point", "hook_name", "model_name", "l0", "neuronpedia_id", "d_in", "d_sae", "dtype"],
    "sparsify": ["activation", "k", "skip_connection", "transcode", "num_latents", "d_in", "expansion_factor"],
    "gemmascope": ["hf_hook_point_in"],
    "dictlearn": ["trainer", "trainer.dict_class", "trainer.k", "trainer.layer", "trainer.submodule_name",
                  "trainer.lm_name", "trainer.activation_dim", "trainer.dict_size"],
}
# Fields that never change what the SAE computes: with only these changed, codes equal the publisher's.
INERT_FIELDS = {"metadata.hook_name", "metadata.model_name", "metadata.l0", "metadata.neuronpedia_id", "hook_point",
                "hook_name", "model_name", "l0", "neuronpedia_id", "d_in", "d_sae", "dtype", "num_latents",
                "expansion_factor", "hf_hook_point_in", "trainer.layer", "trainer.submodule_name", "trainer.lm_name",
                "trainer.activation_dim", "trainer.dict_size", "metadata.saeembed.reads", "unknown_field"}
# Fields that declare a width: a whole number other than the tensors' is refused (a cfg.json saying d_in 128
# beside 64-wide weights loaded silently).
DIM_FIELDS = {"d_in": "D_IN", "d_sae": "D_SAE", "num_latents": "D_SAE", "trainer.activation_dim": "D_IN",
              "trainer.dict_size": "D_SAE"}
# How each file tensor appears in the canonical SAE: (attribute, transposed)
CANONICAL = {
    "W_enc": ("W_enc", False), "b_enc": ("b_enc", False), "W_dec": ("W_dec", False), "b_dec": ("b_dec", False),
    "threshold": ("threshold", False), "b_gate": ("b_gate", False), "r_mag": ("r_mag", False),
    "b_mag": ("b_mag", False), "w_enc": ("W_enc", False), "w_dec": ("W_dec", False),
    "encoder.weight": ("W_enc", True), "encoder.bias": ("b_enc", False), "decoder.weight": ("W_dec", True),
    "bias": ("b_dec", False), "encoder_linear.weight": ("W_enc", True), "encoder_linear.bias": ("b_enc", False),
    "decoder_linear.weight": ("W_dec", True), "decoder_linear.bias": ("b_dec", False),
}
TEXTS = ["standard", "relu", "topk", "jumprelu", "gated", "tanh-relu", "none", "layer_norm", "expected_average_only_in",
         "blocks.1.hook_resid_post", "blocks.0.hook_resid_pre", "blocks.3.hook_resid_pre", "blocks.2.hook_mlp_out",
         "layers.3", "model.layers.2.output", "resid_post_layer_4", "AutoEncoder", "AutoEncoderTopK",
         "BatchTopKSAE", "JumpReluAutoEncoder", "Unknown", "tokens", "document", "eight", "8", ""]
DELETE = object()
WITH_CONFIG = sorted(c for c in CASES if c not in ("goodfire", "gemmascope-v1"))  # the others have no JSON file

json_leaf = (st.none() | st.booleans() | st.integers(-3, 20) | st.integers() | st.floats()
             | st.sampled_from(TEXTS) | st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["k", "reads", "hook_name", "x"]) | st.text(max_size=4),
                                            inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Intact files of every case, written once: case -> (root folder, path to load)."""
    base = tmp_path_factory.mktemp("intact")
    out = {}
    for case, write in CASES.items():
        root = base / case
        path, _ = write(root / "sae")
        out[case] = (root, path)
    return out


def _copy(intact: dict, case: str, into: Path) -> tuple[Path, Path, list[Path]]:
    """A fresh copy of a case's files: (path to load, root, every file)."""
    root, path = intact[case]
    shutil.copytree(root, into / case)
    files = sorted(p for p in (into / case).rglob("*") if p.is_file())
    return into / case / path.relative_to(root), into / case, files


def _refused(exc: SaeEmbedError, kind: type, files: list[Path]) -> None:
    """A refusal is of the right class, one line, and names one of the files."""
    message = str(exc)
    assert isinstance(exc, kind), f"{type(exc).__name__}: {message}"
    assert message and len(message.splitlines()) == 1 and message == message.strip(), repr(message)
    assert any(str(f) in message for f in files), f"names no file: {message}"


def _load(path: Path, files: list[Path]):
    """The SAE, or None after checking the refusal; any other exception fails the test."""
    try:
        sae = load_sae(path, layer=1)
    except SaeEmbedError as exc:
        _refused(exc, SAEError, files)
        event("refused")
        return None
    event("loaded")
    return sae


def _well_formed(sae, encode: bool = True) -> None:
    assert (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "r_mag", "b_mag"):
        value = getattr(sae, name)
        if value is not None:
            assert value.dtype == torch.float32 and bool(torch.isfinite(value).all()), name
    if sae.info.architecture == "topk":
        assert isinstance(sae.k, int) and 1 <= sae.k <= D_SAE
    assert sae.info.layer is None or (isinstance(sae.info.layer, int) and sae.info.layer >= 0)
    for text in (sae.info.hook_name, sae.info.model_name):
        assert text is None or isinstance(text, str)
    assert sae.info.expected_l0 is None or np.isfinite(sae.info.expected_l0)
    assert np.isfinite(sae.input_scale) and sae.input_scale > 0
    x = torch.randn(6, D_IN, generator=torch.Generator().manual_seed(1))
    codes = sae.encode(x)
    assert codes.shape == (6, D_SAE)
    rows, latents, values = sae.encode_sparse(x)
    dense = torch.zeros_like(codes)
    dense[rows, latents] = values
    torch.testing.assert_close(dense, codes, equal_nan=True)
    if encode and 1e-3 < sae.input_scale < 1e3:  # the intact weights are O(1): the codes must be finite
        assert bool(torch.isfinite(codes).all())


def _weights_file(files: list[Path]) -> Path:
    return next(f for f in files if f.suffix != ".json")


def _holds_the_files_tensors(sae, weights: Path) -> None:
    """Every tensor the loaded SAE took from the weights file equals the file's (transposed as the format
    says), read here without the loader."""
    tensors = sae_files.read_tensors(weights)
    for name, value in tensors.items():
        if name not in CANONICAL or not isinstance(value, torch.Tensor):
            continue
        attribute, transposed = CANONICAL[name]
        expected = value.float().T if transposed else value.float()
        if attribute == "threshold" and sae.info.format == "dictionary_learning":
            expected = expected.clamp(min=0)
        loaded = getattr(sae, attribute)
        if loaded is not None:  # None: the config names an architecture that does not use it
            assert torch.equal(loaded, expected), name


# -- SAE configs -----------------------------------------------------------------------------------

def _set(data: dict, dotted: str, value) -> dict:
    """`data` with the field at `dotted` set to `value` (or removed for DELETE), making parents objects."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return data


@FUZZ
@given(data=st.data())
def test_any_config_field_values_load_correctly_or_are_refused_in_one_line(intact, data):
    case = data.draw(st.sampled_from(WITH_CONFIG), label="case")
    family = case.split("-")[0]
    fields = data.draw(st.lists(st.sampled_from([*CONFIG_FIELDS[family], "unknown_field"]), min_size=1,
                                max_size=3, unique=True), label="fields")
    values = [data.draw(st.just(DELETE) | json_value, label=field) for field in fields]
    with tempfile.TemporaryDirectory() as tmp:
        path, root, files = _copy(intact, case, Path(tmp))
        config = next(f for f in files if f.suffix == ".json")
        cfg = json.loads(config.read_text())
        for field, value in zip(fields, values):
            _set(cfg, field, value)
        config.write_text(json.dumps(cfg))
        sae = _load(path, files)
        k_field = K_FIELD.get(case)
        if fields == [k_field]:  # k alone decides: a whole number in 1..d_sae loads as it is, anything else is refused
            value = values[0]
            whole = (not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer()
                     and 1 <= value <= D_SAE)
            assert (sae is not None) == whole, f"k = {value!r}"
            if sae is not None:
                assert sae.k == int(value)
        for field, value in zip(fields, values):
            wrong_width = (field in DIM_FIELDS and not isinstance(value, bool) and isinstance(value, (int, float))
                           and float(value).is_integer() and value != globals()[DIM_FIELDS[field]])
            assert not (wrong_width and sae is not None), f"{field} = {value!r} disagrees with the tensors"
        if sae is None:
            return
        _well_formed(sae)
        if "rescale_acts_by_decoder_norm" not in fields:
            _holds_the_files_tensors(sae, _weights_file(files))
        if set(fields) <= INERT_FIELDS:
            _, reference = CASES[case](Path(tmp) / "reference")
            x = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(2))
            torch.testing.assert_close(sae.encode(x), reference(x), atol=1e-4, rtol=1e-4)


@FUZZ
@given(data=st.data())
def test_any_config_file_content_loads_or_is_refused_naming_the_file(intact, data):
    case = data.draw(st.sampled_from(WITH_CONFIG), label="case")
    odd = [b"", b"\xff\xfe{}", b"[1, 2]", b"{", b"{\"k\": 8", b"null", b"\xef\xbb\xbf{}"]
    content = data.draw(st.binary(max_size=40) | json_value.map(lambda v: json.dumps(v).encode())
                        | st.sampled_from(odd), label="content")
    with tempfile.TemporaryDirectory() as tmp:
        path, _, files = _copy(intact, case, Path(tmp))
        config = next(f for f in files if f.suffix == ".json")
        config.write_bytes(content)
        sae = _load(path, files)
        if sae is None:
            return
        assert isinstance(json.loads(content.decode("utf-8-sig")), dict), "only a JSON object can be a config"
        _well_formed(sae)
        _holds_the_files_tensors(sae, _weights_file(files))


# -- SAE weights -----------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_truncated_or_overwritten_weight_files_are_refused_or_read_faithfully(intact, data):
    case = data.draw(st.sampled_from(sorted(CASES)), label="case")
    with tempfile.TemporaryDirectory() as tmp:
        path, _, files = _copy(intact, case, Path(tmp))
        weights = _weights_file(files)
        raw = weights.read_bytes()
        truncate = data.draw(st.booleans(), label="truncate")
        if truncate:
            weights.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")])
        else:
            at = data.draw(st.integers(0, len(raw) - 1), label="at")
            patch = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
            weights.write_bytes(raw[:at] + patch + raw[at + len(patch):])
        sae = _load(path, files)
        if truncate:
            assert sae is None, "a truncated weights file must be refused"
            return
        if sae is None:
            return
        _well_formed(sae, encode=False)  # overwritten bytes may hold huge finite weights
        _holds_the_files_tensors(sae, weights)


DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool, torch.uint8]


@FUZZ
@given(data=st.data())
def test_tensors_of_any_shape_dtype_or_value_are_refused_unless_usable(intact, data):
    case = data.draw(st.sampled_from(sorted(CASES)), label="case")
    with tempfile.TemporaryDirectory() as tmp:
        path, _, files = _copy(intact, case, Path(tmp))
        weights = _weights_file(files)
        tensors = sae_files.read_tensors(weights)
        name = data.draw(st.sampled_from(sorted(n for n, v in tensors.items() if v.is_floating_point())), label="name")
        original = tensors[name]
        damage = data.draw(st.sampled_from(["shape", "dtype", "nonfinite", "delete", "rename"]), label="damage")
        if damage == "shape":
            shape = tuple(data.draw(st.lists(st.integers(0, D_SAE + 2), max_size=3), label="shape"))
            tensors[name] = torch.randn(shape) * 0.1
        elif damage == "dtype":
            dtypes = [d for d in DTYPES if d != torch.bfloat16] if weights.suffix == ".npz" else DTYPES
            tensors[name] = original.to(data.draw(st.sampled_from(dtypes), label="dtype"))
        elif damage == "nonfinite":
            bad = original.clone().reshape(-1)
            bad[data.draw(st.integers(0, bad.numel() - 1), label="at")] = data.draw(
                st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="value")
            tensors[name] = bad.reshape(original.shape)
        else:
            value = tensors.pop(name)
            if damage == "rename":
                tensors[name + "_x"] = value
        sae_files.write_tensors(weights, tensors)
        sae = _load(path, files)
        shape_allowed = damage == "shape" and (tuple(original.shape) == shape
                                               or (name == "threshold" and shape in ((), (1,), (D_SAE,))))
        # a threshold may be one for all latents or one per latent, whichever the file had
        if damage in ("nonfinite", "delete", "rename") or (damage == "shape" and not shape_allowed):
            assert sae is None, f"{damage} of {name} must be refused"
        if damage == "dtype" and not tensors[name].is_floating_point():
            assert sae is None, f"{name} as {tensors[name].dtype} must be refused"
        if sae is None:
            return
        _well_formed(sae)
        _holds_the_files_tensors(sae, weights)


# -- risk probes and baselines ---------------------------------------------------------------------

N_DOCS = 24


@pytest.fixture(scope="module")
def probe_files(tmp_path_factory):
    """A small store with concept counts, and intact probe and baseline folders fitted (by hand) on it."""
    base = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    vectors = vectors_from_columns(N_DOCS, random_columns(N_DOCS, np.full(D_SAE, 0.3), rng), rng)
    mean = rng.normal(20, 2, N_DOCS)
    vectors.concept_counts = np.column_stack([mean, mean + 10, mean - 5, mean, mean + 5]).astype(np.float32)
    write_store(base / "s.parquet", vectors, meta=fake_meta(D_SAE))
    store = load_store(base / "s.parquet")
    identity = {key: store.meta.get(key) for key in ("model", "sae", "pooling", "pool_roles")}
    probe = Probe("l1", np.array([3, 7, 11]), rng.normal(0, 1, 3 + 6), -0.2, rng.normal(20, 1, 6),
                  rng.uniform(0.5, 2, 6), (1.0, 0.0), {"store": identity, "label": "hallucinated", "positive": None})
    probe.save(base / "probe")
    Baseline.fit(store).save(base / "baseline")
    return store, base / "probe", base / "baseline"


def _scored(probe: Probe, store) -> None:
    """A loaded probe scores every document with a risk in [0, 1], or refuses the store in one line."""
    try:
        risk = probe.predict(store)
    except SaeEmbedError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert risk.shape == (N_DOCS,) and np.isfinite(risk).all() and ((risk >= 0) & (risk <= 1)).all()


def _load_probe(folder: Path, files: list[Path]):
    try:
        probe = Probe.load(folder)
    except SaeEmbedError as exc:
        _refused(exc, ProbeError, files)
        event("refused")
        return None
    event("loaded")
    return probe


PROBE_FIELDS = ["kind", "intercept", "link", "meta", "meta.store", "meta.store.sae", "meta.store.sae.d_sae",
                "meta.store.model.id", "meta.label", "unknown_field"]


@FUZZ
@given(data=st.data())
def test_any_probe_json_loads_a_probe_that_scores_or_is_refused(probe_files, data):
    store, intact_probe, _ = probe_files
    how = data.draw(st.sampled_from(["fields", "bytes"]), label="how")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(intact_probe, Path(tmp) / "probe"))
        files = [folder / "probe.json", folder / "probe.safetensors"]
        if how == "fields":
            head = json.loads(files[0].read_text())
            for field in data.draw(st.lists(st.sampled_from(PROBE_FIELDS), min_size=1, max_size=3, unique=True)):
                _set(head, field, data.draw(st.just(DELETE) | json_value | st.floats(-5, 5), label=field))
            files[0].write_text(json.dumps(head))
        else:
            files[0].write_bytes(data.draw(st.binary(max_size=40) | st.sampled_from([b"", b"[]", b"{", b"\xff"])))
        probe = _load_probe(folder, files)
        if probe is None:
            return
        assert probe.kind in ("l1", "pls") and np.isfinite(probe.intercept) and np.isfinite(probe.link).all()
        _scored(probe, store)


@FUZZ
@given(data=st.data())
def test_any_probe_weights_file_loads_a_probe_that_scores_or_is_refused(probe_files, data):
    from safetensors.numpy import load_file, save_file

    store, intact_probe, _ = probe_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(intact_probe, Path(tmp) / "probe"))
        files = [folder / "probe.json", folder / "probe.safetensors"]
        weights = files[1]
        arrays = load_file(str(weights))
        damage = data.draw(st.sampled_from(["truncate", "bytes", "shape", "dtype", "nonfinite", "value", "delete"]))
        name = data.draw(st.sampled_from(sorted(arrays)), label="name")
        before = arrays[name]
        if damage == "truncate":
            raw = weights.read_bytes()
            weights.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")])
        elif damage == "bytes":
            raw = weights.read_bytes()
            at = data.draw(st.integers(0, len(raw) - 1), label="at")
            patch = data.draw(st.binary(min_size=1, max_size=16), label="patch")
            weights.write_bytes(raw[:at] + patch + raw[at + len(patch):])
        else:
            if damage == "shape":
                shape = tuple(data.draw(st.lists(st.integers(0, 12), max_size=2), label="shape"))
                arrays[name] = np.ones(shape, arrays[name].dtype)
            elif damage == "dtype":
                arrays[name] = arrays[name].astype(data.draw(st.sampled_from(
                    [np.float16, np.float64, np.int32, np.int64, np.uint8, np.bool_]), label="dtype"))
            elif damage in ("nonfinite", "value"):
                array = arrays[name].astype(np.float64 if damage == "nonfinite" else arrays[name].dtype)
                at = data.draw(st.integers(0, len(array) - 1), label="at")
                array[at] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]) if damage == "nonfinite" else
                                      st.integers(-3, D_SAE + 3) if array.dtype.kind in "iu" else st.floats(-1e3, 1e3))
                arrays[name] = array
            else:
                del arrays[name]
            save_file(arrays, str(weights))
        probe = _load_probe(folder, files)
        if damage in ("truncate", "nonfinite", "delete") or (damage == "shape" and shape != before.shape):
            assert probe is None, f"{damage} of {name} must be refused"
        if damage == "dtype" and arrays[name].dtype.kind != before.dtype.kind and not (
                name == "latents" and arrays[name].dtype.kind in "iu"):
            assert probe is None, f"{name} as {arrays[name].dtype} must be refused"
        if damage == "value" and name == "latents" and not 0 <= array[at] < D_SAE:
            assert probe is None, f"latent {array[at]} is outside the SAE's {D_SAE}"
        if probe is None:
            return
        stored = load_file(str(weights))
        for field in ("latents", "weights", "count_mean", "count_std"):
            assert np.array_equal(getattr(probe, field), stored[field].astype(getattr(probe, field).dtype))
        _scored(probe, store)


@FUZZ
@given(data=st.data())
def test_any_baseline_json_loads_a_baseline_that_scores_or_is_refused(probe_files, data):
    store, _, intact_baseline = probe_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(intact_baseline, Path(tmp) / "baseline"))
        path = folder / "baseline.json"
        head = json.loads(path.read_text())
        if data.draw(st.booleans(), label="whole file"):
            path.write_bytes(data.draw(st.binary(max_size=30) | json_value.map(lambda v: json.dumps(v).encode())))
        else:
            for field in data.draw(st.lists(st.sampled_from(["names", "mean", "std", "meta", "meta.store", "x"]),
                                            min_size=1, max_size=2, unique=True)):
                value = data.draw(st.just(DELETE) | json_value
                                  | st.lists(st.floats(), min_size=6, max_size=6), label=field)
                _set(head, field, value)
            path.write_text(json.dumps(head))
        try:
            baseline = Baseline.load(folder)
        except SaeEmbedError as exc:
            _refused(exc, ProbeError, [path])
            return
        try:
            z = baseline.zscores(store)
        except SaeEmbedError as exc:
            assert len(str(exc).splitlines()) == 1
            return
        assert z.shape == (N_DOCS, 7) and np.isfinite(z.to_numpy()).all()
