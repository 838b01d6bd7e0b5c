"""`saeembed check`: reconstruction FVU and L0 on sample text, the test that a hook is right."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import torch

from saeembed.embedding.config import EmbedConfig
from saeembed.embedding.corpus import Document
from saeembed.embedding.kernel import load_pipeline
from saeembed.embedding.pool import document_means
from saeembed.embedding.reader import Chunk, length_sorted_batches

# A right hook and preprocessing gives FVU of roughly 0.05-0.3; an off-by-one layer or a wrong
# b_dec rule gives FVU >= 1 or an L0 far from the publisher's figure.
FVU_WARN = 0.5
L0_WARN_RATIO = 3.0


@dataclass
class CheckReport:
    """How well the SAE reconstructs the reader's activations on sample text."""

    fvu: float
    """Fraction of variance unexplained: sum |x - x_hat|^2 / sum |x - mean(x)|^2 over tokens (over
    documents for a document-level SAE)."""
    l0: float
    """Mean active latents per token (per document for a document-level SAE)."""
    expected_l0: float | None
    n_tokens: int
    """Vectors measured: tokens, or documents for a document-level SAE."""
    active_fraction: float
    """Fraction of latents that fired on at least one sample token."""
    model: str
    layer: int
    sae: str
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings


def sample_texts() -> list[str]:
    """The built-in sample: varied short English texts plus a little code and other languages."""
    text = resources.files("saeembed.data").joinpath("check_sample.txt").read_text(encoding="utf-8")
    return [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]


@torch.inference_mode()
def check(config: EmbedConfig, docs: list[Document] | None = None) -> CheckReport:
    """Encode and decode the reader's activations on `docs` (default: the built-in sample).

    Examples:
        >>> sae = "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82"
        >>> report = check(EmbedConfig(model="google/gemma-2-2b", layer=12, sae=sae))  # doctest: +SKIP
        >>> report.fvu < 0.3  # doctest: +SKIP
        True
    """
    reader, sae = load_pipeline(config)
    docs = docs or [Document(str(i), t) for i, t in enumerate(sample_texts())]
    chunks = [c for slot, doc in enumerate(docs)
              for c in reader.prepare(doc, long="chunk", as_chat=config.as_chat, doc_slot=slot).chunks if len(c.pooled)]
    residual = total = 0.0
    active_tokens = n_tokens = 0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.device)
    sae = sae.to(sae.device, torch.float32)  # measure reconstruction in full precision
    token_batches = length_sorted_batches(chunks, config.batch_tokens, config.max_batch_docs, reader.device)
    batches: list[list[Chunk]] | list[torch.Tensor] = token_batches
    if sae.info.reads == "document":  # one vector per document: FVU and L0 are over documents
        batches = [document_means(reader, token_batches, len(docs)).to(sae.device)]
    for batch in batches:
        x = sae.prepare(batch if isinstance(batch, torch.Tensor) else reader.token_activations(batch)[0].float())
        codes = sae.encode_prepared(x)
        x_hat = sae.decode(codes)
        residual += float(((x - x_hat) ** 2).sum())
        total += float(((x - x.mean(0)) ** 2).sum())
        active_tokens += int((codes > 0).sum())
        n_tokens += x.shape[0]
        fired |= (codes > 0).any(0)
    fvu = residual / max(total, 1e-12)
    l0 = active_tokens / max(n_tokens, 1)
    report = CheckReport(fvu, l0, sae.info.expected_l0, n_tokens, float(fired.float().mean()),
                         reader.spec.model, reader.spec.layer, str(config.sae))
    if fvu > FVU_WARN:
        report.warnings.append(f"FVU {fvu:.2f} > {FVU_WARN}: the SAE reconstructs these activations badly; the "
                               f"layer, hook or input preparation is probably wrong for this SAE")
    expected = sae.info.expected_l0
    if expected and not expected / L0_WARN_RATIO <= l0 <= expected * L0_WARN_RATIO:
        report.warnings.append(f"L0 {l0:.1f} is far from the SAE's own {expected:g}: check the layer and that "
                               f"the SAE was trained on this model")
    return report

