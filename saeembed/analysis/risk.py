"""Hallucination-risk probes that read concept patterns ("From Noise to Narrative", Suresh et al. 2025).

Features of a document: its pooled concept vector (log1p) and its concept-count statistics (active
latents per token: mean, max, percentiles; standardised). `fit_risk` cross-validates a probe (L1
logistic regression, or partial least squares with Platt scaling) against baselines on the same folds:
length only, surface form (how the text ends, its sentences, words, digits, capitals, lists: see
`surface`), concept counts alone and a dense-embedding probe. It reports AUROC and average precision with
bootstrap intervals, and the probe's AUROC gain over each baseline, paired over the same resamples, with a
warning when the probe does not beat one.
A fitted probe is linear: weights over latents + count features, an intercept and a logistic link, saved
as safetensors + JSON with the identity of the model and SAE it was fitted on. `Baseline` keeps the
count statistics of a trusted corpus for label-free z-scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from saeembed.analysis.config import RiskConfig, RiskModel
from saeembed.analysis.evaluation import Comparison, Score, evaluate
from saeembed.analysis.summaries import Summary
from saeembed.analysis.surface import LENGTH_FEATURES, SURFACE_FEATURES, standardised, surface_frame
from saeembed.checked import LARGEST, Fields, check_sha256, read_fields, read_safetensors, sha256_hex
from saeembed.errors import ProbeError, SaeEmbedError
from saeembed.store import COMPAT_FIELDS, COUNT_STATS, Store, check_compatible, document_frequency

if TYPE_CHECKING:
    import polars as pl

    from saeembed.labels.store import Labels

PROBE_JSON, PROBE_WEIGHTS, BASELINE_JSON = "probe.json", "probe.safetensors", "baseline.json"
REPORT_JSON = "report.json"
TRUE_VALUES = ("true", "yes", "1", "hallucinated", "hallucination")


@dataclass
class Probe:
    """A linear risk probe: risk = sigmoid(a * (features . weights + intercept) + b)."""

    kind: str
    latents: np.ndarray
    weights: np.ndarray
    """len(latents) latent weights, then one per count feature."""
    intercept: float
    count_mean: np.ndarray
    count_std: np.ndarray
    link: tuple[float, float]
    meta: dict[str, Any]
    """What it was fitted on: the store's model/SAE identity, label column, positive value."""

    def features(self, store: Store) -> Any:
        return features(store, self.latents, self.count_mean, self.count_std)

    def predict(self, store: Store) -> np.ndarray:
        """Risk in [0, 1] per document; refuses a store embedded differently."""
        check_compatible([("the probe", self.meta["store"]), (str(store.path), store.meta)])
        logit = np.asarray(self.features(store) @ self.weights).ravel() + self.intercept
        return 1.0 / (1.0 + np.exp(-(self.link[0] * logit + self.link[1])))

    def save(self, folder: str | Path) -> Path:
        """Write probe.safetensors, then probe.json naming its SHA-256: each file is atomic, and a save
        stopped between the two (or files of two saves mixed) is refused by `load`, not read as one probe."""

        from safetensors.numpy import save

        from saeembed.atomic import write_bytes, write_text

        folder = Path(folder)
        blob = save({"latents": self.latents.astype(np.int64), "weights": self.weights.astype(np.float32),
                     "count_mean": self.count_mean.astype(np.float32),
                     "count_std": self.count_std.astype(np.float32)})
        write_bytes(folder / PROBE_WEIGHTS, blob)
        write_text(folder / PROBE_JSON, json.dumps({"kind": self.kind, "intercept": self.intercept,
                                                    "link": list(self.link), "meta": self.meta,
                                                    "weights_sha256": sha256_hex(blob)}, indent=2))
        return folder

    @staticmethod
    def load(folder: str | Path) -> "Probe":
        """The probe saved in `folder`, checked before use: a missing, damaged or ill-shaped file is one
        ProbeError naming the file and the field."""
        folder = Path(folder)
        head_path, weights_path = folder / PROBE_JSON, folder / PROBE_WEIGHTS
        if not head_path.is_file() or not weights_path.is_file():
            raise ProbeError(f"{folder} is not a probe folder (needs {PROBE_JSON} and {PROBE_WEIGHTS}); "
                             f"fit one with `saeembed risk fit`")
        head = read_fields(head_path, ProbeError, f"The file is damaged: {_PROBE_FIX}")
        kind = head.text("kind", get_args(RiskModel))
        intercept = head.number("intercept")
        link = head.numbers("link", 2)
        meta = head.object("meta")
        d_sae = _fitted_d_sae(meta, head)
        arrays = _read_arrays(weights_path)
        latents = _array(arrays, "latents", weights_path, "iu", None)
        if latents.size and (latents.min() < 0 or latents.max() >= d_sae):
            raise ProbeError(f"{weights_path}: latents holds {int(latents.min())}..{int(latents.max())}, outside "
                             f"0..{d_sae - 1} (meta.store.sae.d_sae = {d_sae} in {PROBE_JSON}); {_PROBE_FIX}")
        weights = _array(arrays, "weights", weights_path, "f", len(latents) + N_COUNT_FEATURES,
                         f"{len(latents)} latents + {N_COUNT_FEATURES} count features")
        count_mean = _array(arrays, "count_mean", weights_path, "f", N_COUNT_FEATURES)
        count_std = _array(arrays, "count_std", weights_path, "f", N_COUNT_FEATURES)
        if (count_std < 1 / LARGEST).any():
            raise ProbeError(f"{weights_path}: count_std holds a value below {1 / LARGEST:g} (it divides the count "
                             f"features); {_PROBE_FIX}")
        _check_pair(head, weights_path)  # last: a damaged file is named for what is wrong in it
        return Probe(kind, latents.astype(np.int64), weights.astype(np.float64), intercept, count_mean, count_std,
                     (link[0], link[1]), meta)


@dataclass
class RiskReport:
    """What `fit_risk` found: the probe's cross-validated scores beside its baselines', whether it beats
    them, and the probe fitted on every document."""

    table: pl.DataFrame
    """polars DataFrame, the probe's row first, then one per baseline: features, role (probe / baseline),
    auroc and ap with 95% bootstrap intervals (out-of-fold over `folds` folds), base_rate, and for the
    baselines gain, gain_low, gain_high, beaten, warning (the `comparisons`)."""
    top_concepts: pl.DataFrame
    """polars DataFrame: latent, label, weight (largest |weight| first) of the probe fitted on everything."""
    probe: Probe
    n_docs: int
    n_positive: int
    probe_score: Score
    baselines: list[Score]
    """Length only, surface form, concept counts only and (with dense vectors) dense embedding."""
    comparisons: list[Comparison]
    """The probe against each baseline, in the order of `baselines`."""
    verdict: Comparison
    """The probe against the best baseline (highest AUROC): does it beat it?"""
    warnings: list[str] = field(default_factory=list)
    """That the probe does no better than chance, then one per informative baseline it does not beat (best
    first): "the probe does not beat the surface form baseline (AUROC 0.938; ...): it may read answer shape,
    not truth". Empty when it beats them all."""
    notes: list[str] = field(default_factory=list)
    y: np.ndarray | None = None
    """The target per document (True: risky), in store order; None when not kept."""
    oof_scores: dict[str, np.ndarray] = field(default_factory=dict)
    """Out-of-fold decision scores per document, by feature set (the probe first, then the baselines, named as
    in `table`): what the AUROCs were computed from, e.g. for ROC curves. Not written by `save`."""
    rows: np.ndarray | None = None
    """The store's documents the probe was fitted on, when unlabelled ones were left out (None: all);
    `y` and `oof_scores` follow these rows."""

    def summary(self) -> RiskSummary:
        """The record every renderer reads (`RiskSummary`)."""
        meta, verdict = self.probe.meta, self.verdict
        return RiskSummary(
            label=str(meta.get("label", "label")), positive=meta.get("positive"), model=self.probe.kind,
            n_docs=self.n_docs, n_positive=self.n_positive, probe_auroc=self.probe_score.auroc,
            beaten=verdict.beaten, best_baseline=verdict.baseline, best_baseline_auroc=verdict.baseline_auroc,
            gain=verdict.gain, gain_low=verdict.gain_low, gain_high=verdict.gain_high,
            warnings=list(self.warnings), notes=list(self.notes))

    def save(self, folder: str | Path) -> Path:
        """Write the probe and `report.json` (the table, verdict, warnings, notes, top concepts) to `folder`."""
        self.probe.save(folder)
        report = {"n_docs": self.n_docs, "n_positive": self.n_positive, "rows": self.table.to_dicts(),
                  "verdict": self.verdict._asdict(), "warnings": self.warnings, "notes": self.notes,
                  "top_concepts": self.top_concepts.to_dicts()}
        from saeembed.atomic import write_text

        write_text(Path(folder) / REPORT_JSON, json.dumps(report, indent=2))
        return Path(folder)


@dataclass(frozen=True)
class RiskSummary(Summary):
    """What `fit_risk` found, as one record (`saeembed.analysis.summaries`)."""

    label: str
    """The column saying which documents are risky."""
    positive: str | None
    model: str
    n_docs: int
    n_positive: int
    probe_auroc: float
    beaten: bool
    """The probe beats the best baseline (the gain's whole 95% interval above 0)."""
    best_baseline: str
    best_baseline_auroc: float
    gain: float
    gain_low: float
    gain_high: float
    warnings: list[str]
    notes: list[str]

    def lines(self) -> list[str]:
        column = self.label + (f" = {self.positive}" if self.positive else "")
        verdict = "beats" if self.beaten else "does not beat"
        return [f"{self.n_docs:,} documents, {self.n_positive:,} risky ({self.n_positive / max(self.n_docs, 1):.1%}; "
                f"column {column}); a {self.model} probe on the concepts and their counts, cross-validated against "
                f"its baselines on the same folds",
                f"the probe (AUROC {self.probe_auroc:.3f}) {verdict} the best baseline ({self.best_baseline}, AUROC "
                f"{self.best_baseline_auroc:.3f}): gain {self.gain:+.3f} [{self.gain_low:+.3f}, {self.gain_high:+.3f}]"]


def labels_of(store: Store, column: str, positive: str | None = None) -> np.ndarray:
    """The binary target: `column` equals `positive` (default: true / yes / 1 / hallucinated)."""
    if column not in store.frame.columns:
        fields = ", ".join(c for c in store.frame.columns if c not in ("text", "n_tokens"))
        raise SaeEmbedError(f"{store.path}: no column {column!r} to learn from; its fields are: {fields}")
    missing = store.frame[column].is_null().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise SaeEmbedError(f"{store.path}: {int(missing.sum()):,} of {store.n_docs:,} documents have no {column!r} "
                            f"(the first: row {first}, id {store.frame['id'][first]!r}); a missing label is not a "
                            f"'no': label them, or leave them out (skip_unlabelled=True, --skip-invalid)")
    values = [str(v).strip().lower() for v in store.frame[column].to_list()]
    wanted = (positive.lower(),) if positive is not None else TRUE_VALUES
    y = np.array([v in wanted for v in values])
    if y.all() or not y.any():
        raise SaeEmbedError(f"{column!r} has a single class here ({len(y)} documents, {int(y.sum())} positive); "
                            f"set positive (--positive VALUE) to say which value means risky")
    return y


def features(store: Store, latents: np.ndarray, count_mean: np.ndarray, count_std: np.ndarray) -> Any:
    """CSR [docs, len(latents) + count features]: log1p pooled activations, standardised counts."""
    import scipy.sparse as sp

    counts = count_features(store)
    concept = store.matrix[:, latents].tocsr()
    concept.data = np.log1p(np.maximum(concept.data, 0))
    return sp.hstack([concept, sp.csr_matrix((counts - count_mean) / count_std)], format="csr")


def count_features(store: Store) -> np.ndarray:
    """[docs, 6]: the concept-count statistics and log1p(active latents in the document)."""
    missing = [name for name in COUNT_STATS if name not in store.frame.columns]
    if missing:
        raise SaeEmbedError(f"{store.path} has no concept-count statistics ({', '.join(missing)}): it was "
                            f"embedded by an older saeembed; embed it again")
    stats = store.frame.select(COUNT_STATS).to_numpy().astype(np.float64)
    return np.column_stack([stats, np.log1p(np.diff(store.matrix.indptr))])


def fit_risk(store: Store, label: str, config: RiskConfig | None = None, *, positive: str | None = None,
             group: str | None = None, labels: Labels | None = None, skip_unlabelled: bool = False) -> RiskReport:
    """Cross-validate a risk probe on `store` and fit the final one on all of it.

    Documents whose `label` is missing (null) are refused, naming the first (they were counted as not
    risky); with `skip_unlabelled` they are left out and the report's notes say how many.

    Examples:
        >>> report = fit_risk(load_store("qa.parquet"), "hallucinated", group="question_id")  # doctest: +SKIP
        >>> report.table, report.probe.save("probe/")  # doctest: +SKIP
    """
    import polars as pl

    from saeembed.labels import labels_for

    config = config or RiskConfig()
    labels = labels if labels is not None else labels_for(store)
    notes, labelled = [], None
    if skip_unlabelled and label in store.frame.columns:
        labelled = np.flatnonzero(store.frame[label].is_not_null().to_numpy())
        if len(labelled) == store.n_docs:
            labelled = None
        else:
            notes.append(f"{store.n_docs - len(labelled):,} of {store.n_docs:,} documents have no {label!r}: left out")
            store = store.take(labelled)
    y = labels_of(store, label, positive)
    groups = _groups(store, group)
    frequency = document_frequency(store.matrix) / store.n_docs
    latents = np.flatnonzero(frequency >= config.min_doc_freq)
    counts = count_features(store)
    mean, std = counts.mean(0), np.where(counts.std(0) > 0, counts.std(0), 1.0)
    x = features(store, latents, mean, std)
    folds = _folds(y, groups, config)
    scores = {f"sae probe ({config.model})": _oof(x, y, folds, config, config.model),
              **_baseline_scores(store, (counts - mean) / std, y, folds, config)}
    if "dense" not in store.frame.columns:
        notes.append("no dense vectors in the store (embed with --dense) : the dense baseline is left out")
    if np.ptp(counts[:, 0]) < 1e-6:
        notes.append("the SAE encodes whole documents: there are no per-token codes, so the count features carry "
                     "no signal with this SAE" if store.meta["sae"].get("reads") == "document" else
                     "every token has the same number of active latents (a TopK SAE): the count features "
                     "carry no signal with this SAE")
    probe = _final_probe(x, y, latents, mean, std, folds, config, store, label, positive)
    weights = probe.weights[: len(latents)]
    order = np.argsort(-np.abs(weights))[: config.top_concepts]
    order = order[weights[order] != 0]
    top = pl.DataFrame({"latent": latents[order].astype(np.int32), "weight": weights[order].astype(np.float64),
                        "label": pl.Series([labels.get(int(i)) for i in latents[order]], dtype=pl.Utf8)})
    judged = evaluate(scores, y, groups, config)
    return RiskReport(judged.table, top, probe, store.n_docs, int(y.sum()), judged.probe, judged.baselines,
                      judged.comparisons, judged.verdict, judged.warnings, notes, y=y, oof_scores=scores,
                      rows=labelled)


def _baseline_scores(store: Store, counts: np.ndarray, y: np.ndarray, folds: list,
                     config: RiskConfig) -> dict[str, np.ndarray]:
    """Out-of-fold scores of the baselines (L2 logistic regressions on the probe's folds), by name:
    length only, surface form, concept counts only (`counts`: standardised) and, with dense vectors, dense."""
    shape = surface_frame(store.frame["text"], store.frame["n_tokens"].to_numpy())
    scores = {"length only": _oof(standardised(shape, LENGTH_FEATURES), y, folds, config, "l2"),
              "surface form": _oof(standardised(shape, SURFACE_FEATURES), y, folds, config, "l2"),
              "concept counts only": _oof(counts, y, folds, config, "l2")}
    if "dense" in store.frame.columns:
        dense = np.asarray(store.frame["dense"].to_numpy(), np.float64)
        scores["dense embedding"] = _oof(dense, y, folds, config, "l2")
    return scores


def _groups(store: Store, group: str | None) -> np.ndarray | None:
    if group is None:
        return None
    if group not in store.frame.columns:
        raise SaeEmbedError(f"{store.path}: no column {group!r} to group folds by")
    return store.frame[group].cast(str).to_numpy()


def _folds(y: np.ndarray, groups: np.ndarray | None, config: RiskConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(min(y.sum(), (~y).sum()))
    units = len(np.unique(groups)) if groups is not None else len(y)
    if smallest < config.folds or units < config.folds:
        raise SaeEmbedError(f"{config.folds}-fold cross-validation needs at least {config.folds} documents of each "
                            f"class and {config.folds} groups; the smaller class has {smallest}"
                            + (f", there are {units} groups" if groups is not None else "") + "; lower --folds")
    if groups is not None:  # the same question never sits in both training and test folds
        splitter = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _model(kind: str, config: RiskConfig) -> Any:
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import LogisticRegression

    if kind == "pls":
        return PLSRegression(n_components=config.components, scale=False)
    # l1_ratio (sklearn >= 1.8) says the penalty: 1 = lasso, 0 = ridge
    return LogisticRegression(l1_ratio=1.0 if kind == "l1" else 0.0, C=config.c, solver="liblinear",
                              class_weight="balanced", max_iter=2000)


def _decision(model: Any, x: Any) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return model.decision_function(x)
    return np.asarray(model.predict(_dense(x))).ravel()


def _dense(x: Any) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _fit(kind: str, x: Any, y: np.ndarray, config: RiskConfig) -> Any:
    model = _model(kind, config)
    return model.fit(_dense(x) if kind == "pls" else x, y.astype(float) if kind == "pls" else y)


def _oof(x: Any, y: np.ndarray, folds: list, config: RiskConfig, kind: str) -> np.ndarray:
    """Out-of-fold scores: each document scored by a model that never saw it."""
    scores = np.zeros(len(y))
    for train, test in folds:
        scores[test] = _decision(_fit(kind, x[train], y[train], config), x[test])
    return scores


def _final_probe(x: Any, y: np.ndarray, latents: np.ndarray, mean: np.ndarray, std: np.ndarray, folds: list,
                 config: RiskConfig, store: Store, label: str, positive: str | None) -> Probe:
    """The probe fitted on every document, as linear weights; PLS gets a Platt link from its OOF scores."""
    from sklearn.linear_model import LogisticRegression

    model = _fit(config.model, x, y, config)
    if config.model == "pls":
        # PLS predicts affinely; read its weights off the unit vectors rather than sklearn internals.
        zero = float(np.ravel(model.predict(np.zeros((1, x.shape[1]))))[0])
        weights = np.ravel(model.predict(np.eye(x.shape[1]))) - zero
        platt = LogisticRegression().fit(_oof(x, y, folds, config, "pls").reshape(-1, 1), y)
        intercept, link = zero, (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
    else:
        weights, intercept, link = model.coef_.ravel(), float(model.intercept_[0]), (1.0, 0.0)
    identity = {key[0]: store.meta.get(key[0]) for key in COMPAT_FIELDS}
    meta = {"store": identity, "label": label, "positive": positive, "fitted_on": str(store.path),
            "n_docs": store.n_docs, "n_positive": int(y.sum())}
    return Probe(config.model, latents, np.asarray(weights, np.float64), intercept, mean, std, link, meta)


def score_risk(store: Store, probe: Probe | None = None, baseline: "Baseline | None" = None, *,
               labels: Labels | None = None, top: int = 3) -> pl.DataFrame:
    """polars DataFrame: id, risk (with a probe), the concepts that pushed it up, and z-scores of the
    concept-count statistics against a trusted corpus (with a baseline)."""
    import polars as pl

    from saeembed.labels import labels_for

    if probe is None and baseline is None:
        raise SaeEmbedError("score needs a probe (--probe) or a baseline (--baseline), or both")
    out = store.frame.select("id")
    if probe is not None:
        labels = labels if labels is not None else labels_for(store)
        risk = probe.predict(store)
        x = probe.features(store)
        push = x.data * probe.weights[x.indices]  # each feature's contribution to the logit
        pushed = []
        for row in range(store.n_docs):
            start, stop = x.indptr[row], x.indptr[row + 1]
            strongest = start + np.argsort(-push[start:stop])[:top]
            columns = [int(c) for c, p in zip(x.indices[strongest], push[strongest])
                       if p > 0 and c < len(probe.latents)]  # latent features only, not the counts
            pushed.append(" | ".join(f"{int(probe.latents[c])} {labels.get(int(probe.latents[c])) or ''}".strip()
                                     for c in columns))
        out = out.with_columns(risk=pl.Series(risk), pushed_up_by=pl.Series(pushed, dtype=pl.Utf8))
    if baseline is not None:
        out = pl.concat([out, baseline.zscores(store)], how="horizontal")
    return out.with_columns(text=store.frame["text"])


@dataclass
class Baseline:
    """Concept-count statistics of a trusted corpus: means and standard deviations."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    meta: dict[str, Any]

    @staticmethod
    def fit(store: Store) -> "Baseline":
        counts = count_features(store)
        if store.n_docs and (counts.std(0) == 0).all():
            # a document-level SAE gives every document k latents and keeps no per-token codes: every
            # z-score would be 0 (every row printed 0.000)
            why = ("encodes whole documents" if store.meta["sae"].get("reads") == "document"
                   else "gives every token as many latents")
            raise ProbeError(f"{store.path}: every document has the same concept counts (the SAE {why}), so a "
                             f"baseline cannot tell documents apart; embed with a per-token SAE (e.g. the preset "
                             f"minilm-l3-tokens), or fit a probe on labelled documents")
        identity = {key[0]: store.meta.get(key[0]) for key in COMPAT_FIELDS}
        return Baseline([*COUNT_STATS, "log_active_latents"], counts.mean(0),
                        np.where(counts.std(0) > 0, counts.std(0), 1.0),
                        {"store": identity, "fitted_on": str(store.path), "n_docs": store.n_docs})

    def zscores(self, store: Store) -> Any:
        """z of each statistic, and `z_risk`, their mean: how far a document's concept counts sit above
        the trusted corpus (unsupervised risk)."""
        import polars as pl

        check_compatible([("the baseline", self.meta["store"]), (str(store.path), store.meta)])
        z = (count_features(store) - self.mean) / self.std
        return pl.DataFrame({**{f"z_{name}": z[:, i] for i, name in enumerate(self.names)}, "z_risk": z.mean(1)})

    def save(self, folder: str | Path) -> Path:
        from saeembed.atomic import write_text

        folder = Path(folder)
        write_text(folder / BASELINE_JSON, json.dumps({"names": self.names, "mean": self.mean.tolist(),
                                                       "std": self.std.tolist(), "meta": self.meta}, indent=2))
        return folder

    @staticmethod
    def load(folder: str | Path) -> "Baseline":
        """The baseline saved in `folder`, checked before use: a missing, damaged or ill-shaped file is one
        ProbeError naming the file and the field."""
        path = Path(folder) / BASELINE_JSON
        if not path.is_file():
            raise ProbeError(f"{folder} is not a baseline folder (no {BASELINE_JSON}); make one with "
                             f"`saeembed risk baseline trusted.parquet -o {folder}`")
        head = read_fields(path, ProbeError, f"The file is damaged: {_BASELINE_FIX}")
        names = head.data.get("names")
        if names != COUNT_FEATURES:
            head.refuse("names", names, f"the count features {', '.join(COUNT_FEATURES)} (it may come from "
                                        f"another saeembed version)")
        mean = np.array(head.numbers("mean", N_COUNT_FEATURES))
        std = np.array(head.numbers("std", N_COUNT_FEATURES))
        if (std < 1 / LARGEST).any():
            head.refuse("std", head.data["std"], f"standard deviations >= {1 / LARGEST:g}")
        meta = head.object("meta")
        if not isinstance(meta.get("store"), dict):
            head.refuse("meta.store", meta.get("store"), "a JSON object (the identity of the store it was made on)")
        return Baseline(list(names), mean, std, meta)


# -- reading saved probes and baselines -------------------------------------------------------------

COUNT_FEATURES = [*COUNT_STATS, "log_active_latents"]
"""The count features `count_features` returns, in order."""
N_COUNT_FEATURES = len(COUNT_FEATURES)
_PROBE_FIX = "fit the probe again with `saeembed risk fit`"
_BASELINE_FIX = "make the baseline again with `saeembed risk baseline`"


def _fitted_d_sae(meta: dict[str, Any], head: Fields) -> int:
    """The width of the SAE the probe was fitted on (`meta.store.sae.d_sae`): its latents index below it."""
    store = meta.get("store")
    if not isinstance(store, dict):
        head.refuse("meta.store", store, "a JSON object (the identity of the store it was fitted on)")
    sae = store.get("sae")
    d_sae = sae.get("d_sae") if isinstance(sae, dict) else None
    if isinstance(d_sae, bool) or not isinstance(d_sae, int) or d_sae < 1:
        head.refuse("meta.store.sae.d_sae", d_sae, "the width of the SAE it was fitted on, a whole number >= 1")
    return d_sae


def _check_pair(head: Fields, weights_path: Path) -> None:
    """The weights file is the one probe.json was saved with (probes saved before the checksum have none)."""
    if head.get("weights_sha256") is not None:
        check_sha256(head, "weights_sha256", weights_path)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    return read_safetensors(path, ProbeError, f"the file is truncated or damaged: {_PROBE_FIX}")


def _array(arrays: dict[str, np.ndarray], name: str, path: Path, kinds: str, length: int | None,
           meaning: str = "") -> np.ndarray:
    """Array `name` of a probe's weights file, refused unless 1-D, of `length`, of a dtype kind in `kinds`
    (f: floating point, i/u: integer) and finite."""
    if name not in arrays:
        raise ProbeError(f"{path}: no array {name!r} (it holds {', '.join(sorted(arrays)) or 'none'}); "
                         f"{_PROBE_FIX}")
    array = arrays[name]
    if array.dtype.kind not in kinds:
        what = "floating point" if kinds == "f" else "integers"
        raise ProbeError(f"{path}: {name} has dtype {array.dtype}; expected {what}; {_PROBE_FIX}")
    if array.ndim != 1 or (length is not None and len(array) != length):
        expected = f"[{length}]" + (f" ({meaning})" if meaning else "") if length is not None else "1-D"
        raise ProbeError(f"{path}: {name} has shape {list(array.shape)}; expected {expected}; {_PROBE_FIX}")
    if kinds == "f":
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ProbeError(f"{path}: {name} holds {int((~np.isfinite(array)).sum())} non-finite values (NaN or "
                             f"inf); a probe with them scores every document NaN: {_PROBE_FIX}")
        if (np.abs(array) > LARGEST).any():
            raise ProbeError(f"{path}: {name} holds values beyond ±{LARGEST:g}, which no fitted probe has (sums "
                             f"of them overflow to NaN); {_PROBE_FIX}")
    return array
