"""Write SAE files of every published format with known weights, plus an independent reference.

Each writer returns (path to pass as --sae, reference): `reference(x)` computes the latent codes of
token activations x [n, d_in] straight from the raw tensors the writer saved, following the
publisher's own definition, without saeembed's loader or canonical SAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file

Reference = Callable[[torch.Tensor], torch.Tensor]


def _weights(d_in: int, d_sae: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5
    return {"W_enc": w_enc, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
            "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae ** 0.5,
            "b_dec": torch.randn(d_in, generator=g) * 0.1}


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def saelens(folder: Path, d_in: int, d_sae: int = 96, *, arch: str = "standard", layer: int = 1, k: int = 8,
            legacy_cfg: bool = False, seed: int = 0) -> tuple[Path, Reference]:
    folder.mkdir(parents=True, exist_ok=True)
    w = _weights(d_in, d_sae, seed)
    tensors = {k_: v.contiguous() for k_, v in w.items()}
    hook = f"blocks.{layer}.hook_resid_post"
    if arch == "jumprelu":
        tensors["threshold"] = torch.full((d_sae,), 0.3)
    if arch == "gated":
        g = torch.Generator().manual_seed(seed + 1)
        del tensors["b_enc"]
        tensors.update(b_gate=torch.randn(d_sae, generator=g) * 0.1, r_mag=torch.randn(d_sae, generator=g) * 0.1,
                       b_mag=torch.randn(d_sae, generator=g) * 0.1)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    if legacy_cfg:  # SAELens before 6.0: flat keys, hook_point, activation_fn_str / activation_fn_kwargs
        cfg = {"d_in": d_in, "d_sae": d_sae, "hook_point": hook, "model_name": "tiny",
               "apply_b_dec_to_input": True, "normalize_activations": False,
               "activation_fn_str": "topk" if arch == "topk" else "relu",
               "activation_fn_kwargs": {"k": k} if arch == "topk" else {}}
    else:
        cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "apply_b_dec_to_input": True,
               "normalize_activations": "none", "metadata": {"model_name": "tiny", "hook_name": hook}}
        if arch == "topk":
            cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))

    def reference(x: torch.Tensor) -> torch.Tensor:
        xc = x - tensors["b_dec"]
        if arch == "gated":
            gate = (xc @ tensors["W_enc"] + tensors["b_gate"]) > 0
            return gate * torch.relu(xc @ (tensors["W_enc"] * tensors["r_mag"].exp()) + tensors["b_mag"])
        pre = xc @ tensors["W_enc"] + tensors["b_enc"]
        if arch == "jumprelu":
            return pre * (pre > tensors["threshold"])
        if arch == "topk":
            return _topk(pre, k)
        return pre.relu()

    return folder, reference


def sparsify(root: Path, d_in: int, d_sae: int = 96, *, layer: int = 1, k: int = 8, seed: int = 0
             ) -> tuple[Path, Reference]:
    """A multi-hookpoint checkpoint: root/layers.{layer}/ (pass root and --layer)."""
    folder = root / f"layers.{layer}"
    folder.mkdir(parents=True, exist_ok=True)
    w = _weights(d_in, d_sae, seed)
    save_file({"encoder.weight": w["W_enc"].T.contiguous().to(torch.bfloat16), "encoder.bias": w["b_enc"],
               "W_dec": w["W_dec"], "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "k": k, "num_latents": d_sae,
                                                 "expansion_factor": 32, "normalize_decoder": True,
                                                 "transcode": False, "skip_connection": False, "d_in": d_in}))
    enc = w["W_enc"].T.to(torch.bfloat16).float()  # the file holds bf16, like published sparsify SAEs

    def reference(x: torch.Tensor) -> torch.Tensor:
        return _topk(torch.relu((x - w["b_dec"]) @ enc.T + w["b_enc"]), k)

    return root, reference


def goodfire(folder: Path, d_in: int, d_sae: int = 96, *, layer: int = 1, seed: int = 0) -> tuple[Path, Reference]:
    folder.mkdir(parents=True, exist_ok=True)
    w = _weights(d_in, d_sae, seed)
    path = folder / f"Tiny-SAE-l{layer}.pth"
    torch.save({"encoder_linear.weight": w["W_enc"].T.contiguous(), "encoder_linear.bias": w["b_enc"],
                "decoder_linear.weight": w["W_dec"].T.contiguous(), "decoder_linear.bias": w["b_dec"]}, path)
    return path, lambda x: torch.relu(x @ w["W_enc"] + w["b_enc"])


def gemmascope(folder: Path, d_in: int, d_sae: int = 96, *, layer: int = 1, v2: bool = False, seed: int = 0
               ) -> tuple[Path, Reference]:
    w = _weights(d_in, d_sae, seed)
    threshold = torch.full((d_sae,), 0.3)
    if v2:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"w_enc": w["W_enc"].contiguous(), "w_dec": w["W_dec"].contiguous(), "b_enc": w["b_enc"],
                   "b_dec": w["b_dec"], "threshold": threshold}, str(folder / "params.safetensors"))
        (folder / "config.json").write_text(json.dumps({"hf_hook_point_in": f"model.layers.{layer}.output"}))
    else:
        folder = folder / f"layer_{layer}" / "width_16k" / "average_l0_40"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "params.npz", W_enc=w["W_enc"].numpy(), W_dec=w["W_dec"].numpy(),
                 b_enc=w["b_enc"].numpy(), b_dec=w["b_dec"].numpy(), threshold=threshold.numpy())

    def reference(x: torch.Tensor) -> torch.Tensor:
        pre = x @ w["W_enc"] + w["b_enc"]
        return pre.relu() * (pre > threshold)

    return folder, reference


def dictionary_learning(folder: Path, d_in: int, d_sae: int = 96, *, kind: str = "AutoEncoder", layer: int = 1,
                        k: int = 8, seed: int = 0) -> tuple[Path, Reference]:
    folder.mkdir(parents=True, exist_ok=True)
    w = _weights(d_in, d_sae, seed)
    state = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
             "decoder.weight": w["W_dec"].T.contiguous()}
    if kind == "AutoEncoder":
        state["bias"] = w["b_dec"]
    else:
        state["b_dec"] = w["b_dec"]
        state["k"] = torch.tensor(k)
    if kind == "BatchTopKSAE":
        state["threshold"] = torch.tensor(0.4)
    torch.save(state, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": {
        "dict_class": kind, "activation_dim": d_in, "dict_size": d_sae, "k": k, "layer": layer,
        "lm_name": "tiny", "submodule_name": f"resid_post_layer_{layer}"}}))

    def reference(x: torch.Tensor) -> torch.Tensor:
        r = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        if kind == "AutoEncoderTopK":
            return _topk(r, k)
        if kind == "BatchTopKSAE":
            return r * (r > 0.4)
        return r

    return folder, reference


# -- editing written files (to damage them in tests) -----------------------------------------------

def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file as its format stores them (.safetensors, .npz, or .pt/.pth)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    return torch.load(path, weights_only=True)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write `tensors` to `path` in the format its suffix names (bfloat16 cannot go into .npz)."""
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in tensors.items()})
    else:
        torch.save(tensors, path)


def edit_tensors(path: Path, **changes: torch.Tensor | None) -> None:
    """Replace tensors of a weights file in place; None removes one. Names with dots go through a dict:
    `edit_tensors(p, **{"encoder.bias": t})`."""
    tensors = read_tensors(path)
    for name, value in changes.items():
        if value is None:
            tensors.pop(name, None)
        else:
            tensors[name] = value
    write_tensors(path, tensors)


def edit_json(path: Path, **changes: object) -> None:
    """Set fields of a JSON config in place; the value `DROP` removes one."""
    data = json.loads(path.read_text())
    for name, value in changes.items():
        if value is DROP:
            data.pop(name, None)
        else:
            data[name] = value
    path.write_text(json.dumps(data))


DROP = object()
"""`edit_json(path, k=DROP)` removes the field k."""
