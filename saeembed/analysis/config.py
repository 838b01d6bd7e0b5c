"""Settings of the analyses, kept free of heavy imports so the CLI can take its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saeembed.errors import SaeEmbedError

Measure = Literal["frequency", "mean"]
MEASURES = ("frequency", "mean")


@dataclass
class DiffConfig:
    """How two (or more) corpora are compared. CLI defaults come from here."""

    measure: Measure = "frequency"
    """frequency: share of documents where the latent fires (the paper); mean: mean pooled activation."""
    alpha: float = 0.05
    """Largest Benjamini-Hochberg q-value of a finding."""
    min_diff: float = 0.03
    """Smallest |difference| of a finding, in the measure's units (0 keeps every significant latent)."""
    pair_on: str | None = None
    """A column naming the same item in every corpus (e.g. prompt_id): paired tests (McNemar, paired t)."""
    holdout: float | None = None
    """Share of documents (of pairs, when paired) kept out of discovery to check each finding on."""
    seed: int = 0
    """Seed of the holdout split and of the choice of examples."""
    examples: bool = True
    """Attach one example document per side to every finding."""

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise SaeEmbedError(f"unknown measure {self.measure!r}; choose frequency or mean")
        if not 0 < self.alpha < 1:
            raise SaeEmbedError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise SaeEmbedError(f"--holdout is the share of documents kept for validation, in (0, 1); "
                                f"got {self.holdout}")
