"""saeembed from Python, as in a notebook: embed in memory, diff, search, cluster, a plot and a page.

Runs offline on a laptop CPU with the default reader and SAE (about a minute the first time, seconds
once the vectors are cached). Run it from the repository's root:

    python examples/quickstart.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, no window
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

import saeembed  # noqa: E402
from saeembed.report import write_diff_report  # noqa: E402

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="saeembed-quickstart-"))
out.mkdir(parents=True, exist_ok=True)

# 1. Embed two DataFrames in memory: the reader and SAE load once; every column is kept.
sarcastic = pl.read_ndjson("examples/sarcastic.jsonl")
rephrased = pl.read_ndjson("examples/rephrased.jsonl")
embedder = saeembed.Embedder()  # the offline default: MiniLM + a document-level SAE
a, b = embedder.embed(sarcastic), embedder.embed(rephrased)
print(f"{a.n_docs} + {b.n_docs} documents, {a.d_sae} latents; columns: {a.frame.columns}")

# 2. What differs, at equal length, grouped into themes.
result = saeembed.diff(a, b, names=["sarcastic", "rephrased"])
print(result.length.sentence)
print(result.themes.select("more_in", "n_latents", "label", "diff").head(8))

# 3. Which tweets carry a concept.
hits = saeembed.search(a, "weather, rain", saeembed.SearchConfig(top=3))
print(hits.table.select("rank", "score", "text"))

# 4. Clusters along concepts you choose.
concepts = saeembed.select_concepts("school, work, weather, politics", a)
clusters = saeembed.cluster(a, concepts, saeembed.ClusterConfig(k=4))
print(clusters.description.select("cluster", "size", "top_latents"))

# 5. A plot of the strongest themes, and the whole diff as a page that opens offline.
top = result.themes.head(12)
fig, ax = plt.subplots(figsize=(7, 4))
ax.barh([f"{t[:30]}" for t in top["label"].fill_null("(no label)")], top["diff"],
        color=["tab:blue" if d > 0 else "tab:orange" for d in top["diff"]])
ax.invert_yaxis()
ax.set_xlabel("difference in document frequency (sarcastic - rephrased)")
fig.tight_layout()
fig.savefig(out / "themes.png", dpi=100)
write_diff_report(result, out / "diff.html")
print(f"wrote {out / 'themes.png'} and {out / 'diff.html'}")
