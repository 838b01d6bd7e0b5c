"""A TopK SAE and its training step in the recipe of Gao et al. (2024), "Scaling and evaluating
sparse autoencoders": unit-norm decoder rows, encoder initialised as the decoder's transpose,
b_dec initialised to the data mean, an AuxK loss that revives dead latents, and Adam with the
paper's learning-rate scaling lr = 2e-4 / sqrt(n_latents / 2**14)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

ADAM_EPS = 6.25e-10  # from the paper; the default 1e-8 is large next to these gradients


def default_lr(n_latents: int) -> float:
    return 2e-4 / math.sqrt(n_latents / 2**14)


class StepStats(NamedTuple):
    loss: float
    fvu: float
    aux: float
    dead_fraction: float


class TopKSAE(torch.nn.Module):
    """Trainable TopK SAE: f = topk(relu((x - b_dec) W_enc + b_enc)), x_hat = f W_dec + b_dec."""

    def __init__(self, d_in: int, n_latents: int, k: int, generator: torch.Generator | None = None):
        super().__init__()
        w_dec = torch.randn(n_latents, d_in, generator=generator)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w_dec)
        self.W_enc = torch.nn.Parameter(w_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k = k

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)

    def decode_sparse(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # embedding_bag sums the k chosen decoder rows without a dense [batch, n_latents] tensor.
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pre = self.pre_activations(x)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        values = values.relu()
        return self.decode_sparse(indices, values) + self.b_dec, pre, indices, values

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))  # in place: W_dec stays a Parameter

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Keep decoder rows on the unit sphere: drop the gradient component along each row."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec).sum(-1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec


def _normalized_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)


class TopKTrainer:
    """One optimiser step per batch; tracks for how many tokens each latent has not fired."""

    def __init__(self, sae: TopKSAE, lr: float, aux_k: int, aux_coef: float, dead_after_tokens: int,
                 prefixes: tuple[int, ...] = ()):
        self.sae, self.aux_k, self.aux_coef = sae, aux_k, aux_coef
        self.prefixes = tuple(m for m in prefixes if m < sae.W_dec.shape[0])
        self.dead_after_tokens = dead_after_tokens
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr, eps=ADAM_EPS)
        self.tokens_since_fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)

    def step(self, x: torch.Tensor) -> StepStats:
        """One optimiser step on a batch of activations (moved to the SAE's device)."""
        sae = self.sae
        x = x.to(sae.W_dec.device)
        x_hat, pre, indices, values = sae(x)
        fvu = _normalized_mse(x_hat, x)
        reconstruction = fvu
        if self.prefixes:
            # Matryoshka (Bussmann et al. 2025, HypotheSAEs' default): the first m latents alone must also
            # reconstruct, so early latents learn broad concepts and later ones refine them.
            nested = [_normalized_mse(sae.decode_sparse(indices, values * (indices < m)) + sae.b_dec, x)
                      for m in self.prefixes]
            reconstruction = (fvu + sum(nested)) / (1 + len(nested))
        dead = self.tokens_since_fired > self.dead_after_tokens
        aux = torch.zeros((), device=x.device)
        if dead.any():
            # AuxK: the top dead latents try to reconstruct what the live ones missed, so they get
            # gradient again and come back to life.
            k_aux = min(self.aux_k, int(dead.sum()))
            dead_pre = pre.masked_fill(~dead.to(pre.device), float("-inf"))
            aux_values, aux_indices = dead_pre.topk(k_aux, dim=-1, sorted=False)
            residual = (x - x_hat).detach()
            aux = _normalized_mse(sae.decode_sparse(aux_indices, aux_values.relu()), residual)
            aux = torch.nan_to_num(aux)
        loss = reconstruction + self.aux_coef * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_gradient()
        self.optimizer.step()
        sae.normalize_decoder()
        fired = torch.zeros_like(self.tokens_since_fired, dtype=torch.bool)
        fired[indices[values > 0].cpu()] = True
        self.tokens_since_fired += len(x)
        self.tokens_since_fired[fired] = 0
        return StepStats(loss.item(), fvu.item(), aux.item(), dead.float().mean().item())

    def state(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs, as plain tensors (saved with safetensors, no pickle)."""
        tensors = {f"sae.{name}": p.detach().cpu().contiguous() for name, p in self.sae.named_parameters()}
        for name, p in self.sae.named_parameters():
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"adam.{name}.{key}"] = value.detach().cpu().reshape(value.shape).contiguous()
        tensors["tokens_since_fired"] = self.tokens_since_fired.clone()
        return tensors

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.sae.named_parameters():
                p.copy_(tensors[f"sae.{name}"])
                keys = [k for k in ("step", "exp_avg", "exp_avg_sq") if f"adam.{name}.{k}" in tensors]
                if keys:
                    self.optimizer.state[p] = {k: tensors[f"adam.{name}.{k}"].to(p.device).clone() for k in keys}
        self.tokens_since_fired = tensors["tokens_since_fired"].clone()


@torch.no_grad()
def evaluate(sae: TopKSAE, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """FVU, mean L0 and the fraction of latents that never fire, on held-out activations."""
    residual = total = 0.0
    active = 0
    fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.bool)
    mean = x.mean(0).to(sae.W_dec.device)
    device = sae.W_dec.device
    for start in range(0, len(x), batch_size):
        batch = x[start: start + batch_size].to(device)
        x_hat, _, indices, values = sae(batch)
        residual += float((x_hat - batch).pow(2).sum())
        total += float((batch - mean).pow(2).sum())
        active += int((values > 0).sum())
        fired[indices[values > 0].cpu()] = True
    return {"fvu": residual / max(total, 1e-12), "l0": active / max(len(x), 1),
            "dead_fraction": float((~fired).float().mean()), "eval_tokens": len(x)}
