"""diff and correlations on the real corpora of ../shared/data with the offline default; prints JSON.

    python benchmarks/analysis_quality.py            # a few minutes on a laptop CPU (embeddings are cached)

- null control: 20 random half-splits of 2,000 agnews documents; splits with any finding (want <= 2)
- alpacaeval gpt4_1106_preview verbose vs concise, paired on prompt_id, holdout 0.5 (want >= 20
  findings, replication >= 0.8) and the labels of the top findings; the same within length bands
- iSarcasmEval sarcastic tweets vs their authors' rephrasings (the bundled examples), paired
- correlations on the sarcastic tweets and `--with topic` on agnews
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saeembed.analysis.associations import associations  # noqa: E402
from saeembed.analysis.config import DiffConfig  # noqa: E402
from saeembed.analysis.correlations import correlations  # noqa: E402
from saeembed.analysis.diff import diff  # noqa: E402
from saeembed.embedding.open_store import open_store  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def top_labels(result, n: int = 10) -> dict[str, list[str]]:
    findings = result.findings
    return {"more_in_a": [f"{r['latent']}: {r['label']}" for r in findings.filter(pl.col("diff") > 0).head(n)
                          .iter_rows(named=True)],
            "more_in_b": [f"{r['latent']}: {r['label']}" for r in findings.filter(pl.col("diff") < 0).head(n)
                          .iter_rows(named=True)]}


def main() -> None:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        agnews = Path(tmp) / "agnews2000.jsonl"
        with open(DATA / "agnews" / "test.jsonl", encoding="utf-8") as fh:
            agnews.write_text("".join(line for _, line in zip(range(2000), fh)), encoding="utf-8")
        news = open_store(agnews)
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(20):
        rows = rng.permutation(news.n_docs)
        half = news.n_docs // 2
        result = diff(news.take(np.sort(rows[:half])), news.take(np.sort(rows[half:])), DiffConfig(examples=False))
        counts.append(len(result.findings))
    out["null_control_agnews_2000"] = {"splits": 20, "splits_with_findings": sum(c > 0 for c in counts),
                                       "findings_per_split": counts}

    verbose = open_store(DATA / "alpacaeval" / "gpt4_1106_preview_verbose.jsonl")
    concise = open_store(DATA / "alpacaeval" / "gpt4_1106_preview_concise.jsonl")
    started = time.perf_counter()
    result = diff(verbose, concise, DiffConfig(pair_on="prompt_id", holdout=0.5), names=["verbose", "concise"])
    out["alpacaeval_verbose_vs_concise"] = {
        "pairs": result.sizes[0], "latents_tested": result.n_tested, "findings": len(result.findings),
        "more_in_verbose": int((result.findings["diff"] > 0).sum()), "replication_rate": result.replication_rate,
        "mean_tokens": result.mean_tokens, "diff_seconds": round(time.perf_counter() - started, 2),
        "top_labels": top_labels(result)}
    adjusted = diff(verbose, concise, DiffConfig(length_bands=10, holdout=0.5), names=["verbose", "concise"])
    out["alpacaeval_verbose_vs_concise_length_adjusted"] = {
        "findings": len(adjusted.findings), "more_in_verbose": int((adjusted.findings["diff"] > 0).sum()),
        "replication_rate": adjusted.replication_rate, "top_labels": top_labels(adjusted)}

    examples = ROOT / "examples"
    sarcastic, plain = open_store(examples / "sarcastic.jsonl"), open_store(examples / "rephrased.jsonl")
    result = diff(sarcastic, plain, DiffConfig(pair_on="pair_id", holdout=0.5))
    unpaired = diff(sarcastic, plain)
    out["isarcasmeval_sarcastic_vs_rephrased"] = {
        "pairs": result.sizes[0], "findings_paired_holdout": len(result.findings),
        "replication_rate": result.replication_rate, "findings_unpaired_all": len(unpaired.findings),
        "mean_tokens": unpaired.mean_tokens, "top_labels": top_labels(unpaired),
        "findings_length_adjusted": len(diff(sarcastic, plain, DiffConfig(length_bands=10)).findings)}

    started = time.perf_counter()
    pairs = correlations(sarcastic)
    out["correlations_sarcastic"] = {
        "seconds": round(time.perf_counter() - started, 2), "latents_in_band": pairs.n_band,
        "pairs_tested": pairs.n_tested, "significant": pairs.n_significant, "dropped": pairs.dropped,
        "top_pairs": [f"{r['npmi']:.2f} {r['label_a']} x {r['label_b']} (n={r['support']})"
                      for r in pairs.table.head(8).iter_rows(named=True)]}
    topics = associations(news, "topic")
    out["agnews_with_topic"] = {
        value: [f"{r['label']} ({r['freq_in_value']:.0%} vs {r['freq_elsewhere']:.0%})"
                for r in topics.table.filter(pl.col("value") == value).head(5).iter_rows(named=True)]
        for value in ("World", "Sports", "Business", "Sci/Tech")}
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
