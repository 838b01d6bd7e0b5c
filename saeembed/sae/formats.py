"""One loader per published SAE format, each mapping its files onto the canonical `SAE`.

Facts about each format are in the project's SAE_FORMATS notes; every loader reads tensors
without unpickling (safetensors, `torch.load(weights_only=True)`, `np.load(allow_pickle=False)`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import torch

from saeembed.errors import SAEError
from saeembed.hashing import fingerprint
from saeembed.sae.hooks import layer_from_hook
from saeembed.sae.model import READS, SAE, SAEInfo

FORMATS = ("saelens", "sparsify", "goodfire", "gemmascope", "dictionary_learning")


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
    names = {p.name for p in path.iterdir()}
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SAEError(f"cannot read SAE config {path}: {exc}") from None


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise SAEError(f"cannot read SAE weights {path}: {exc}") from None


def _torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals come as several types
        raise SAEError(f"cannot read {path} as a tensor file (only plain tensors are loaded, never "
                       f"pickled code): {exc}") from None
    if not isinstance(state, dict):
        raise SAEError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def _need(tensors: dict[str, torch.Tensor], path: Path, *keys: str) -> list[torch.Tensor]:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise SAEError(f"{path}: missing tensors {missing}; found {sorted(tensors)[:12]}")
    return [tensors[k].float() for k in keys]


def _info(path: Path, source: str, fmt: str, arch: str, w_enc: torch.Tensor, files: list[Path],
          **known: Any) -> SAEInfo:
    return SAEInfo(source=source, format=fmt, architecture=arch, d_in=w_enc.shape[0],
                   d_sae=w_enc.shape[1], fingerprint=fingerprint(files), **known)


def _reads(meta: dict[str, Any], folder: Path) -> str:
    """What a saeembed-trained SAE encodes (`metadata.saeembed.reads`); published SAEs read tokens."""
    own = meta.get("saeembed") if isinstance(meta.get("saeembed"), dict) else {}
    reads = own.get("reads", "tokens")
    if reads not in READS:
        raise SAEError(f"{folder}/cfg.json: metadata.saeembed.reads is {reads!r}; expected one of "
                       f"{', '.join(READS)}")
    return reads


# -- SAELens ---------------------------------------------------------------------------------------

def _load_saelens(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    cfg = _read_json(folder / "cfg.json")
    weights = folder / "sae_weights.safetensors"
    tensors = _safetensors(weights)
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    arch = cfg.get("architecture") or cfg.get("activation_fn_str") or cfg.get("activation_fn") or "standard"
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k") or kwargs.get("k")
    if arch == "topk" or (arch in ("relu", "standard") and k and cfg.get("activation_fn") == "topk"):
        arch = "topk"
    elif arch in ("standard", "relu"):
        arch = "relu"
    elif arch not in ("jumprelu", "gated"):
        raise SAEError(f"{folder}/cfg.json: architecture {arch!r} is not supported; saeembed reads "
                       f"standard/relu, jumprelu, topk and gated SAELens SAEs")
    w_enc, w_dec, b_dec = _need(tensors, weights, "W_enc", "W_dec", "b_dec")
    sae_args: dict[str, Any] = {}
    if arch == "gated":
        b_gate, r_mag, b_mag = _need(tensors, weights, "b_gate", "r_mag", "b_mag")
        b_enc = torch.zeros(w_enc.shape[1])
        sae_args.update(b_gate=b_gate, r_mag=r_mag, b_mag=b_mag)
    else:
        (b_enc,) = _need(tensors, weights, "b_enc")
    if arch == "jumprelu":
        if "threshold" in tensors:
            sae_args["threshold"] = tensors["threshold"].float()
        elif "log_threshold" in tensors:
            sae_args["threshold"] = tensors["log_threshold"].float().exp()
        else:
            raise SAEError(f"{weights}: a jumprelu SAE needs 'threshold' or 'log_threshold'")
    if arch == "topk":
        sae_args["k"] = int(k)
        if cfg.get("rescale_acts_by_decoder_norm"):
            # Selecting on pre * ||W_dec_i|| equals a plain topk SAE with the norm folded in.
            norm = w_dec.norm(dim=-1)
            w_enc, b_enc, w_dec = w_enc * norm, b_enc * norm, w_dec / norm[:, None]
    norm_mode = cfg.get("normalize_activations")
    if norm_mode == "expected_average_only_in" or norm_mode is True:
        scale = cfg.get("scaling_factor") or meta.get("scaling_factor")
        if scale is None:
            raise SAEError(f"{folder}/cfg.json: normalize_activations is 'expected_average_only_in' but "
                           f"no 'scaling_factor' is recorded; fold it into the weights with SAELens "
                           f"(fold_activation_norm_scaling_factor) and save again")
        sae_args["input_scale"] = float(scale)
    elif norm_mode == "layer_norm":
        sae_args["layer_norm_input"] = True
    elif norm_mode not in (None, "none", False):
        raise SAEError(f"{folder}/cfg.json: normalize_activations={norm_mode!r} is not supported")
    model_name = meta.get("model_name") or cfg.get("model_name")
    # TransformerLens folds LayerNorm and centres the residual stream for GPT-2-style models; SAEs
    # trained there (e.g. gpt2-small res-jb) expect centred tokens. Llama/Gemma never are.
    kwargs_tl = meta.get("model_from_pretrained_kwargs") or cfg.get("model_from_pretrained_kwargs") or {}
    center = bool(kwargs_tl.get("center_writing_weights", False))
    info = _info(folder, source, "saelens", arch, w_enc, [weights, folder / "cfg.json"],
                 hook_name=hook, layer=layer_from_hook(hook) if hook else None, model_name=model_name,
                 expected_l0=meta.get("l0") or cfg.get("l0") or (float(k) if arch == "topk" else None),
                 extra={"neuronpedia_id": meta.get("neuronpedia_id") or cfg.get("neuronpedia_id")},
                 reads=_reads(meta, folder))
    return SAE(w_enc, b_enc, w_dec, b_dec, info,
               apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
               center_input=center, **sae_args)


# -- EleutherAI sparsify ---------------------------------------------------------------------------

def _load_sparsify(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    cfg = _read_json(folder / "cfg.json")
    weights = folder / "sae.safetensors"
    tensors = _safetensors(weights)
    enc_w, enc_b, w_dec, b_dec = _need(tensors, weights, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    if cfg.get("activation", "topk") != "topk":
        raise SAEError(f"{folder}/cfg.json: activation {cfg.get('activation')!r} is not supported "
                       f"(saeembed reads sparsify topk SAEs)")
    if cfg.get("skip_connection"):
        raise SAEError(f"{folder}: sparsify SAEs with a skip connection (transcoders) are not embeddings "
                       f"of the residual stream; pass a plain SAE")
    hook = folder.name if re.fullmatch(r"layers\.\d+", folder.name) else None
    w_enc = enc_w.T.contiguous()
    info = _info(folder, source, "sparsify", "topk", w_enc, [weights, folder / "cfg.json"],
                 hook_name=hook, layer=layer_from_hook(hook) if hook else None,
                 expected_l0=float(cfg["k"]))
    return SAE(w_enc, enc_b, w_dec, b_dec, info, k=int(cfg["k"]),
               apply_b_dec_to_input=not cfg.get("transcode", False))


# -- Goodfire --------------------------------------------------------------------------------------

def _load_goodfire(path: Path, source: str) -> SAE:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt"))
        if len(files) != 1:
            raise SAEError(f"{path}: expected one .pth file, found {[p.name for p in files]}; pass the file")
        path = files[0]
    tensors = _torch_file(path)
    enc_w, enc_b, dec_w, dec_b = _need(tensors, path, "encoder_linear.weight", "encoder_linear.bias",
                                       "decoder_linear.weight", "decoder_linear.bias")
    w_enc, w_dec = enc_w.T.contiguous(), dec_w.T.contiguous()
    match = re.search(r"-l(\d+)\b", path.stem)
    file_layer = int(match.group(1)) if match else None
    info = _info(path, source, "goodfire", "relu", w_enc, [path],
                 hook_name=f"layers.{file_layer}" if file_layer is not None else None, layer=file_layer)
    return SAE(w_enc, enc_b, w_dec, dec_b, info, apply_b_dec_to_input=False)


# -- Gemma Scope -----------------------------------------------------------------------------------

def _load_gemmascope(path: Path, source: str) -> SAE:
    import numpy as np

    folder = path if path.is_dir() else path.parent
    hook = None
    if (folder / "params.npz").exists() or path.suffix == ".npz":
        weights = path if path.suffix == ".npz" else folder / "params.npz"
        with np.load(weights, allow_pickle=False) as npz:
            tensors = {k: torch.from_numpy(np.asarray(npz[k], dtype=np.float32)) for k in npz.files}
        names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
        files = [weights]
    else:
        weights = folder / "params.safetensors"
        tensors = _safetensors(weights)
        names = ("w_enc", "b_enc", "w_dec", "b_dec", "threshold")
        files = [weights]
        if (folder / "config.json").exists():
            hook = _read_json(folder / "config.json").get("hf_hook_point_in")
            files.append(folder / "config.json")
    w_enc, b_enc, w_dec, b_dec, threshold = _need(tensors, weights, *names)
    # v1 releases encode layer and L0 in the path: layer_12/width_16k/average_l0_82
    text = str(folder)
    layer_match, l0_match = re.search(r"layer_(\d+)", text), re.search(r"average_l0_(\d+)", text)
    file_layer = layer_from_hook(hook) if hook else (int(layer_match.group(1)) if layer_match else None)
    info = _info(folder, source, "gemmascope", "jumprelu", w_enc, files,
                 hook_name=hook or (f"layers.{file_layer}" if file_layer is not None else None),
                 layer=file_layer, expected_l0=float(l0_match.group(1)) if l0_match else None)
    return SAE(w_enc, b_enc, w_dec, b_dec, info, threshold=threshold, apply_b_dec_to_input=False)


# -- dictionary_learning ---------------------------------------------------------------------------

def _load_dictionary_learning(path: Path, source: str) -> SAE:
    folder = path if path.is_dir() else path.parent
    weights = folder / "ae.pt"
    tensors = _torch_file(weights)
    trainer = _read_json(folder / "config.json").get("trainer", {})
    dict_class = trainer.get("dict_class", "AutoEncoder")
    if "W_enc" in tensors:  # JumpReluAutoEncoder, MatryoshkaBatchTopKSAE store [D, F] directly
        w_enc, b_enc, w_dec, b_dec = _need(tensors, weights, "W_enc", "b_enc", "W_dec", "b_dec")
    else:
        enc_w, b_enc, dec_w = _need(tensors, weights, "encoder.weight", "encoder.bias", "decoder.weight")
        (b_dec,) = _need(tensors, weights, "b_dec" if "b_dec" in tensors else "bias")
        w_enc, w_dec = enc_w.T.contiguous(), dec_w.T.contiguous()
    sae_args: dict[str, Any] = {}
    if dict_class == "AutoEncoderTopK":
        arch, sae_args["k"] = "topk", int(tensors["k"]) if "k" in tensors else int(trainer["k"])
    elif dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        # BatchTopK dictionaries infer with a scalar threshold on relu(pre); JumpReLU with one per latent.
        (threshold,) = _need(tensors, weights, "threshold")
        arch, sae_args["threshold"] = "jumprelu", torch.clamp(threshold, min=0.0)
    elif dict_class == "AutoEncoder":
        arch = "relu"
    else:
        raise SAEError(f"{folder}/config.json: dict_class {dict_class!r} is not supported; saeembed reads "
                       f"AutoEncoder, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE, JumpReluAutoEncoder")
    hook = trainer.get("submodule_name")
    file_layer = trainer.get("layer")
    info = _info(folder, source, "dictionary_learning", arch, w_enc, [weights, folder / "config.json"],
                 hook_name=hook, layer=layer_from_hook(hook) if hook else file_layer,
                 model_name=trainer.get("lm_name"),
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
