"""One loader per published SAE format, each mapping its files onto the canonical `SAE`.

Facts about each format are in the project's SAE_FORMATS notes; every loader reads tensors
without unpickling (safetensors, `torch.load(weights_only=True)`, `np.load(allow_pickle=False)`).
Every loader checks what it read before it builds the SAE: each config field it uses has the type and range
the format gives it, and each tensor is a floating-point tensor of finite values whose shape agrees with the
encoder's. Anything else is one SAEError of one line that names the file, the field and what to do; never a
traceback, and never an SAE that encodes NaN or empty vectors.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, cast

import torch

from saeembed.checked import Fields, read_json_object, read_safetensors, show
from saeembed.errors import SAEError
from saeembed.hashing import fingerprint
from saeembed.sae.hooks import layer_from_hook
from saeembed.sae.model import READS, SAE, Rule, SAEInfo

FORMATS = ("saelens", "sparsify", "goodfire", "gemmascope", "dictionary_learning")
_AGAIN = "download the SAE again"


def detect_format(path: Path) -> str:
    """Name the format of an SAE folder or file, or raise SAEError listing what is accepted."""
    if path.is_file():
        if path.suffix == ".npz":
            return "gemmascope"
        if path.name == "ae.pt":
            return "dictionary_learning"
        if path.suffix in (".pt", ".pth"):
            return "goodfire"
        path = path.parent
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as exc:
        raise SAEError(f"cannot list the SAE folder {path}: {_one_line(exc.strerror or exc)}; check the path "
                       f"and its permissions") from None
    if "sae_weights.safetensors" in names:
        return "saelens"
    if "sae.safetensors" in names:
        return "sparsify"
    if "params.npz" in names or "params.safetensors" in names:
        return "gemmascope"
    if "ae.pt" in names:
        return "dictionary_learning"
    if [n for n in names if n.endswith((".pth", ".pt"))]:
        return "goodfire"
    raise SAEError(
        f"{path}: no known SAE files. saeembed reads SAELens (cfg.json + sae_weights.safetensors), "
        f"sparsify (cfg.json + sae.safetensors, or layers.N/ folders), Goodfire (*.pth), Gemma Scope "
        f"(params.npz / params.safetensors) and dictionary_learning (ae.pt + config.json); pass the "
        f"folder that holds one of these")


def load_format(path: Path, fmt: str, source: str) -> SAE:
    """Load the SAE at `path` (a file or folder) written in format `fmt`."""
    loader: Callable[[Path, str], SAE] = _LOADERS[fmt]
    return loader(path, source)


# -- reading files and checking what they hold ------------------------------------------------------

def _one_line(text: object, limit: int = 200) -> str:
    """`text` on one line (every run of whitespace, line breaks included, becomes a space), cut at `limit`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _read_json(path: Path) -> Fields:
    """The JSON object in `path`, for typed reads (a missing field reads as its default)."""
    return Fields(read_json_object(path, SAEError, f"fix the file or {_AGAIN}"), path, SAEError,
                  f"Fix the field or {_AGAIN}", optional=True)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(path, SAEError, f"the file is missing, truncated or not safetensors: {_AGAIN}", "torch")


def _torch_file(path: Path) -> dict[Any, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals come as several types
        raise SAEError(f"cannot read {path} as a tensor file (only plain tensors are loaded, never "
                       f"pickled code): {_torch_reason(exc)}; {_AGAIN}") from None
    if not isinstance(state, dict):
        raise SAEError(f"{path}: expected a dict of tensors, got {type(state).__name__}; {_AGAIN}")
    return state


def _torch_reason(exc: Exception) -> str:
    """The part of a `torch.load` error that says what is wrong with the file (not torch's advice)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return f"the safe unpickler refused it ({_one_line(reason, 100)})"
    return _one_line(text.split(". ")[0], 120)


def _npz(path: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The arrays `names` of an .npz archive that it holds, as float32 tensors (others are refused)."""
    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a bad archive fails in zipfile, numpy or the OS
        raise SAEError(f"cannot read SAE weights {path} ({_one_line(exc, 120)}); {_AGAIN}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SAEError(f"{path} holds one array, not an .npz archive of named arrays; {_AGAIN}")
    tensors = {}
    with archive:
        for name in (n for n in names if n in archive.files):
            try:
                array = archive[name]
            except Exception as exc:  # noqa: BLE001 - a damaged member fails in zipfile or numpy
                raise SAEError(f"cannot read array {name} of {path} ({_one_line(exc, 120)}); {_AGAIN}") from None
            if array.dtype.kind != "f":
                raise SAEError(f"{path}: {name} has dtype {array.dtype}; SAE weights are floating point. "
                               f"The file is damaged or not an SAE: {_AGAIN}")
            tensors[name] = torch.from_numpy(array.astype(np.float32, copy=False))
    return tensors


def _finite(value: torch.Tensor, path: Path, name: str) -> torch.Tensor:
    # aminmax propagates NaN (documented) and allocates nothing: 20x faster than isfinite().all() on a 4096 x 16k
    # matrix, and no bool copy of a multi-GB SAE
    low, high = torch.aminmax(value) if value.numel() else (torch.zeros(()), torch.zeros(()))
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(value)).sum())
        raise SAEError(f"{path}: {name} holds {bad} non-finite values (NaN or inf) among {value.numel()}; the "
                       f"file is damaged or the SAE diverged in training: {_AGAIN} or pass a checkpoint from "
                       f"before it diverged")
    return value


def _weight(value: Any, path: Path, name: str) -> torch.Tensor:
    """`value` as a float32 tensor, refused unless it is a dense floating-point tensor of finite values."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
        raise SAEError(f"{path}: {name} is a {type(value).__name__}"
                       + (f" ({value.layout})" if isinstance(value, torch.Tensor) else "")
                       + f", not a dense tensor; {_AGAIN}")
    if not value.is_floating_point():
        raise SAEError(f"{path}: {name} has dtype {str(value.dtype).removeprefix('torch.')}; SAE weights are "
                       f"floating point. The file is damaged or not an SAE: {_AGAIN}")
    return _finite(value.detach().float(), path, name)


_DIMS = {"D": "d_in", "F": "d_sae", "1": "1"}


def _take(tensors: dict[Any, Any], path: Path, layout: dict[str, str]) -> list[torch.Tensor]:
    """The tensors that `layout` names, as float32, each checked by `_weight` and for its shape.

    `layout` maps a tensor's name in the file to its shape in letters: D = d_in, F = d_sae (both read off the
    first entry, the encoder matrix), 1 = one; '|' separates shapes allowed alike, '' is a scalar: a threshold
    of either [d_sae] or one broadcast value is 'F||1'.
    """
    missing = [name for name in layout if name not in tensors]
    if missing:
        raise SAEError(f"{path}: missing tensors {missing}; found {sorted(map(str, tensors))[:12]}. The file is "
                       f"not this SAE format or is damaged: {_AGAIN}")
    first, sides = next(iter(layout.items()))
    dims = {"1": 1}
    out = []
    for name, pattern in layout.items():
        value = _weight(tensors[name], path, name)
        shape = tuple(value.shape)
        if name == first:
            if len(shape) != 2 or 0 in shape:
                raise SAEError(f"{path}: {name} has shape {list(shape)}; expected a 2-D matrix "
                               f"[{', '.join(_DIMS[c] for c in sides)}] with no empty side: {_AGAIN}")
            dims.update(zip(sides, shape))
        allowed = [tuple(dims[c] for c in alternative) for alternative in pattern.split("|")]
        if shape not in allowed:
            expected = " or ".join(f"[{', '.join(map(str, a))}]" if a else "a scalar" for a in dict.fromkeys(allowed))
            named = " or ".join(f"[{', '.join(_DIMS[c] for c in a)}]" if a else "a scalar"
                                for a in pattern.split("|") if a != "1")
            raise SAEError(f"{path}: {name} has shape {list(shape)}; expected {expected} ({named}, as {first} "
                           f"{list(dims[c] for c in sides)} implies). The file is damaged or mixes two SAEs: {_AGAIN}")
        out.append(value)
    return out


def _check_dims(fields: "Fields", w_enc: torch.Tensor, weights: Path, names: dict[str, str]) -> None:
    """Refuse a config whose declared widths (`names`: field -> d_in or d_sae) disagree with the tensors,
    naming both: a cfg.json saying d_in 128 beside 64-wide weights loaded silently."""
    actual = {"d_in": int(w_enc.shape[0]), "d_sae": int(w_enc.shape[1])}
    for field, dim in names.items():
        declared = fields.whole(field, 1) if fields.has(field) else None
        if declared is not None and declared != actual[dim]:
            raise SAEError(f"{fields.path}: {fields.prefix}{field} is {declared}, but the weights in {weights.name} "
                           f"are {actual[dim]} wide ({dim}); the config and the weights are of two different SAEs: "
                           f"{_AGAIN}")


def _check_k(k: int, d_sae: int, path: Path, field: str) -> int:
    if not 1 <= k <= d_sae:
        raise SAEError(f"{path}: {field} is {k}, but a TopK SAE of {d_sae} latents keeps between 1 and {d_sae} "
                       f"per token; fix the field or {_AGAIN}")
    return k


def _layer(hook: str | None, path: Path, field: str) -> int | None:
    """The block a hook name reads, with the file and field named when it is not the residual stream."""
    if not hook:
        return None
    try:
        return layer_from_hook(hook)
    except SAEError as exc:
        raise SAEError(f"{path}: {field}: {exc}") from None


def _info(path: Path, source: str, fmt: str, arch: Rule, w_enc: torch.Tensor, files: list[Path],
          **known: Any) -> SAEInfo:
    return SAEInfo(source=source, format=fmt, architecture=arch, d_in=w_enc.shape[0],
                   d_sae=w_enc.shape[1], fingerprint=fingerprint(files), **known)


def _reads(meta: Fields) -> str:
    """What a saeembed-trained SAE encodes (`metadata.saeembed.reads`); published SAEs read tokens."""
    own = meta.section("saeembed")
    reads = own.text("reads") or "tokens"
    if reads not in READS:
        own.refuse("reads", reads, f"one of {', '.join(READS)}")
    return reads


# -- SAELens ---------------------------------------------------------------------------------------

def _load_saelens(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    cfg_path, weights = folder / "cfg.json", folder / "sae_weights.safetensors"
    cfg = _read_json(cfg_path)
    meta = cfg.section("metadata")
    hook_sources = (("metadata.hook_name", meta, "hook_name"), ("hook_name", cfg, "hook_name"),
                    ("hook_point", cfg, "hook_point"))
    hook_field, hook = next(((name, fields.text(key)) for name, fields, key in hook_sources if fields.text(key)),
                            ("hook_name", None))
    # pre-6.0 files say the activation (relu | topk) apart from the architecture (standard | gated | jumprelu)
    act_field = "activation_fn_str" if cfg.has("activation_fn_str") else "activation_fn"
    activation = cfg.text(act_field)
    architecture = cfg.text("architecture")
    arch = architecture or activation or "standard"
    if arch in ("standard", "relu"):
        if activation not in (None, "", "relu", "topk"):
            cfg.refuse(act_field, activation, "relu or topk (the activations saeembed reads)")
        arch = "topk" if activation == "topk" else "relu"
    elif arch not in ("jumprelu", "gated", "topk"):
        cfg.refuse("architecture" if architecture else act_field, arch,
                   "standard/relu, jumprelu, topk or gated (the SAELens architectures saeembed reads)")
    k = k_field = None
    if arch == "topk":
        k_field = "k" if cfg.has("k") else "activation_fn_kwargs.k"
        k = cfg.whole("k", 1) if cfg.has("k") else cfg.section("activation_fn_kwargs").whole("k", 1)
        if k is None:
            raise SAEError(f"{cfg_path}: a topk SAE needs k, the latents kept per token, and the file has none; "
                           f"add \"k\": N as the SAE was trained, or {_AGAIN}")
    rescale = arch == "topk" and cfg.flag("rescale_acts_by_decoder_norm", False)
    apply_b_dec = cfg.flag("apply_b_dec_to_input", True)
    sae_args: dict[str, Any] = {}
    norm_mode = cfg.data.get("normalize_activations")
    if norm_mode == "expected_average_only_in" or norm_mode is True:
        scale = (cfg.number("scaling_factor", low=0, low_open=True)
                 or meta.number("scaling_factor", low=0, low_open=True))
        if scale is None:
            raise SAEError(f"{cfg_path}: normalize_activations is 'expected_average_only_in' but no "
                           f"'scaling_factor' is recorded; fold it into the weights with SAELens "
                           f"(fold_activation_norm_scaling_factor) and save again")
        sae_args["input_scale"] = scale
    elif norm_mode == "layer_norm":
        sae_args["layer_norm_input"] = True
    elif norm_mode not in (None, "none", False):
        cfg.refuse("normalize_activations", norm_mode, "none, expected_average_only_in or layer_norm")
    model_name = meta.text("model_name") or cfg.text("model_name")
    expected_l0 = meta.number("l0", low=0) or cfg.number("l0", low=0)
    neuronpedia_id = meta.text("neuronpedia_id") or cfg.text("neuronpedia_id")
    # TransformerLens folds LayerNorm and centres the residual stream for GPT-2-style models; SAEs
    # trained there (e.g. gpt2-small res-jb) expect centred tokens. Llama/Gemma never are.
    tl_kwargs = (meta if meta.data.get("model_from_pretrained_kwargs") else cfg).section("model_from_pretrained_kwargs")
    center = tl_kwargs.flag("center_writing_weights", False)
    reads = _reads(meta)
    layer = _layer(hook, cfg_path, hook_field)

    tensors = _safetensors(weights)
    layout = {"W_enc": "DF", "W_dec": "FD", "b_dec": "D"}
    layout.update(dict.fromkeys(("b_gate", "r_mag", "b_mag"), "F") if arch == "gated" else {"b_enc": "F"})
    if arch == "jumprelu":
        threshold_name = next((n for n in ("threshold", "log_threshold") if n in tensors), None)
        if threshold_name is None:
            raise SAEError(f"{weights}: a jumprelu SAE needs a 'threshold' or 'log_threshold' tensor and the "
                           f"file has neither; {_AGAIN}")
        layout[threshold_name] = "F||1"
    named = dict(zip(layout, _take(tensors, weights, layout)))
    w_enc, w_dec, b_dec = named["W_enc"], named["W_dec"], named["b_dec"]
    _check_dims(cfg, w_enc, weights, {"d_in": "d_in", "d_sae": "d_sae"})
    b_enc = named.get("b_enc", torch.zeros(w_enc.shape[1]))
    if arch == "gated":
        _finite(named["r_mag"].exp(), weights, "exp(r_mag)")
        sae_args.update(b_gate=named["b_gate"], r_mag=named["r_mag"], b_mag=named["b_mag"])
    if arch == "jumprelu":
        threshold = named.get("threshold")
        sae_args["threshold"] = threshold if threshold is not None else _finite(
            named["log_threshold"].exp(), weights, "exp(log_threshold)")
    if arch == "topk":
        assert k is not None and k_field is not None  # set above for a topk SAE, which refuses a missing k
        sae_args["k"] = _check_k(k, w_enc.shape[1], cfg_path, k_field)
        if rescale:
            # Selecting on pre * ||W_dec_i|| equals a plain topk SAE with the norm folded in; a latent whose
            # decoder row is zero never wins and decodes to zero either way.
            norm = w_dec.norm(dim=-1)
            w_enc, b_enc = w_enc * norm, b_enc * norm
            w_dec = w_dec / torch.where(norm > 0, norm, torch.ones_like(norm))[:, None]
            for name, value in (("W_enc * ||W_dec||", w_enc), ("b_enc * ||W_dec||", b_enc), ("W_dec", w_dec)):
                _finite(value, weights, name)
    # arch is one of the four rules: any other value was refused above
    info = _info(folder, source, "saelens", cast(Rule, arch), w_enc, [weights, cfg_path],
                 hook_name=hook, layer=layer, model_name=model_name,
                 expected_l0=expected_l0 or (float(sae_args["k"]) if arch == "topk" else None),
                 extra={"neuronpedia_id": neuronpedia_id}, reads=reads)
    return SAE(w_enc, b_enc, w_dec, b_dec, info, apply_b_dec_to_input=apply_b_dec, center_input=center,
               **sae_args)


# -- EleutherAI sparsify ---------------------------------------------------------------------------

def _load_sparsify(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    cfg_path, weights = folder / "cfg.json", folder / "sae.safetensors"
    cfg = _read_json(cfg_path)
    if (cfg.text("activation") or "topk") != "topk":
        cfg.refuse("activation", cfg.data["activation"], "topk (saeembed reads sparsify topk SAEs)")
    if cfg.flag("skip_connection", False):
        raise SAEError(f"{cfg_path}: skip_connection is true: sparsify SAEs with a skip connection (transcoders) "
                       f"are not embeddings of the residual stream; pass a plain SAE")
    transcode = cfg.flag("transcode", False)
    k = cfg.whole("k", 1)
    if k is None:
        raise SAEError(f"{cfg_path}: a sparsify SAE needs k, the latents kept per token, and the file has none; "
                       f"add \"k\": N as the SAE was trained, or {_AGAIN}")
    tensors = _safetensors(weights)
    enc_w, enc_b, w_dec, b_dec = _take(tensors, weights, {"encoder.weight": "FD", "encoder.bias": "F",
                                                          "W_dec": "FD", "b_dec": "D"})
    hook = folder.name if re.fullmatch(r"layers\.\d+", folder.name) else None
    w_enc = enc_w.T.contiguous()
    _check_dims(cfg, w_enc, weights, {"d_in": "d_in", "num_latents": "d_sae"})
    _check_k(k, w_enc.shape[1], cfg_path, "k")
    info = _info(folder, source, "sparsify", "topk", w_enc, [weights, cfg_path],
                 hook_name=hook, layer=layer_from_hook(hook) if hook else None, expected_l0=float(k))
    return SAE(w_enc, enc_b, w_dec, b_dec, info, k=k, apply_b_dec_to_input=not transcode)


# -- Goodfire --------------------------------------------------------------------------------------

def _load_goodfire(path: Path, source: str) -> SAE:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt"))
        if len(files) != 1:
            raise SAEError(f"{path}: expected one .pth file, found {[p.name for p in files]}; pass the file")
        path = files[0]
    tensors = _torch_file(path)
    enc_w, enc_b, dec_w, dec_b = _take(tensors, path, {
        "encoder_linear.weight": "FD", "encoder_linear.bias": "F", "decoder_linear.weight": "DF",
        "decoder_linear.bias": "D"})
    w_enc, w_dec = enc_w.T.contiguous(), dec_w.T.contiguous()
    match = re.search(r"-l(\d+)\b", path.stem)
    file_layer = int(match.group(1)) if match else None
    info = _info(path, source, "goodfire", "relu", w_enc, [path],
                 hook_name=f"layers.{file_layer}" if file_layer is not None else None, layer=file_layer)
    return SAE(w_enc, enc_b, w_dec, dec_b, info, apply_b_dec_to_input=False)


# -- Gemma Scope -----------------------------------------------------------------------------------

def _load_gemmascope(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    hook = None
    if (folder / "params.npz").exists() or path.suffix == ".npz":
        weights = path if path.suffix == ".npz" else folder / "params.npz"
        names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
        tensors = _npz(weights, names)
        files = [weights]
    else:
        weights = folder / "params.safetensors"
        names = ("w_enc", "b_enc", "w_dec", "b_dec", "threshold")
        files = [weights]
        if (folder / "config.json").exists():
            hook = _read_json(folder / "config.json").text("hf_hook_point_in")
            files.append(folder / "config.json")
        tensors = _safetensors(weights)
    w_enc, b_enc, w_dec, b_dec, threshold = _take(tensors, weights, dict(zip(names, ("DF", "F", "FD", "D", "F||1"))))
    # v1 releases encode layer and L0 in the path: layer_12/width_16k/average_l0_82
    text = str(folder)
    layer_match, l0_match = re.search(r"layer_(\d+)", text), re.search(r"average_l0_(\d+)", text)
    file_layer = (_layer(hook, folder / "config.json", "hf_hook_point_in") if hook
                  else int(layer_match.group(1)) if layer_match else None)
    info = _info(folder, source, "gemmascope", "jumprelu", w_enc, files,
                 hook_name=hook or (f"layers.{file_layer}" if file_layer is not None else None),
                 layer=file_layer, expected_l0=float(l0_match.group(1)) if l0_match else None)
    return SAE(w_enc, b_enc, w_dec, b_dec, info, threshold=threshold, apply_b_dec_to_input=False)


# -- dictionary_learning ---------------------------------------------------------------------------

_DICT_CLASSES = ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder")


def _k_buffer(value: Any, path: Path) -> int:
    """The `k` buffer of a dictionary_learning TopK SAE: one whole number >= 1."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SAEError(f"{path}: k is {show(value)}; expected one whole number >= 1 (the latents kept per "
                       f"token); {_AGAIN}")
    return value


def _load_dictionary_learning(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    weights, cfg_path = folder / "ae.pt", folder / "config.json"
    trainer = _read_json(cfg_path).section("trainer")
    dict_class = trainer.text("dict_class") or "AutoEncoder"
    if dict_class not in _DICT_CLASSES:
        trainer.refuse("dict_class", dict_class, f"one of {', '.join(_DICT_CLASSES)} (the ones saeembed reads)")
    hook = trainer.text("submodule_name")
    file_layer = trainer.whole("layer", 0)
    model_name = trainer.text("lm_name")
    layer = _layer(hook, cfg_path, "trainer.submodule_name") if hook else file_layer
    tensors = _torch_file(weights)
    if "W_enc" in tensors:  # JumpReluAutoEncoder, MatryoshkaBatchTopKSAE store [D, F] directly
        layout = {"W_enc": "DF", "b_enc": "F", "W_dec": "FD", "b_dec": "D"}
    else:
        layout = {"encoder.weight": "FD", "encoder.bias": "F", "decoder.weight": "DF",
                  "b_dec" if "b_dec" in tensors else "bias": "D"}
    thresholded = dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder")
    if thresholded:
        layout["threshold"] = "F||1"
    named = dict(zip(layout, _take(tensors, weights, layout)))
    w_enc, b_enc, w_dec, b_dec = list(named.values())[:4]
    if "W_enc" not in tensors:
        w_enc, w_dec = w_enc.T.contiguous(), w_dec.T.contiguous()
    _check_dims(trainer, w_enc, weights, {"activation_dim": "d_in", "dict_size": "d_sae"})
    sae_args: dict[str, Any] = {}
    arch: Rule
    k: int | None
    if dict_class == "AutoEncoderTopK":
        if "k" in tensors:
            k, k_path, k_field = _k_buffer(tensors["k"], weights), weights, "k"
        else:
            k, k_path, k_field = trainer.whole("k", 1), cfg_path, "trainer.k"
            if k is None:
                raise SAEError(f"{cfg_path}: an AutoEncoderTopK SAE needs k, the latents kept per token, and "
                               f"neither ae.pt nor trainer.k holds it; {_AGAIN}")
        arch, sae_args["k"] = "topk", _check_k(k, w_enc.shape[1], k_path, k_field)
    elif thresholded:
        # BatchTopK dictionaries infer with a scalar threshold on relu(pre); JumpReLU with one per latent.
        arch, sae_args["threshold"] = "jumprelu", torch.clamp(named["threshold"], min=0.0)
    else:
        arch = "relu"
    info = _info(folder, source, "dictionary_learning", arch, w_enc, [weights, cfg_path],
                 hook_name=hook, layer=layer, model_name=model_name,
                 expected_l0=float(sae_args["k"]) if arch == "topk" else None)
    apply_b_dec = dict_class not in ("JumpReluAutoEncoder",)
    return SAE(w_enc, b_enc, w_dec, b_dec, info, apply_b_dec_to_input=apply_b_dec, **sae_args)


_LOADERS: dict[str, Callable[[Path, str], SAE]] = {
    "saelens": _load_saelens,
    "sparsify": _load_sparsify,
    "goodfire": _load_goodfire,
    "gemmascope": _load_gemmascope,
    "dictionary_learning": _load_dictionary_learning,
}
