"""Settings of the analyses, kept free of heavy imports so the CLI can take its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saeembed.errors import SaeEmbedError, at_least

Measure = Literal["frequency", "mean"]
MEASURES = ("frequency", "mean")
LengthMode = Literal["adjust", "ignore"]
LENGTH_MODES = ("adjust", "ignore")


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
    """A column naming the same item in every corpus (e.g. prompt_id): paired tests (conditional
    logistic or McNemar, paired t)."""
    holdout: float | None = None
    """Share of documents (of pairs, when paired) kept out of discovery to check each finding on."""
    length: LengthMode = "adjust"
    """adjust: compare documents as if they were of equal length. With max pooling a longer document
    fires more latents, so without this corpora of different lengths differ on almost every latent.
    Unpaired frequencies: Mantel-Haenszel within `length_bands` bands of n_tokens; pairs: conditional
    logistic regression on each pair's log length ratio; means: regression on log n_tokens.
    ignore: compare the documents as they are (the length gap is still reported)."""
    length_bands: int = 20
    """Unpaired frequencies, with length adjust: bands (quantiles of n_tokens over both corpora)."""
    theme_jaccard: float = 0.5
    """Findings whose latents fire on documents this similar (Jaccard, corrected for chance) share a theme ..."""
    theme_same_peak: float = 0.5
    """... or that peak on the same token in at least this share of the documents they share ..."""
    theme_cosine: float = 0.7
    """... or whose decoder directions are this similar (when the SAE can be found locally)."""
    seed: int = 0
    """Seed of the holdout split and of the choice of examples."""
    examples: bool = True
    """Attach one example document per side to every finding."""
    form: bool = True
    """Also compare how the documents are written, counted from their text (`saeembed.analysis.form`:
    lists, headings, bold, code, questions, `!`, emoji, links, apologies, refusals, person, hedges,
    openings and endings): rates per token at equal length, shares of documents with length ignore."""
    style_min_effect: float = 0.3
    """Style layer (token latents compared as rates): smallest standardized effect of a finding (paired:
    mean / sd of the pairs' differences; unpaired: difference / pooled sd). 0.3 is a small-to-medium
    effect; with hundreds of documents far smaller differences are significant, and say little."""

    @property
    def method(self) -> str:
        """How the latents are compared, in words (for headlines)."""
        if self.length == "ignore":
            return "length ignored"
        if self.measure == "mean":
            return "at equal length: regression on log n_tokens"
        if self.pair_on:
            return "at equal length: conditional logistic regression on the pairs' length ratio"
        return f"at equal length: Mantel-Haenszel within {self.length_bands} length bands"

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise SaeEmbedError(f"unknown measure {self.measure!r}; choose frequency or mean")
        if not 0 < self.alpha < 1:
            raise SaeEmbedError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.length not in LENGTH_MODES:
            raise SaeEmbedError(f"unknown length handling {self.length!r}; choose adjust or ignore")
        if self.length_bands < 2:
            raise SaeEmbedError(f"--length-bands needs at least 2 bands, got {self.length_bands}")
        if not isinstance(self.style_min_effect, (int, float)) or not self.style_min_effect >= 0:
            raise SaeEmbedError(f"style_min_effect (--style-min-effect) is a standardized effect, at least 0; "
                                f"got {self.style_min_effect!r}")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise SaeEmbedError(f"--holdout is the share of documents kept for validation, in (0, 1); "
                                f"got {self.holdout}")


@dataclass
class CorrelationConfig:
    """Which latent pairs are tested and which findings count as trivial. CLI defaults come from here."""

    min_support: int = 10
    """Fewest documents a pair must share to be tested (and a latent must fire in)."""
    min_freq: float = 0.01
    """Frequency band of the latents considered: rarer ones give unstable NPMI ..."""
    max_freq: float = 0.9
    """... and near-ubiquitous ones carry no information."""
    alpha: float = 0.05
    """Largest Benjamini-Hochberg q-value (over all pairs tested) of a finding."""
    max_near_token: float = 0.5
    """Trivial: the two latents peak on the same or adjacent tokens in more than this share of the
    documents they share (one token, or a phrase, firing both)."""
    max_decoder_cosine: float = 0.7
    """Trivial: decoder directions this similar are near-duplicates of one concept."""
    max_label_overlap: float = 0.5
    """Trivial: labels sharing at least this share of their words (Jaccard) say the same thing."""
    block: int = 1024
    """Latents per block of the co-occurrence product (memory ~ block x latents in band)."""
    length_bands: int | None = 10
    """Test pairs among documents of similar length: this many bands (quantiles) of n_tokens, merged
    until each holds enough documents, combined by a Cochran-Mantel-Haenszel test. With max pooling a
    longer document fires more latents, so a length-blind test finds nearly every pair of common
    latents. 1 or None: no stratification (the exact hypergeometric test over all documents). For
    prompt x response pairs the bands are of the response's length; for a categorical column, of the
    document's length."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_freq < self.max_freq <= 1:
            raise SaeEmbedError(f"the frequency band needs 0 <= min_freq < max_freq <= 1; got "
                                f"[{self.min_freq}, {self.max_freq}]")
        if self.min_support < 1 or self.block < 1:
            raise SaeEmbedError("min_support and block must be at least 1")
        if self.length_bands is not None and self.length_bands < 1:
            raise SaeEmbedError(f"length_bands (--length-bands) must be at least 1 (1: do not stratify by "
                                f"length), got {self.length_bands}")


ClusterMethod = Literal["spectral", "hdbscan", "kmeans"]
CLUSTER_METHODS = ("spectral", "hdbscan", "kmeans")


@dataclass
class ClusterConfig:
    """How documents are clustered along the selected concepts. CLI defaults come from here."""

    method: ClusterMethod = "spectral"
    similarity: Literal["weighted", "jaccard"] = "weighted"
    """Spectral affinity: weighted Jaccard of the activations (sum of minima over sum of maxima), or the
    paper's binary Jaccard of which latents fire. HDBSCAN: weighted clusters the activations (in units
    of their 90th percentile), jaccard which latents fire. k-means always uses which latents fire."""
    k: int | None = None
    """Number of clusters (spectral, kmeans); hdbscan finds it."""
    dense_limit: int = 5000
    """Spectral: up to this many documents the full Jaccard matrix, beyond a sparse k-NN graph."""
    neighbors: int = 30
    """Spectral beyond `dense_limit`: neighbours kept per document in the Jaccard graph."""
    min_cluster_size: int = 10
    """HDBSCAN's smallest cluster (and its min_samples)."""
    top_latents: int = 10
    """Distinctive latents listed per cluster."""
    central_docs: int = 3
    """Most central documents shown per cluster."""
    seed: int = 0
    """Seed of k-means and of the spectral embedding."""

    def __post_init__(self) -> None:
        if self.method not in CLUSTER_METHODS:
            raise SaeEmbedError(f"unknown clustering method {self.method!r}; choose {', '.join(CLUSTER_METHODS)}")
        if self.similarity not in ("weighted", "jaccard"):
            raise SaeEmbedError(f"unknown similarity {self.similarity!r}; choose weighted or jaccard")
        at_least("ClusterConfig", "k", self.k, 2, optional=True)
        for name, low in (("dense_limit", 2), ("neighbors", 1), ("min_cluster_size", 2), ("top_latents", 1),
                          ("central_docs", 0)):
            at_least("ClusterConfig", name, getattr(self, name), low)


RiskModel = Literal["l1", "pls"]


@dataclass
class RiskConfig:
    """How a hallucination-risk probe is fitted and evaluated. CLI defaults come from here."""

    model: RiskModel = "l1"
    """l1: L1-regularised logistic regression; pls: partial least squares (as in "From Noise to Narrative")."""
    folds: int = 5
    """Cross-validation folds (stratified; grouped when a group column is given)."""
    c: float = 0.5
    """Inverse regularisation strength of the logistic models."""
    components: int = 5
    """PLS components."""
    min_doc_freq: float = 0.005
    """Latents firing in fewer documents are left out of the features."""
    bootstrap: int = 1000
    """Bootstrap resamples for the AUROC / AP intervals."""
    top_concepts: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("l1", "pls"):
            raise SaeEmbedError(f"unknown probe model {self.model!r}; choose l1 or pls")
        if self.folds < 2:
            raise SaeEmbedError("cross-validation needs at least 2 folds")
