"""Hallucination-risk probes on the labelled corpora of ../shared/data; prints JSON.

    python benchmarks/risk_quality.py              # ~10 min on a laptop CPU the first time (vectors cached after)
    python benchmarks/risk_quality.py halueval_qa  # only the named tasks (names below; scramble: the check)

- HaluEval QA: right vs hallucinated answers to 500 questions, folds grouped by question_id
- HaluEval general: ChatGPT answers with human hallucination labels
- TruthfulQA: correct vs incorrect reference answers, folds grouped by question_id
For each: out-of-fold AUROC / AP (95% bootstrap intervals) of the SAE probe (L1 logistic and PLS) and of
its baselines on the same folds: length only, surface form (final punctuation, sentences, words, ...),
concept counts only and a dense-embedding probe (all-MiniLM-L6-v2); the probe's AUROC gain over each
(paired bootstrap), the verdict against the best baseline and the warnings.
- Scramble check: 500 agnews documents, word 3-grams shuffled at 0-100%.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saeembed.analysis.config import RiskConfig  # noqa: E402
from saeembed.analysis.risk import fit_risk  # noqa: E402
from saeembed.analysis.scramble import scramble_check  # noqa: E402
from saeembed.embedding.open_store import open_store  # noqa: E402
from saeembed.embedding.presets import embed_config  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TASKS = [  # name, file, label column, positive value, group column
    ("halueval_qa", "halueval/qa.jsonl", "hallucinated", None, "question_id"),
    ("halueval_general", "halueval/general.jsonl", "hallucination", "yes", None),
    ("truthfulqa", "truthfulqa/answers.jsonl", "correct", "false", "question_id"),
]


def _rounded(row: dict) -> dict:
    """A row without its name, floats to 3 decimals (the gain columns are None on the probe's row)."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "features"}


def main(only: list[str]) -> None:
    out = {}
    config = embed_config(dense=True, skip_invalid=True)  # general.jsonl repeats one id: that row is skipped
    for name, file, label, positive, group in TASKS:
        if only and name not in only:
            continue
        store = open_store(DATA / file, config)
        out[name] = {"docs": store.n_docs}
        for model in ("l1", "pls"):
            report = fit_risk(store, label, RiskConfig(model=model), positive=positive, group=group)
            out[name]["positives"] = report.n_positive
            out[name][model] = {row["features"]: _rounded(row) for row in report.table.iter_rows(named=True)}
            out[name][f"{model}_verdict"] = _rounded(report.verdict._asdict())
            out[name][f"{model}_warnings"] = report.warnings
            out[name][f"{model}_top_concepts"] = [f"{r['weight']:+.3f} {r['latent']} {r['label']}"
                                                  for r in report.top_concepts.head(8).iter_rows(named=True)]
    if not only or "scramble" in only:
        with open(DATA / "agnews" / "test.jsonl", encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for _, line in zip(range(500), fh)]
        out["scramble_agnews_500"] = scramble_check(texts, embed_config()).to_dicts()
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main(sys.argv[1:])
