"""How an SAE is trained (`TrainConfig`), kept free of heavy imports so the CLI builds `train-sae`'s options
from it without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saeembed.embedding.config import ComputeDtype
from saeembed.settings import check_fields, refuse, setting

Reads = Literal["tokens", "document"]  # what the SAE encodes: `saeembed.sae.model.SAEInfo.reads`
SaveDtype = Literal["float32", "float16", "bfloat16"]


@dataclass
class TrainConfig:
    """How an SAE is trained. CLI defaults come from here."""

    model: str | Path = setting(flag="--model")
    """Reader whose activations are learned: Hugging Face id or local folder."""
    layer: int = setting(at_least=0, flag="--layer")
    """Block whose output is read (0-based)."""
    latents: int = setting(8192, at_least=2, flag="--latents")
    """Width of the SAE (d_sae)."""
    k: int = setting(32, at_least=1, flag="--k")
    """Latents kept per token (per document with reads="document"): the TopK of the encoder."""
    reads: Reads = setting("tokens", flag="--reads")
    """tokens: an SAE of every token's activation (pooled over documents when embedding); document: an
    SAE of each document's unit-norm mean activation (HypotheSAEs' document-level recipe), so every
    document gets exactly k latents whatever its length. With `document`, the "tokens" of batch_size,
    max_train_tokens and dead_after_tokens are documents."""
    matryoshka: tuple[int, ...] = setting((), flag="--matryoshka")
    """Nested prefixes (e.g. (128, 512)): the first m latents alone must also reconstruct, so early
    latents learn broad concepts (Matryoshka SAEs; HypotheSAEs' default for document SAEs)."""
    lr: float | None = setting(None, above=0, flag="--lr")
    """Learning rate; None: 2e-4 / sqrt(latents / 2^14), the paper's scaling."""
    batch_size: int = setting(4096, at_least=1, flag="--batch-size")
    """Tokens per optimiser step."""
    epochs: int = setting(1, at_least=1, flag="--epochs")
    """Passes over the corpus."""
    max_train_tokens: int | None = setting(None, at_least=1, flag="--max-train-tokens")
    """Stop after this many training tokens (None: all epochs)."""
    aux_k: int | None = setting(None, at_least=1)
    """Dead latents used by the AuxK loss; None: d_in / 2 (the paper's choice)."""
    aux_coef: float = setting(1 / 32, at_least=0)
    """Weight of the AuxK loss, which makes dead latents learn what the live ones miss."""
    dead_after_tokens: int | None = setting(None, at_least=1)
    """A latent that has not fired for this many training tokens counts as dead (None: 500,000 tokens,
    or 10,000 documents with reads="document")."""
    buffer_tokens: int = setting(262_144, at_least=2)
    """Activations held in the shuffle buffer (batches are drawn from it at random); >= 2 batches."""
    window_docs: int = setting(256, at_least=1)
    """Documents read by the model per window of activations."""
    holdout_fraction: float = setting(0.02, at_least=0, below=1)
    """Share of documents kept out of training for the held-out FVU, L0 and dead fraction."""
    eval_tokens: int = setting(20_000, at_least=1)
    """Held-out tokens evaluated at most."""
    eval_every_steps: int = setting(200, at_least=1)
    """Steps between held-out evaluations."""
    checkpoint_seconds: float = setting(60.0, at_least=0)
    """Seconds between checkpoints (a killed run resumes from the last)."""
    seed: int = setting(0, at_least=0, flag="--seed")
    """Seed of the initialisation, the held-out split and the shuffle."""
    device: str = setting("auto", flag="--device")
    """auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps."""
    dtype: ComputeDtype = setting("auto")
    """Compute dtype of the reader: auto, float32, bfloat16 or float16 (the SAE trains in float32)."""
    batch_tokens: int = setting(16384, at_least=1)
    """Token budget of one forward batch of the reader."""
    save_dtype: SaveDtype = setting("float32", flag="--save-dtype")
    """dtype of the saved weights: float32, float16 or bfloat16."""
    text_field: str = setting("text", flag="--text-field")
    """Field of each record holding the text."""
    id_field: str = setting("id", flag="--id-field")
    """Field holding the document's id (used to split off the held-out documents)."""
    skip_invalid: bool = setting(False, flag="--skip-invalid")
    """Skip (and report) records without usable text instead of refusing the corpus."""
    activations_dir: Path | None = setting(None, flag="--activations-dir")
    """Cache activations here (float16) so later runs and epochs skip the model."""
    revision: str | None = setting(None, flag="--revision")
    """Branch, tag or commit of the reader on the hub."""
    trust_remote_code: bool = setting(False, flag="--trust-remote-code")
    """Run model code shipped with a hub model. Off unless asked."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, Path)) or not str(self.model).strip():
            refuse(self, "model", "give a hub id or a local path")
        check_fields(self)
        if self.k > self.latents:
            refuse(self, "k", f"it must not exceed latents ({self.latents}, --latents)")
        self.matryoshka = tuple(self.matryoshka)
        if any(isinstance(m, bool) or not isinstance(m, int) or not 0 < m < self.latents for m in self.matryoshka) \
                or list(self.matryoshka) != sorted(set(self.matryoshka)):
            refuse(self, "matryoshka", f"give increasing prefix sizes between 0 and latents ({self.latents}), "
                                       f"e.g. (128, 512)")
        if self.buffer_tokens < 2 * self.batch_size:
            refuse(self, "buffer_tokens", f"give at least two batches (2 x batch_size = {2 * self.batch_size})")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            refuse(self, "device", "choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.activations_dir is not None:
            if not isinstance(self.activations_dir, (str, Path)) or not str(self.activations_dir).strip():
                refuse(self, "activations_dir", "give a folder, or None")
            self.activations_dir = Path(self.activations_dir)
