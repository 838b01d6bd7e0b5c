"""The one canonical SAE every published format is loaded into, and its encoder."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from saeembed.errors import SAEError

Rule = Literal["relu", "jumprelu", "topk", "gated"]
Reads = Literal["tokens", "document"]
READS = ("tokens", "document")


@dataclass(frozen=True)
class SAEInfo:
    """What is known about an SAE besides its weights; recorded in every store's metadata."""

    source: str
    """The path or hub id the SAE was loaded from."""
    format: str
    """saelens | sparsify | goodfire | gemmascope | dictionary_learning."""
    architecture: Rule
    d_in: int
    d_sae: int
    fingerprint: str = ""
    """Content hash of the weight files (see `saeembed.hashing.fingerprint`)."""
    hook_name: str | None = None
    """The hook the SAE was trained on, in its publisher's naming, when the files say."""
    layer: int | None = None
    """The block whose output the SAE reads (0-based), when the files say."""
    model_name: str | None = None
    expected_l0: float | None = None
    """The publisher's mean active latents per token, used by `saeembed check`."""
    reads: Reads = "tokens"
    """tokens: the SAE encodes every token and the codes are pooled over the document (published SAEs);
    document: it encodes one vector per document, the L2-normalised mean of the block's output over
    the pooled tokens (a document-level SAE, as HypotheSAEs trains on sentence embeddings), so every
    document has the same small budget of active latents whatever its length."""
    extra: dict = field(default_factory=dict)


@dataclass
class SAE:
    """Canonical SAE: f = rule(prep(x) @ W_enc + b_enc); x_hat = f @ W_dec + b_dec.

    `prep` centres each token (TransformerLens `center_writing_weights` SAEs), scales it
    (`normalize_activations`), and subtracts b_dec when the SAE was trained that way.
    """

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    info: SAEInfo
    threshold: torch.Tensor | None = None  # jumprelu: [d_sae] or a scalar
    k: int | None = None  # topk
    b_gate: torch.Tensor | None = None  # gated
    r_mag: torch.Tensor | None = None
    b_mag: torch.Tensor | None = None
    apply_b_dec_to_input: bool = False
    center_input: bool = False
    input_scale: float = 1.0
    layer_norm_input: bool = False

    def __post_init__(self) -> None:
        """Refuse tensors whose shapes disagree, or a k out of range (the loaders check files before this)."""
        source = self.info.source or "the SAE"
        if self.W_enc.ndim != 2 or 0 in self.W_enc.shape:
            raise SAEError(f"{source}: W_enc is {list(self.W_enc.shape)}, expected a 2-D [d_in, d_sae] matrix")
        d_in, d_sae = self.W_enc.shape
        expected: dict[str, list[tuple[int, ...]]] = {
            "W_dec": [(d_sae, d_in)], "b_enc": [(d_sae,)], "b_dec": [(d_in,)], "threshold": [(d_sae,), (), (1,)],
            "b_gate": [(d_sae,)], "r_mag": [(d_sae,)], "b_mag": [(d_sae,)]}
        for name, shapes in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) not in shapes:
                raise SAEError(f"{source}: {name} is {list(value.shape)}, expected "
                               f"{' or '.join(str(list(s)) for s in shapes)} for W_enc {[d_in, d_sae]}")
        rule = self.info.architecture
        if rule == "topk" and (isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= d_sae):
            raise SAEError(f"{source}: a topk SAE needs k between 1 and d_sae = {d_sae}, not {self.k!r}")
        needs = {"jumprelu": ("threshold",), "gated": ("b_gate", "r_mag", "b_mag")}.get(rule, ())
        if missing := [name for name in needs if getattr(self, name) is None]:
            raise SAEError(f"{source}: a {rule} SAE needs {', '.join(missing)}")

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "SAE":
        """Return a copy with every tensor on `device` (and `dtype`)."""
        moved: dict[str, Any] = {
            name: (value.to(device=device, dtype=dtype) if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()}
        return replace(self, **moved)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Map residual activations [n, d_in] into the space the SAE was trained on."""
        x = x.to(self.W_enc.dtype)
        if self.center_input or self.layer_norm_input:
            x = x - x.mean(-1, keepdim=True)
        if self.layer_norm_input:
            x = x / (x.std(-1, keepdim=True) + 1e-5)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations [n, d_sae] of token activations [n, d_in]; call it on chunks."""
        return self.encode_prepared(self.prepare(x))

    def encode_prepared(self, x: torch.Tensor) -> torch.Tensor:
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        rule = self.info.architecture
        if rule == "gated":
            # __post_init__ refuses a gated SAE without them
            assert self.b_gate is not None and self.r_mag is not None and self.b_mag is not None
            gate = (x @ self.W_enc + self.b_gate) > 0
            mag = torch.relu(x @ (self.W_enc * torch.exp(self.r_mag)) + self.b_mag)
            return mag * gate
        pre = torch.addmm(self.b_enc, x, self.W_enc)
        if rule == "relu":
            return torch.relu(pre)
        if rule == "jumprelu":
            assert self.threshold is not None  # __post_init__ refuses a jumprelu SAE without one
            return torch.relu(pre) * (pre > self.threshold)
        assert self.k is not None  # topk: __post_init__ refuses a k that is not an int in [1, d_sae]
        values, indices = torch.topk(pre, self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Active (row, latent, value) triples of token activations [n, d_in]; call it on chunks.

        TopK SAEs never materialise the rectified [n, d_sae] tensor: top-k of the pre-activations
        already is the code.
        """
        x = self.prepare(x)
        if self.info.architecture == "topk":
            if self.apply_b_dec_to_input:
                x = x - self.b_dec
            assert self.k is not None  # __post_init__ refuses a topk SAE without an int k in [1, d_sae]
            values, latents = torch.topk(torch.addmm(self.b_enc, x, self.W_enc), self.k, dim=-1, sorted=False)
            active = values > 0
            rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(latents)
            return rows[active], latents[active], values[active]
        codes = self.encode_prepared(x)
        rows, latents = codes.nonzero(as_tuple=True)
        return rows, latents, codes[rows, latents]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [n, d_in] in the prepared space (compare with `prepare(x)`)."""
        return f @ self.W_dec + self.b_dec
