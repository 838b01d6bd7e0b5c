"""Meaning evaluation: do the SAE embeddings and the analyses find content rather than length and form?
Prints one JSON object (`--out FILE` also writes it). Corpora are read from ../shared/data (never copied).

    python benchmarks/meaning.py --out /tmp/meaning.json      # offline default; ~10-20 min cold on 2 CPUs
    python benchmarks/meaning.py --only labels,risk           # a subset of sections
    python benchmarks/meaning.py --preset NAME | --model M --sae S [--layer L]
    python benchmarks/meaning.py --cache DIR --seed 0         # vectors cached in DIR (default below)

Every analysis runs with the library's DEFAULT settings (DiffConfig(), ClusterConfig(k=...),
RiskConfig()), so changes to the defaults show up here; fields a result may gain later are read with
getattr and reported when present (`new_fields`). Samples are seeded per section, so `--only` runs
give the same figures as a full run. The cache folder also holds the user label store: only the
labels shipped with the SAE are used unless labels are saved there.

Sections and what they want:
(a) repackaging_null: agnews, 600 single documents vs 600 made of two other documents joined:
    same content, different packaging. Default diff: findings <= 5.
(b) concise_vs_verbose: alpacaeval gpt4_1106_preview concise vs verbose, paired on prompt_id, holdout
    0.5: 5 <= findings <= 300, replication >= 0.7; top labels each way; length/theme fields if any.
(c) matched_length_content: agnews World/Sports, Business/Sci-Tech, tweeteval sentiment pos/neg,
    stance against/favor: top-10 findings each way on discovery halves score the held-out halves
    (#A latents present - #B latents present): AUROC >= 0.85 each. With a style companion,
    `all_layers_auroc`: every finding of the whole diff (form, style, content) on the discovery half,
    fitted there (as (i) fits them) and scored on the held-out half; stance should rise above 0.61.
(d) property_search: quality.py's queries: SAE MAP >= dense MAP, hybrid >= 1.03 x dense; Spearman of
    the scores with n_tokens (lower is better); `sae_minus_dense`: the per-query differences' mean, its
    interval (queries resampled) and Wilcoxon p.
(e) clustering_axes: agnews topic (k=4) ARI >= 0.5, tweet sentiment (k=2) ARI >= 0.35, clustering
    along concepts selected by words; kmeans and every latent for comparison.
(f) labels: share of labels with a role word (assistant/human/user/system) <= 1%; label scores.
(g) risk: halueval QA probe AUROC vs the report's baselines and the harness's length-only and
    surface-form baselines (same kind of grouped 5-fold CV): the probe should beat them.
(h) length_dependence: Spearman of active latents vs n_tokens on tweets + news + GPT-4 answers (lower
    is better) and mean active latents per source.
(i) model_comparison: AlpacaEval, GPT-4 vs Claude 2.1, Llama-2-70B, Mixtral, davinci-003, and concise vs
    verbose, paired on prompt_id, holdout 0.5: 5 <= findings (form + style + content latents) <= 300,
    replication >= 0.7, and the findings of half the prompts tell the author of a held-out answer better
    than length (AUROC gain >= 0.05; `gain_interval`: its 95% interval, held-out prompts resampled);
    `findings_before`: the same diff without the form and style layers.
With a preset that has a style companion (the default's `smollm2-style`), every diff of (a), (b), (i)
and (j) has the style layer too (`--no-style`: without it).
(j) random_halves_null: 20 random halves of GPT-4 answers, tweets and news: <= 2 splits with any finding.
(k) drift: agnews with dates planted so Sports grows from ~10% to ~40% of the articles: >= 5 findings, the
    rising ones sports concepts and the falling ones not (precision >= 0.9); shuffled dates: no finding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import CORPORA, QUERIES, TEST_QUERIES, average_precision, build_corpus, sae_search_scores  # noqa: E402

from saeembed.analysis.cluster import cluster  # noqa: E402
from saeembed.analysis.concepts import select_concepts  # noqa: E402
from saeembed.analysis.config import ClusterConfig, CorrelationConfig, DiffConfig, RiskConfig  # noqa: E402
from saeembed.analysis.diff import diff  # noqa: E402
from saeembed.analysis.risk import fit_risk  # noqa: E402
from saeembed.analysis.search import dense_scores, reciprocal_rank_fusion  # noqa: E402
from saeembed.embedding.open_store import open_store  # noqa: E402
from saeembed.embedding.presets import resolve_config, style_config  # noqa: E402
from saeembed.labels import labels_for  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SECTIONS = ("repackaging_null", "concise_vs_verbose", "matched_length_content", "property_search",
            "clustering_axes", "labels", "risk", "length_dependence", "model_comparison", "random_halves_null",
            "drift")
DIFF_FIELDS = {"table", "names", "sizes", "config", "n_tested", "n_unpaired", "replication_rate",
               "discovery_sizes", "mean_tokens", "n_tokens"}  # DiffResult's fields when this harness was written
# (n_tokens, the length distributions for the HTML report, came later; mean_tokens summarises them)
ROLE_WORD = re.compile(r"\b(assistant|human|user|system)\b", re.IGNORECASE)


def code_state() -> dict:
    """The commit and whether saeembed/ has uncommitted edits, read when the library is imported (others edit
    the working tree while a run goes on; the running process keeps what it imported)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--short", "--", "saeembed"], capture_output=True, text=True).stdout
    return {"commit": head, "saeembed_uncommitted": sorted(line[3:] for line in dirty.splitlines())}


class Run:
    """The embedding config (and its style companion's: diff's "how it is written" layer, None when the preset
    has none or `--no-style`), a temporary folder for sampled corpora, the seed, and the first store's meta."""

    def __init__(self, config, tmp: Path, seed: int, style_config=None):
        self.config, self.tmp, self.seed, self.meta = config, tmp, seed, None
        self.style_config = style_config
        self.code = code_state()

    def rng(self, section: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(section.encode())])

    def store(self, name: str, rows: list[dict], config=None):
        """Embed `rows` (all fields kept) through the cache; deterministic content, so re-runs are free."""
        path = self.tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        store = open_store(path, config or self.config)
        self.meta = self.meta or store.meta
        return store

    def stores(self, name: str, rows: list[dict]) -> tuple:
        """(content store, style store or None) of the same rows."""
        content = self.store(name, rows)
        return content, (self.store(name, rows, self.style_config) if self.style_config else None)

    def diff(self, pairs: list[tuple], config, names: list[str]):
        """diff of [(content, style), ...] with the style layer when every side has a style store."""
        content, style = [p[0] for p in pairs], [p[1] for p in pairs]
        return diff(content[0], content[1:], config, names=names,
                    style=style if all(s is not None for s in style) else None)


def read_jsonl(rel: str, **where) -> list[dict]:
    """Rows of a shared data file with non-empty text and the given field values."""
    with open(DATA / rel, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r for r in rows if str(r.get("text") or "").strip() and all(r.get(k) == v for k, v in where.items())]


def sample(rows: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """Up to n rows, seeded, in file order."""
    return rows if len(rows) <= n else [rows[i] for i in np.sort(rng.choice(len(rows), n, replace=False))]


def summarise(value, limit: int = 20):
    """A JSON-friendly, size-limited view of an unknown result field."""
    if hasattr(value, "_asdict"):  # NamedTuple
        return {k: summarise(v) for k, v in value._asdict().items()}
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, pl.DataFrame):
        return {"columns": value.columns, "rows": value.height, "head": value.head(5).to_dicts()}
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.size <= limit else {"shape": list(value.shape)}
    if isinstance(value, dict) and len(value) > limit:
        return {"type": "dict", "len": len(value)}
    if isinstance(value, (list, tuple)):
        if len(value) > limit:
            return {"type": type(value).__name__, "len": len(value), "head": [summarise(v) for v in value[:5]]}
        return [summarise(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: summarise(v) for k, v in vars(value).items()}
    return value


def new_fields(obj, known: set[str], candidates: tuple[str, ...] = ()) -> dict:
    """Fields of `obj` beyond `known`, plus named attributes (properties) that exist and are not None."""
    found = {k: v for k, v in vars(obj).items() if k not in known and v is not None}
    found.update({k: getattr(obj, k, None) for k in candidates if getattr(obj, k, None) is not None})
    return {k: summarise(v) for k, v in found.items()}


def top_labels(result, n: int = 10) -> dict[str, list[str]]:
    """The first n findings each way, in the table's order."""
    f, (a, b) = result.findings, result.names[:2]
    fmt = lambda r: f"{r['latent']}: {r['label']} ({r['diff']:+.3f})"  # noqa: E731
    return {f"more_in_{a}": [fmt(r) for r in f.filter(pl.col("diff") > 0).head(n).iter_rows(named=True)],
            f"more_in_{b}": [fmt(r) for r in f.filter(pl.col("diff") < 0).head(n).iter_rows(named=True)]}


def n_findings(result) -> int:
    """Findings of every layer (form features and latents; latents alone before the form layer)."""
    return getattr(result, "n_findings", result.findings.height)


def diff_summary(result) -> dict:
    findings = result.findings
    form = getattr(result, "form_findings", None)
    style = getattr(result, "style", None)
    return {"sizes": list(result.sizes), "latents_tested": result.n_tested, "findings": n_findings(result),
            "latent_findings": findings.height, "form_findings": None if form is None else form.height,
            "form_replication_rate": getattr(result, "form_replication_rate", None),
            "style_findings": None if style is None else result.style_findings.height,
            "style_themes": None if style is None else result.style_themes.height,
            "style_replication_rate": getattr(result, "style_replication_rate", None),
            "more_in_a": int((findings["diff"] > 0).sum()), "more_in_b": int((findings["diff"] < 0).sum()),
            "replication_rate": result.replication_rate, "mean_tokens": [round(t, 1) for t in result.mean_tokens],
            "tests": sorted(set(result.table["test"].to_list())) if "test" in result.table.columns else None,
            "new_fields": new_fields(result, DIFF_FIELDS, ("notes", "warnings", "length_note", "themes"))}


def auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, score)), 3) if 0 < y.sum() < len(y) else None


def gain_interval(y: np.ndarray, with_findings: np.ndarray, length_only: np.ndarray, groups: np.ndarray,
                  rounds: int = 1000, seed: int = 0) -> list[float]:
    """95% interval of AUROC(with_findings) - AUROC(length_only) on the same answers, the held-out prompts
    resampled (`groups`: both answers to a prompt go together), so a gain near its bar says whether it is short
    of it or within the noise of ~400 prompts. The library's paired bootstrap (`saeembed.analysis.evaluation`,
    what `risk` judges its probe with)."""
    from saeembed.analysis.evaluation import evaluate

    judged = evaluate({"findings + length": with_findings, "length only": length_only}, y.astype(bool), groups,
                      RiskConfig(bootstrap=rounds, seed=seed))
    gain = judged.comparisons[0]
    return [round(gain.gain_low, 3), round(gain.gain_high, 3)]


def paired_map_difference(first: list[float], second: list[float], rounds: int = 10000, seed: int = 0) -> dict:
    """first - second mean AP over the same queries: the difference, its 95% interval by resampling queries,
    and the Wilcoxon signed-rank p (a handful of queries decide a MAP; this says how firmly)."""
    from scipy.stats import wilcoxon

    diff = np.asarray(first) - np.asarray(second)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(axis=1)
    return {"difference": round(float(diff.mean()), 3),
            "interval": [round(float(q), 3) for q in np.quantile(means, [0.025, 0.975])],
            "wilcoxon_p": round(float(wilcoxon(diff).pvalue), 3) if np.any(diff) else 1.0,
            "queries_better": int((diff > 0).sum()), "queries_worse": int((diff < 0).sum())}


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if np.isnan(rho) else round(float(rho), 3)


def top_style(result, n: int = 8) -> list[str]:
    """The strongest style themes: lead label (quality) and rates per 1,000 tokens."""
    themes = getattr(result, "style_themes", None)
    if themes is None:
        return []
    return [f"{r['label']} ({r.get('label_score') or 0:.2f}; more in {r['more_in']}, {r['mean_a']:.1f} vs "
            f"{r['mean_b']:.1f})" for r in themes.head(n).iter_rows(named=True)]


def combined_replication(result) -> float | None:
    """Share of all findings (form, style and content latents) that replicate on the held-out documents."""
    parts = [(result.findings.height, result.replication_rate)]
    form = getattr(result, "form_findings", None)
    if form is not None:
        parts.append((form.height, result.form_replication_rate))
    if getattr(result, "style", None) is not None:
        parts.append((result.style_findings.height, result.style_replication_rate))
    total = sum(n for n, rate in parts if rate is not None)
    return sum(n * rate for n, rate in parts if rate is not None) / total if total else None


# -- sections ---------------------------------------------------------------------------------------

def repackaging_null(run: Run) -> dict:
    rows = sample(read_jsonl("agnews/test.jsonl"), 1800, run.rng("repackaging_null"))
    single, rest = rows[:600], rows[600:]
    joined = [{**x, "id": f"{x['id']}+{y['id']}", "text": f"{x['text']} {y['text']}",
               "topic": f"{x['topic']}+{y['topic']}"} for x, y in zip(rest[0::2], rest[1::2])]
    result = run.diff([run.stores("agnews_single", single), run.stores("agnews_joined", joined)], DiffConfig(),
                      names=["single", "joined"])
    return {**diff_summary(result), "top_labels": top_labels(result), "top_style": top_style(result),
            "want": "findings <= 5",
            "ok": n_findings(result) <= 5}


def concise_vs_verbose(run: Run) -> dict:
    sides = {k: read_jsonl(f"alpacaeval/gpt4_1106_preview_{k}.jsonl") for k in ("concise", "verbose")}
    result = run.diff([run.stores(k, rows) for k, rows in sides.items()], DiffConfig(pair_on="prompt_id", holdout=0.5),
                      names=list(sides))
    out = diff_summary(result)
    n, rate = out["findings"], combined_replication(result)
    return {**out, "token_ratio_verbose_over_concise": round(result.mean_tokens[1] / result.mean_tokens[0], 2),
            "table_columns": result.table.columns, "top_labels": top_labels(result),
            "want": "5 <= findings <= 300, replication >= 0.7", "ok": 5 <= n <= 300 and (rate or 0) >= 0.7}


COMPARISONS = [  # name, file, field, value A, value B
    ("agnews_world_vs_sports", "agnews/test.jsonl", "topic", "World", "Sports"),
    ("agnews_business_vs_scitech", "agnews/test.jsonl", "topic", "Business", "Sci/Tech"),
    ("tweets_positive_vs_negative", "tweeteval/sentiment.jsonl", "label", "positive", "negative"),
    ("stance_against_vs_favor", "tweeteval/stance.jsonl", "label", "against", "favor"),
]


def matched_length_content(run: Run) -> dict:
    out = {}
    for name, file, field, value_a, value_b in COMPARISONS:
        rng = run.rng(f"matched_length_content/{name}")
        both = [run.stores(f"{name}_{v}".replace("/", "-"), sample(read_jsonl(file, **{field: v}), 800, rng))
                for v in (value_a, value_b)]
        stores, styles = [b[0] for b in both], [b[1] for b in both]
        halves = [np.array_split(rng.permutation(s.n_docs), 2) for s in stores]
        result = diff(*(s.take(np.sort(h[0])) for s, h in zip(stores, halves)), DiffConfig(), names=[value_a, value_b])
        findings = result.findings
        top_a = findings.filter(pl.col("diff") > 0).head(10)["latent"].to_numpy()
        top_b = findings.filter(pl.col("diff") < 0).head(10)["latent"].to_numpy()
        held = [s.take(np.sort(h[1])) for s, h in zip(stores, halves)]

        def present(store, latents):
            return np.asarray((store.matrix[:, latents] > 0).sum(axis=1)).ravel() if len(latents) else 0

        score = np.concatenate([present(h, top_a) - present(h, top_b) + np.zeros(h.n_docs) for h in held])
        y = np.r_[np.ones(held[0].n_docs), np.zeros(held[1].n_docs)]
        tokens = np.concatenate([h.frame["n_tokens"].to_numpy() for h in held])
        layers = {}
        if run.style_config is not None:  # the whole diff a user sees: form, style and content findings
            pairs = [[(s.take(np.sort(h[i])), t.take(np.sort(h[i]))) for s, t, h in zip(stores, styles, halves)]
                     for i in (0, 1)]
            found = run.diff(pairs[0], DiffConfig(), names=[value_a, value_b])
            fit = findings_fit(found, pairs[0], pairs[1])
            layers = {"all_layers_findings": fit["discovery_findings"], "all_layers_auroc": fit["predict_auroc"]}
        out[name] = {"docs": [s.n_docs for s in stores], "findings": findings.height,
                     "top_used": [len(top_a), len(top_b)], "auroc": auroc(y, score),
                     "length_only_auroc": auroc(y, tokens), **layers,
                     "mean_tokens": [round(float(s.frame["n_tokens"].mean()), 1) for s in stores],
                     "top_labels": top_labels(result, 5)}
    aurocs = [v["auroc"] if v["auroc"] is not None else 0.5 for v in out.values()]
    return {"mean_auroc": round(float(np.mean(aurocs)), 3), "comparisons": out, "want": "each auroc >= 0.85",
            "ok": min(aurocs) >= 0.85}


def property_search(run: Run) -> dict:
    """(d) on the queries the search settings were tuned on (`tuning`) and on queries written afterwards and
    never tuned on (`test`, the figure that counts)."""
    stores = {name: open_store(build_corpus(name, run.tmp), run.config) for name in CORPORA}
    run.meta = run.meta or next(iter(stores.values())).meta
    rows = {name: store.frame.to_dicts() for name, store in stores.items()}
    out = {}
    for half, queries in (("tuning", QUERIES), ("test", TEST_QUERIES)):
        per_query = []
        for corpus, query, is_relevant in queries:
            store = stores[corpus]
            relevant = np.array([bool(is_relevant(r)) for r in rows[corpus]])
            tokens = store.frame["n_tokens"].to_numpy()
            sae = sae_search_scores(store, query)  # as search() ranks
            dense = dense_scores(store, query)
            hybrid = reciprocal_rank_fusion([sae, dense], np.arange(store.n_docs), positive_only=(0,))
            per_query.append({"corpus": corpus, "query": query, "docs": store.n_docs,
                              "relevant": int(relevant.sum()),
                              **{f"{m}_ap": round(average_precision(s, relevant), 3)
                                 for m, s in (("sae", sae), ("dense", dense), ("hybrid", hybrid))},
                              "sae_rho_tokens": spearman(sae, tokens), "dense_rho_tokens": spearman(dense, tokens)})
        mean = {k: round(float(np.nanmean([q[k] if q[k] is not None else np.nan for q in per_query])), 3)
                for k in ("sae_ap", "dense_ap", "hybrid_ap", "sae_rho_tokens", "dense_rho_tokens")}
        out[half] = {"queries": len(per_query), "sae_map": mean["sae_ap"], "dense_map": mean["dense_ap"],
                     "hybrid_map": mean["hybrid_ap"],
                     "sae_minus_dense": paired_map_difference([q["sae_ap"] for q in per_query],
                                                              [q["dense_ap"] for q in per_query]),
                     "mean_sae_rho_tokens": mean["sae_rho_tokens"],
                     "mean_dense_rho_tokens": mean["dense_rho_tokens"], "per_query": per_query}
    test = out["test"]
    ok = test["sae_map"] >= test["dense_map"] and test["hybrid_map"] >= 1.03 * test["dense_map"]
    return {**out, "want": "on the test queries: sae >= dense, hybrid >= 1.03 x dense", "ok": ok}


def clustering_axes(run: Run) -> dict:
    from sklearn.metrics import adjusted_rand_score

    rng = run.rng("clustering_axes")
    tweets = [r for v in ("positive", "negative") for r in sample(read_jsonl("tweeteval/sentiment.jsonl", label=v),
                                                                   500, rng)]
    axes = {"strong_agnews_topic": (run.store("cluster_agnews", sample(read_jsonl("agnews/test.jsonl"), 1000, rng)),
                                    "topic", 4, "world politics, sports, business economy, science technology", 0.5),
            "weak_tweet_sentiment": (run.store("cluster_sentiment", tweets), "label", 2,
                                     "happy, love, great, sad, angry, hate", 0.35)}
    out = {}
    for name, (store, field, k, words, want) in axes.items():
        truth = store.frame[field].to_numpy()
        concepts = select_concepts(words, store)
        row = {"docs": store.n_docs, "k": k, "words": words, "latents_selected": len(concepts)}
        for tag, chosen in (("concepts", concepts), ("all_latents", None)):
            for method in ("spectral", "kmeans"):
                result = cluster(store, chosen, ClusterConfig(k=k, method=method))
                assigned = result.assignments["cluster"].to_numpy()
                row[f"{tag}_{method}_ari"] = round(float(adjusted_rand_score(truth, assigned)), 3)
                if tag == "concepts" and method == "spectral":
                    row["share_without_concept"] = round(float((assigned == -1).mean()), 3)
                    row["notes"] = result.notes
        row.update(want=f"concepts_spectral_ari >= {want}", ok=row["concepts_spectral_ari"] >= want)
        out[name] = row
    return out


def labels_section(run: Run) -> dict:
    store = run.store("labels_probe", read_jsonl("agnews/test.jsonl")[:20])
    labels = labels_for(store)
    texts = labels.label
    role = sorted(i for i, t in texts.items() if t and ROLE_WORD.search(t))
    scores = np.array([s for s in labels.score.values() if s is not None], dtype=float)
    picks = run.rng("labels").choice(sorted(texts), min(10, len(texts)), replace=False) if texts else []
    share = len(role) / max(len(texts), 1)
    return {"d_sae": labels.d_sae, "labels": len(texts),
            "sources": {s: list(labels.source.values()).count(s) for s in set(labels.source.values())},
            "role_word_labels": len(role), "role_word_share": round(share, 4),
            "role_word_examples": [f"{i}: {texts[i]}" for i in role[:8]],
            "scored": len(scores), "score_mean": round(float(scores.mean()), 3) if len(scores) else None,
            "score_median": round(float(np.median(scores)), 3) if len(scores) else None,
            "examples": [f"{i}: {texts[i]} (score {_round(labels.score.get(int(i)))})" for i in sorted(picks)],
            "new_fields": new_fields(labels, {"d_sae", "label", "source", "score"}),
            "want": "role_word_share <= 0.01", "ok": share <= 0.01}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def surface_features(texts: list[str]) -> np.ndarray:
    def last(t: str) -> str:
        t = t.rstrip()
        return t[-1] if t else ""
    return np.array([[last(t) == ".", last(t) == "?", last(t) == "!", last(t).isalnum(),
                      max(1, len(re.findall(r"[.!?]+(?:\s|$)", t))), bool(re.search(r"\d", t)), len(t.split())]
                     for t in texts], dtype=float)


def grouped_cv_auroc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> dict:
    """Out-of-fold AUROC (95% bootstrap interval) of a standardised logistic regression, StratifiedGroupKFold(5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    oof = np.zeros(len(y))
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        oof[test] = model.decision_function(x[test])
    rng = np.random.default_rng(seed)
    boots = [auroc(y[i], oof[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(1000))]
    low, high = np.nanpercentile([b if b is not None else np.nan for b in boots], [2.5, 97.5])
    return {"auroc": auroc(y, oof), "auroc_low": round(float(low), 3), "auroc_high": round(float(high), 3)}


def risk(run: Run) -> dict:
    store = run.store("halueval_qa", read_jsonl("halueval/qa.jsonl"), dataclasses.replace(run.config, dense=True))
    report = fit_risk(store, "hallucinated", RiskConfig(), group="question_id")
    table = {r["features"]: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "features"}
             for r in report.table.iter_rows(named=True)}
    y = np.array([str(v).lower() == "true" for v in store.frame["hallucinated"].to_list()], dtype=int)
    groups = store.frame["question_id"].to_numpy()
    texts = store.frame["text"].to_list()
    length = np.column_stack([np.log(store.frame["n_tokens"].to_numpy() + 1.0), np.log([len(t) + 1.0 for t in texts])])
    return {"docs": report.n_docs, "positives": report.n_positive, "report_table": table,
            "harness_length_only": grouped_cv_auroc(length, y, groups, run.seed),
            "harness_surface_form": grouped_cv_auroc(surface_features(texts), y, groups, run.seed),
            "top_concepts": [f"{r['weight']:+.3f} {r['latent']} {r['label']}"
                             for r in report.top_concepts.head(8).iter_rows(named=True)],
            "notes": report.notes,
            "new_fields": new_fields(report, {"table", "top_concepts", "probe", "n_docs", "n_positive", "notes"},
                                     ("baselines",))}


def length_dependence(run: Run) -> dict:
    rng = run.rng("length_dependence")
    answers = [r for f in ("codegen", "roleplay", "toolformer") for r in read_jsonl(f"gpteacher/{f}.jsonl")]
    parts = {"tweets": sample(read_jsonl("tweeteval/sentiment.jsonl"), 300, rng),
             "agnews": sample(read_jsonl("agnews/test.jsonl"), 300, rng), "gpteacher": sample(answers, 200, rng)}
    store = run.store("length_mix", [{**r, "source": s} for s, rows in parts.items() for r in rows])
    nnz, tokens = np.diff(store.matrix.indptr), store.frame["n_tokens"].to_numpy()
    source = store.frame["source"].to_numpy()
    per = {s: {"docs": int((source == s).sum()), "mean_active": round(float(nnz[source == s].mean()), 1),
               "mean_tokens": round(float(tokens[source == s].mean()), 1),
               "rho_within": spearman(nnz[source == s], tokens[source == s])} for s in parts}
    return {"docs": store.n_docs, "rho_active_vs_tokens": spearman(nnz, tokens), "per_source": per,
            "want": "rho as low as possible (0 = no length dependence)"}


MODEL_PAIRS = [  # A, B: answers of two models (or two prompts of one) to the same 805 AlpacaEval prompts
    ("gpt4_1106_preview", "claude-2.1"), ("gpt4_1106_preview", "llama-2-70b-chat-hf"),
    ("gpt4_1106_preview", "Mixtral-8x7B-Instruct-v0.1"), ("gpt4_1106_preview", "text_davinci_003"),
    ("gpt4_1106_preview_concise", "gpt4_1106_preview_verbose")]


def model_comparison(run: Run) -> dict:
    """(i) Two models' answers to the same prompts, paired on prompt_id: findings of each layer, replication
    on held-out pairs (holdout 0.5), and whether the findings of one half of the prompts tell which model
    wrote an answer of the other half better than its length does (logistic regression on the findings'
    values + log length vs log length alone, fitted on the discovery half with its strength chosen by grouped
    cross-validation there, AUROC on the held-out half; `predict_auroc_c1`: the first figures' fixed C = 1).
    `ceiling_auroc`: the same fit on every form feature and style rate, none chosen by a test: what this
    representation can tell at all beyond the findings.
    `before`: the same diff with the form layer off (what diff reported before it)."""

    from saeembed.analysis.form import form_features

    out = {}
    for name_a, name_b in MODEL_PAIRS:
        pairs = [run.stores(f"alpaca_{n}", read_jsonl(f"alpacaeval/{n}.jsonl")) for n in (name_a, name_b)]
        stores, styles = [p[0] for p in pairs], [p[1] for p in pairs]
        names = [name_a, name_b]
        config = DiffConfig(pair_on="prompt_id", holdout=0.5)
        result = run.diff(pairs, config, names=names)
        before = diff(*stores, dataclasses.replace(config, form=False), names=names)
        # the predictive check: discover on half the prompts, predict the author on the other half
        rng = run.rng(f"model_comparison/{name_a}/{name_b}")
        prompts = sorted(set(stores[0].frame["prompt_id"].to_list()) & set(stores[1].frame["prompt_id"].to_list()))
        half = set(rng.choice(prompts, len(prompts) // 2, replace=False).tolist())
        in_half = [np.array([p in half for p in s.frame["prompt_id"].to_list()]) for s in stores]
        parts = {"discovery": [s.take(np.flatnonzero(m)) for s, m in zip(stores, in_half)],
                 "held_out": [s.take(np.flatnonzero(~m)) for s, m in zip(stores, in_half)]}
        style_parts = ({"discovery": [s.take(np.flatnonzero(m)) for s, m in zip(styles, in_half)],
                        "held_out": [s.take(np.flatnonzero(~m)) for s, m in zip(styles, in_half)]}
                       if all(s is not None for s in styles) else None)
        found = diff(*parts["discovery"], DiffConfig(pair_on="prompt_id"), names=names,
                     style=style_parts["discovery"] if style_parts else None)
        sides = {h: list(zip(parts[h], style_parts[h] if style_parts else (None, None))) for h in parts}
        groups = np.concatenate([s.frame["prompt_id"].to_numpy() for s in parts["discovery"]])
        held_groups = np.concatenate([s.frame["prompt_id"].to_numpy() for s in parts["held_out"]])
        fit = findings_fit(found, sides["discovery"], sides["held_out"], groups, held_groups)
        with_findings, length_only = fit["predict_auroc"], fit["length_only_auroc"]
        gain = round(with_findings - length_only, 3) if with_findings is not None and length_only else None
        y_train = np.r_[np.ones(parts["discovery"][0].n_docs), np.zeros(parts["discovery"][1].n_docs)]
        y_test = np.r_[np.ones(parts["held_out"][0].n_docs), np.zeros(parts["held_out"][1].n_docs)]
        # the ceiling: every form feature counted on the discovery half (no held-out opening is chosen) and
        # every style latent's rate, none chosen by a test
        form_all = form_features([s.frame["text"].to_list() for s in parts["discovery"]]).names
        every_style = np.arange(styles[0].d_sae) if style_parts else None
        all_train, _ = author_features(parts["discovery"], form_all, np.zeros(0, int),
                                       style_parts and style_parts["discovery"], every_style)
        all_test, _ = author_features(parts["held_out"], form_all, np.zeros(0, int),
                                      style_parts and style_parts["held_out"], every_style)
        all_scale = all_train.std(axis=0) + 1e-9
        ceiling = tuned_logistic(all_train / all_scale, y_train, groups)
        n, rate = n_findings(result), combined_replication(result)
        out[f"{name_a}_vs_{name_b}"] = {
            **diff_summary(result), "replication_all": _round(rate), "findings_before": n_findings(before),
            "replication_before": before.replication_rate,
            "top_form": [f"{r['feature']} ({r['more_in']}, {r['share_a']:.0%} vs {r['share_b']:.0%})"
                         for r in result.form_findings.head(8).iter_rows(named=True)],
            "top_labels": top_labels(result, 5), "top_style": top_style(result, 5), **fit, "auroc_gain": gain,
            "ceiling_auroc": auroc(y_test, ceiling.decision_function(all_test / all_scale)),
            "ok": 5 <= n <= 300 and (rate or 0) >= 0.7 and (gain or 0) >= 0.05}
    return {"comparisons": out, "want": "5 <= findings <= 300, replication >= 0.7, auroc_gain >= 0.05 each",
            "ok": all(v["ok"] for v in out.values())}


def findings_fit(found, discovery: list[tuple], held_out: list[tuple], groups: np.ndarray | None = None,
                 held_groups: np.ndarray | None = None) -> dict:
    """How well the findings of every layer of `found` (a diff of the `discovery` (content, style) pairs) tell the
    two sides apart on `held_out`: a logistic regression on their values + log length (`author_features`),
    strength chosen by grouped cross-validation on the discovery half (`groups`: one group per document when
    None), AUROC on the held-out half; `predict_auroc_c1` with the first figures' fixed C = 1, and log length
    alone for comparison; with `held_groups` (the held-out answers' prompts), `gain_interval`: the 95% interval
    of the gain over length, the held-out prompts resampled."""
    from sklearn.linear_model import LogisticRegression

    form_names = found.form_findings["feature"].to_list() if found.form is not None else []
    style_latents = found.style_findings["latent"].to_numpy() if found.style is not None else np.zeros(0, int)
    latents = found.findings["latent"].to_numpy()
    styles = [[p[1] for p in half] if all(p[1] is not None for p in half) else None for half in (discovery, held_out)]
    x_train, y_train = author_features([p[0] for p in discovery], form_names, latents, styles[0], style_latents)
    x_test, y_test = author_features([p[0] for p in held_out], form_names, latents, styles[1], style_latents)
    scale = x_train.std(axis=0) + 1e-9
    tuned = tuned_logistic(x_train / scale, y_train, np.arange(len(y_train)) if groups is None else groups)
    fixed = LogisticRegression(max_iter=3000, C=1.0).fit(x_train / scale, y_train)
    length = LogisticRegression(max_iter=3000).fit(x_train[:, :1], y_train)
    with_findings, length_only = tuned.decision_function(x_test / scale), length.decision_function(x_test[:, :1])
    interval = gain_interval(y_test, with_findings, length_only, held_groups) if held_groups is not None else None
    return {"discovery_findings": [len(form_names), int(len(style_latents)), int(len(latents))],
            "predict_auroc": auroc(y_test, with_findings),
            "predict_auroc_c1": auroc(y_test, fixed.decision_function(x_test / scale)),
            "length_only_auroc": auroc(y_test, length_only), "gain_interval": interval}


def tuned_logistic(x: np.ndarray, y: np.ndarray, groups: np.ndarray):
    """A logistic regression whose strength is chosen by 5-fold cross-validation on `x` alone, folds grouped by
    prompt (both answers to a prompt on the same side of a fold), scored by AUROC."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(5).split(x, y, groups))
    return LogisticRegressionCV(Cs=np.logspace(-3, 1, 9), cv=folds, scoring="roc_auc", max_iter=3000,
                                use_legacy_attributes=False).fit(x, y)


def author_features(side_stores: list, form_names: list[str], latents: np.ndarray, style_stores: list | None = None,
                    style_latents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per answer: log length, the form findings' values (rates per token; 0/1 for openings and endings), the
    style findings' rates, and whether each content finding fires; y = 1 for the first store's answers."""
    from saeembed.analysis.form import form_features, is_positional
    from saeembed.analysis.style import rate_side

    counted = form_features([s.frame["text"].to_list() for s in side_stores])
    xs = []
    for k, (s, matrix) in enumerate(zip(side_stores, counted.counts)):
        tokens = np.maximum(s.frame["n_tokens"].to_numpy(), 1)
        columns = [np.log(tokens)]
        for feature in form_names:
            if feature in counted.names:
                values = matrix[:, counted.names.index(feature)].toarray().ravel()
                columns.append(values > 0 if is_positional(feature) else values / tokens)
            else:  # an opening frequent only in the discovery half
                columns.append(np.zeros(s.n_docs))
        present = (s.matrix[:, latents] > 0).toarray() if len(latents) else np.zeros((s.n_docs, 0))
        rates = np.zeros((s.n_docs, 0))
        if style_stores is not None and style_latents is not None and len(style_latents):
            rates = rate_side(style_stores[k], np.arange(s.n_docs)).matrix[:, style_latents].toarray()
        xs.append(np.column_stack([*columns, rates, present]))
    return np.vstack(xs), np.r_[np.ones(side_stores[0].n_docs), np.zeros(side_stores[1].n_docs)]


def drift_section(run: Run) -> dict:
    """(k) drift on real news with a planted trend: 2,000 agnews articles given dates so that Sports grows from
    about 10% of the articles in the first months to about 40% in the last (other topics shrink in step). The
    rising findings should be sports concepts and the falling ones not (`precision`: share of the rising
    findings more frequent in Sports articles than in the others, and of the falling ones less), and the
    same articles with their dates shuffled (5 orders) should give no finding."""
    from saeembed.analysis.drift import DriftConfig, drift

    rng = run.rng("drift")
    rows = sample(read_jsonl("agnews/test.jsonl"), 2000, rng)
    sports = np.array([r["topic"] == "Sports" for r in rows])
    # a date for each article: Sports articles drawn toward the end (density 2t), the others toward the start
    t = np.where(sports, np.sqrt(rng.uniform(size=len(rows))), 1 - np.sqrt(rng.uniform(size=len(rows))))
    t = np.where(sports & (rng.uniform(size=len(rows)) < 0.5), rng.uniform(size=len(rows)), t)  # and half anywhere
    days = (t * 730).astype(int)
    dated = [{**r, "date": str(np.datetime64("2023-01-01") + int(d))} for r, d in zip(rows, days)]
    store = run.store("drift_agnews", dated)
    result = drift(store, "date")
    findings = result.findings
    fires = (store.matrix > 0).astype(np.float32)
    in_sports = np.asarray(fires[sports].mean(axis=0)).ravel()
    elsewhere = np.asarray(fires[~sports].mean(axis=0)).ravel()
    rising = findings.filter(pl.col("direction") == "rises")
    falling = findings.filter(pl.col("direction") == "falls")
    up, down = rising["latent"].to_numpy(), falling["latent"].to_numpy()
    right = int((in_sports[up] > elsewhere[up]).sum() + (in_sports[down] < elsewhere[down]).sum())
    dates = np.array(store.frame["date"].to_list())  # ISO dates: text order is date order
    share = [round(float(sports[(dates >= a) & (dates <= b)].mean()), 3)
             for a, b in zip(result.periods["from"], result.periods["to"])]
    nulls = []
    for k in range(5):  # the same articles, their dates shuffled
        order = run.rng(f"drift/null/{k}").permutation(store.n_docs)
        shuffled = dataclasses.replace(store, frame=store.frame.with_columns(pl.col("date").gather(order)))
        nulls.append(drift(shuffled, "date", DriftConfig(examples=False)).findings.height)
    precision = right / max(findings.height, 1)
    return {"docs": len(rows), "periods_docs": result.periods["n_docs"].to_list(), "sports_share_per_period": share,
            "findings": findings.height, "rising": len(up), "falling": len(down), "precision": round(precision, 3),
            "top_rising": top_labels_of(rising), "top_falling": top_labels_of(falling),
            "null_findings_per_order": nulls,
            "want": "findings >= 5, precision >= 0.9, shuffled dates: 0 findings in each of 5 orders",
            "ok": findings.height >= 5 and precision >= 0.9 and max(nulls) == 0}


def top_labels_of(frame: pl.DataFrame, n: int = 6) -> list[str]:
    return [f"{r['latent']} {r['label'] or ''} ({r['first']:.0%} -> {r['last']:.0%})".strip()
            for r in frame.head(n).iter_rows(named=True)]


def random_halves_null(run: Run) -> dict:
    """Random halves of one corpus, 20 splits over three corpora (GPT-4 answers, tweets, news): how many
    splits give any finding (form or latent). Want <= 2 of 20."""
    corpora = [("alpaca_gpt4_1106_preview", read_jsonl("alpacaeval/gpt4_1106_preview.jsonl")),
               ("tweets", sample(read_jsonl("tweeteval/sentiment.jsonl"), 1600, run.rng("random_halves/tweets"))),
               ("agnews", sample(read_jsonl("agnews/test.jsonl"), 1600, run.rng("random_halves/agnews")))]
    splits, with_findings, counts = 0, 0, []
    for k in range(20):
        name, rows = corpora[k % len(corpora)]
        store, style = run.stores(name, rows)
        order = run.rng(f"random_halves/{k}").permutation(store.n_docs)
        halves = [np.sort(h) for h in np.array_split(order, 2)]
        result = run.diff([(store.take(h), style.take(h) if style is not None else None) for h in halves], DiffConfig(),
                          names=["half_1", "half_2"])
        splits += 1
        counts.append(n_findings(result))
        with_findings += n_findings(result) > 0
    return {"splits": splits, "splits_with_findings": with_findings, "findings_per_split": counts,
            "want": "<= 2 of 20 splits with any finding", "ok": with_findings <= 2}


RUNNERS = dict(zip(SECTIONS, (repackaging_null, concise_vs_verbose, matched_length_content, property_search,
                              clustering_axes, labels_section, risk, length_dependence, model_comparison,
                              random_halves_null, drift_section)))


def meta_of(run: Run, seconds: dict) -> dict:
    import saeembed

    meta = run.meta or {}
    model, sae = meta.get("model", {}), meta.get("sae", {})
    return {"model": model.get("id"), "layer": model.get("layer"), "sae": sae.get("source"),
            "sae_fingerprint": sae.get("fingerprint"), "sae_architecture": sae.get("architecture"),
            "d_sae": sae.get("d_sae"), "pooling": meta.get("pooling"), "as_chat": meta.get("as_chat"),
            "saeembed": saeembed.__version__, **run.code, "seed": run.seed,
            "defaults": {c.__name__: summarise(c())
                         for c in (DiffConfig, ClusterConfig, RiskConfig, CorrelationConfig)},
            "seconds": seconds}


def _plain(value):
    """JSON for numpy scalars (their value) and arrays (their shape, not their contents)."""
    if hasattr(value, "shape") and getattr(value, "size", 1) != 1:
        return f"array{tuple(value.shape)}"
    return value.item() if hasattr(value, "item") else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset")
    parser.add_argument("--model")
    parser.add_argument("--sae")
    parser.add_argument("--layer", type=int)
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--cache", default="/tmp/saeembed-meaning-cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--no-style", action="store_true",
                        help="without the preset's style reader (diff's style layer)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    os.environ["SAEEMBED_CACHE"] = args.cache
    config = resolve_config(args.preset, args.model, args.sae, layer=args.layer)
    with_style = not args.no_style and args.model is None and args.sae is None
    style = style_config(args.preset) if with_style else None
    out, seconds, failed = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="saeembed-meaning-") as tmp:
        run = Run(config, Path(tmp), args.seed, style)
        for section in (s for s in SECTIONS if s in only):
            started = time.perf_counter()
            print(f"[meaning] {section} ...", file=sys.stderr, flush=True)
            try:
                out[section] = RUNNERS[section](run)
            except Exception as exc:  # keep the other sections' figures; the traceback says what to fix
                failed.append(section)
                out[section] = {"error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc().splitlines()[-6:]}
            seconds[section] = round(time.perf_counter() - started, 1)
            print(f"[meaning] {section} done in {seconds[section]} s", file=sys.stderr, flush=True)
        out = {"meta": meta_of(run, seconds), **out}
    text = json.dumps(out, indent=2, ensure_ascii=False, default=_plain)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
