"""Rebuild the offline default bundle (saeembed/data/default-sae): training text, SAE, labels; prints JSON.

    python benchmarks/build_default_sae.py --out /tmp/default-sae      # ~25 min on a 2-core CPU

1. The training mix: seeded samples of the permissively licensed corpora of ../shared/data (persona,
   GPTeacher, hh-rlhf harmless, AG News, TweetEval, SIB-200 English; never HaluEval or TruthfulQA, the
   risk probes' evaluation sets, nor AlpacaEval, NC), with chat speaker prefixes removed
   (`strip_role_markers`) so no latent learns "who speaks", and tags a dataset adds to every document
   (`DATASET_TAGS`) removed so none learns "which dataset".
2. `saeembed train-sae` on it with `--reads document`: a TopK SAE over each document's unit-norm mean
   of all-MiniLM-L6-v2's last block (the sentence embedding), k latents per document.
3. Labels: the offline labeler on a 12,000-document sample of the same mix, each label scored on the
   30% of documents it was not made from.
The exact commands are printed in the JSON (`commands`), for the model card.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saeembed.embedding.dense import default_dense_model as minilm_folder  # noqa: E402
from saeembed.embedding.open_store import open_store  # noqa: E402
from saeembed.labels import offline_labels, strip_role_markers  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
# file -> documents sampled (None: all). Capped so that short persona statements and tweets do not
# drown the longer genres, and so that one pass of the reader fits a developer's CPU budget.
MIX = {
    "persona/statements.jsonl": 20000, "gpteacher/codegen.jsonl": 1500, "gpteacher/roleplay.jsonl": 800,
    "gpteacher/toolformer.jsonl": 1500, "hh_rlhf/harmless_test.jsonl": 2500, "agnews/test.jsonl": None,
    "tweeteval/offensive.jsonl": 7000, "tweeteval/sentiment.jsonl": 9000, "tweeteval/stance.jsonl": None,
    "sib200/eng_Latn.jsonl": None,
}


# Text a dataset adds to every document of a file (template text, not what the author wrote): removed
# like speaker prefixes, or the SAE learns "this came from that dataset" and labels carry the tag.
# TweetEval's stance tweets all end with SemEval-2016's task hashtag: 123 of the 2,046 labels of the
# first document SAE said `semst`.
DATASET_TAGS = {"tweeteval/stance.jsonl": re.compile(r"\s*#SemST\b", re.IGNORECASE)}


def training_mix(path: Path, seed: int) -> int:
    """Write the sampled mix, without speaker prefixes and dataset tags, as JSONL (`text`, `source`);
    returns the document count."""
    rows = []
    for name, cap in MIX.items():
        with open(DATA / name, encoding="utf-8") as fh:
            docs = [json.loads(line) for line in fh if line.strip()]
        random.Random(seed).shuffle(docs)
        tag = DATASET_TAGS.get(name)
        texts = [strip_role_markers(tag.sub("", d.get("text") or "") if tag else d.get("text") or "").strip()
                 for d in docs[:cap]]
        rows += [{"text": t, "source": name} for t in texts if t]
    random.Random(seed).shuffle(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--latents", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--matryoshka", default="128,512")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--label-docs", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the mix and activations here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="saeembed-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    mix = work / "mix.jsonl"
    started = time.perf_counter()
    n_docs = training_mix(mix, args.seed)
    train = ["saeembed", "train-sae", str(mix), "--model", minilm_folder(), "--layer", str(args.layer),
             "--reads", "document",
             "--latents", str(args.latents), "--k", str(args.k), "--matryoshka", args.matryoshka,
             "--epochs", str(args.epochs), "--batch-size", "512",
             "--lr", "1e-3", "--save-dtype", "float16", "--activations-dir", str(work / "activations"),
             "--seed", str(args.seed), "-o", str(args.out), "--json", "--quiet"]
    figures = json.loads(subprocess.run(train, check=True, capture_output=True, text=True).stdout)
    (args.out / "labels.parquet").unlink(missing_ok=True)  # labels of an earlier SAE would not fit
    sample = work / "label-sample.jsonl"
    lines = mix.read_text(encoding="utf-8").splitlines()[: args.label_docs]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from saeembed.embedding.config import EmbedConfig

    store = open_store(sample, EmbedConfig(model=minilm_folder(), sae=str(args.out), cache_dir=work / "cache"))
    labels = offline_labels(store, seed=args.seed)
    labels.save(args.out / "labels.parquet")
    scores = [s for s in labels.score.values() if s is not None]
    print(json.dumps({
        "training_docs": n_docs, "train": figures, "labelled": len(labels.label), "d_sae": args.latents,
        "label_quality_mean": sum(scores) / max(len(scores), 1), "labels_scored": len(scores),
        "labels_below_0.75": sum(s < 0.75 for s in scores), "seconds": round(time.perf_counter() - started, 1),
        "commands": {"mix": f"python benchmarks/build_default_sae.py --out {args.out}", "train": " ".join(train)},
    }, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
