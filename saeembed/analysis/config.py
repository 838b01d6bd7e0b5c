"""Settings of the analyses, kept free of heavy imports so the CLI can take its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from saeembed.errors import ConfigError
from saeembed.settings import check_fields, setting

Measure = Literal["frequency", "mean"]
LengthMode = Literal["adjust", "ignore"]


@dataclass
class DiffConfig:
    """How two (or more) corpora are compared. CLI defaults come from here."""

    measure: Measure = setting("frequency", flag="--measure")
    """frequency: share of documents where the latent fires (the paper); mean: mean pooled activation."""
    alpha: float = setting(0.05, above=0, below=1, flag="--alpha")
    """Largest Benjamini-Hochberg q-value of a finding."""
    min_diff: float = setting(0.03, at_least=0, flag="--min-diff")
    """Smallest |difference| of a finding, in the measure's units (0 keeps every significant latent)."""
    pair_on: str | None = setting(None, flag="--pair-on")
    """A column naming the same item in every corpus (e.g. prompt_id): paired tests (conditional
    logistic or McNemar, paired t)."""
    holdout: float | None = setting(None, above=0, below=1, flag="--holdout")
    """Share of documents (of pairs, when paired) kept out of discovery to check each finding on."""
    length: LengthMode = setting("adjust", flag="--length")
    """adjust: compare documents as if they were of equal length. With max pooling a longer document
    fires more latents, so without this corpora of different lengths differ on almost every latent.
    Unpaired frequencies: Mantel-Haenszel within `length_bands` bands of n_tokens; pairs: conditional
    logistic regression on each pair's log length ratio; means: regression on log n_tokens.
    ignore: compare the documents as they are (the length gap is still reported)."""
    length_bands: int = setting(20, at_least=2, flag="--length-bands")
    """Unpaired frequencies, with length adjust: bands (quantiles of n_tokens over both corpora)."""
    theme_jaccard: float = setting(0.5, at_least=-1, at_most=1)
    """Findings whose latents fire on documents this similar (Jaccard, corrected for chance) share a theme ..."""
    theme_same_peak: float = setting(0.5, at_least=0, at_most=1)
    """... or that peak on the same token in at least this share of the documents they share ..."""
    theme_cosine: float = setting(0.7, at_least=-1, at_most=1)
    """... or whose decoder directions are this similar (when the SAE can be found locally)."""
    seed: int = setting(0, at_least=0, flag="--seed")
    """Seed of the holdout split and of the choice of examples."""
    examples: bool = setting(True)
    """Attach one example document per side to every finding."""
    form: bool = setting(True, flag="--form/--no-form")
    """Also compare how the documents are written, counted from their text (`saeembed.analysis.form`:
    lists, headings, bold, code, questions, `!`, emoji, links, apologies, refusals, person, hedges,
    openings and endings): rates per token at equal length, shares of documents with length ignore."""
    style_min_effect: float = setting(0.3, at_least=0, flag="--style-min-effect")
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
        check_fields(self)


@dataclass
class CorrelationConfig:
    """Which latent pairs are tested and which findings count as trivial. CLI defaults come from here."""

    min_support: int = setting(10, at_least=1, flag="--min-support")
    """Fewest documents a pair must share to be tested (and a latent must fire in)."""
    min_freq: float = setting(0.01, at_least=0, below=1, flag="--min-freq")
    """Frequency band of the latents considered: rarer ones give unstable NPMI ..."""
    max_freq: float = setting(0.9, above=0, at_most=1, flag="--max-freq")
    """... and near-ubiquitous ones carry no information."""
    alpha: float = setting(0.05, above=0, below=1, flag="--alpha")
    """Largest Benjamini-Hochberg q-value (over all pairs tested) of a finding."""
    max_near_token: float = setting(0.5, at_least=0, at_most=1)
    """Trivial: the two latents peak on the same or adjacent tokens in more than this share of the
    documents they share (one token, or a phrase, firing both)."""
    max_decoder_cosine: float = setting(0.7, at_least=-1, at_most=1)
    """Trivial: decoder directions this similar are near-duplicates of one concept."""
    max_label_overlap: float = setting(0.5, at_least=0, at_most=1)
    """Trivial: labels sharing at least this share of their words (Jaccard) say the same thing."""
    block: int = setting(1024, at_least=1)
    """Latents per block of the co-occurrence product (memory ~ block x latents in band)."""
    length_bands: int | None = setting(10, at_least=1, flag="--length-bands")
    """Test pairs among documents of similar length: this many bands (quantiles) of n_tokens, merged
    until each holds enough documents, combined by a Cochran-Mantel-Haenszel test. With max pooling a
    longer document fires more latents, so a length-blind test finds nearly every pair of common
    latents. 1 or None: no stratification (the exact hypergeometric test over all documents). For
    prompt x response pairs the bands are of the response's length; for a categorical column, of the
    document's length."""

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.min_freq < self.max_freq:
            raise ConfigError(f"CorrelationConfig: the frequency band needs min_freq < max_freq (--min-freq, "
                              f"--max-freq); got [{self.min_freq}, {self.max_freq}]")


ClusterMethod = Literal["spectral", "hdbscan", "kmeans"]
CLUSTER_METHODS: tuple[str, ...] = get_args(ClusterMethod)


@dataclass
class ClusterConfig:
    """How documents are clustered along the selected concepts. CLI defaults come from here."""

    method: ClusterMethod = setting("spectral", flag="--method")
    """spectral (on a document similarity graph), hdbscan (finds the number of clusters) or kmeans."""
    similarity: Literal["weighted", "jaccard"] = setting("weighted", flag="--similarity")
    """Spectral affinity: weighted Jaccard of the activations (sum of minima over sum of maxima), or the
    paper's binary Jaccard of which latents fire. HDBSCAN: weighted clusters the activations (in units
    of their 90th percentile), jaccard which latents fire. k-means always uses which latents fire."""
    k: int | None = setting(None, at_least=2, flag="--clusters")
    """Number of clusters (spectral, kmeans); hdbscan finds it."""
    dense_limit: int = setting(5000, at_least=2)
    """Spectral: up to this many documents the full Jaccard matrix, beyond a sparse k-NN graph."""
    neighbors: int = setting(30, at_least=1)
    """Spectral beyond `dense_limit`: neighbours kept per document in the Jaccard graph."""
    min_cluster_size: int = setting(10, at_least=2, flag="--min-cluster-size")
    """HDBSCAN's smallest cluster (and its min_samples)."""
    top_latents: int = setting(10, at_least=1)
    """Distinctive latents listed per cluster."""
    central_docs: int = setting(3, at_least=0)
    """Most central documents shown per cluster."""
    seed: int = setting(0, at_least=0, flag="--seed")
    """Seed of k-means, of the spectral embedding and of the sample (`fit_on`)."""
    fit_on: int = setting(50_000, at_least=10, flag="--fit-on")
    """Spectral and HDBSCAN compare documents with each other, so their cost grows faster than the corpus:
    with more documents carrying the concepts than this, they are fitted on a seeded random sample of this
    many and the others are placed in its clusters as `saeembed assign` places new documents (the result
    says so). k-means fits every document."""

    def __post_init__(self) -> None:
        check_fields(self)


RiskModel = Literal["l1", "pls"]


@dataclass
class RiskConfig:
    """How a hallucination-risk probe is fitted and evaluated. CLI defaults come from here."""

    model: RiskModel = setting("l1", flag="--model")
    """l1: L1-regularised logistic regression; pls: partial least squares (as in "From Noise to Narrative")."""
    folds: int = setting(5, at_least=2, flag="--folds")
    """Cross-validation folds (stratified; grouped when a group column is given)."""
    c: float = setting(0.5, above=0)
    """Inverse regularisation strength of the logistic models."""
    components: int = setting(5, at_least=1)
    """PLS components."""
    min_doc_freq: float = setting(0.005, at_least=0, below=1)
    """Latents firing in fewer documents are left out of the features."""
    bootstrap: int = setting(1000, at_least=0, flag="--bootstrap")
    """Bootstrap resamples for the AUROC / AP intervals."""
    top_concepts: int = setting(20, at_least=1)
    """Concepts listed, strongest first."""
    seed: int = setting(0, at_least=0)
    """Seed of the folds and the bootstrap."""

    def __post_init__(self) -> None:
        check_fields(self)


SearchMode = Literal["sae", "dense", "hybrid"]
FEEDBACK_SUPPORT = 2  # a latent joins the query only when it fires in this many feedback documents (not one stray),
# so feedback needs at least 2 documents


@dataclass
class SearchConfig:
    """How a concept query ranks documents (`saeembed.analysis.search`). CLI defaults come from here."""

    top: int = setting(20, at_least=1, flag="--top")
    """Documents returned, best first (sae mode lists only documents the query's latents fire in)."""
    mode: SearchMode = setting("sae")
    """sae (the paper's scoring, with feedback), dense (sentence-embedding cosine) or hybrid (both, fused by
    reciprocal rank)."""
    k: int = setting(100, at_least=1, flag="--concept-latents")
    """Latents kept per phrase or example of the query, strongest first (feedback may add more)."""
    feedback: int = setting(20, flag="--feedback")  # 0 or >= FEEDBACK_SUPPORT: `check_feedback`
    """Expand the query with the latents of its first this many results (pseudo-relevance feedback, at least
    2); 0: the paper's scoring alone."""
    weak: bool = setting(False, flag="--weak")
    """Also search with the latents of words no label is really about (by default such words select
    nothing)."""

    def __post_init__(self) -> None:
        check_fields(self)
        check_feedback("SearchConfig", self.feedback)


def check_feedback(owner: str, feedback: int) -> None:
    """Feedback is off (0) or at least `FEEDBACK_SUPPORT` documents."""
    if isinstance(feedback, bool) or not isinstance(feedback, int) or feedback < 0 \
            or 0 < feedback < FEEDBACK_SUPPORT:
        raise ConfigError(f"{owner}.feedback (--feedback) = {feedback!r} is not allowed: give 0 (no feedback) or at "
                          f"least {FEEDBACK_SUPPORT} documents (a latent joins the query when {FEEDBACK_SUPPORT} of "
                          f"them share it)")
