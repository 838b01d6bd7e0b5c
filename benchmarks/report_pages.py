"""Size and time of the HTML pages: the main job's diff page (sarcastic vs rephrased, offline default)
and the other analyses' pages on the same stores; prints JSON.

    python benchmarks/report_pages.py [--cache DIR]

Embedding goes through the vector cache (`--cache`, default /tmp/saeembed-report-cache), so only the
first run pays for the model. Target: the main job's page well under 2 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/saeembed-report-cache")
    args = parser.parse_args()
    os.environ["SAEEMBED_CACHE"] = args.cache

    from saeembed import (
        ClusterConfig,
        SearchConfig,
        cluster,
        correlations,
        diff,
        open_store,
        report,
        search,
        select_concepts,
    )

    a = open_store(ROOT / "examples" / "sarcastic.jsonl")
    b = open_store(ROOT / "examples" / "rephrased.jsonl")
    started = time.perf_counter()
    result = diff(a, b, names=["sarcastic", "rephrased"])
    analysis_s = time.perf_counter() - started
    pages = {
        "diff": lambda path: report.write_diff_report(result, path),
        "correlations": lambda path: report.write_correlations_report(correlations(a), path, store=a),
        "search": lambda path: report.write_search_report(search(a, "weather, rain", SearchConfig(top=20)), path,
                                                          query="weather, rain"),
        "cluster": lambda path: report.write_cluster_report(
            cluster(a, select_concepts("school, work, weather, politics", a), ClusterConfig(k=4)), path, store=a),
    }
    out = {"docs": [a.n_docs, b.n_docs], "diff_analysis_s": round(analysis_s, 2), "target_bytes": 2_000_000,
           "pages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in pages.items():
            path = Path(tmp) / f"{name}.html"
            started = time.perf_counter()
            write(path)
            out["pages"][name] = {"bytes": path.stat().st_size, "seconds": round(time.perf_counter() - started, 2)}
    out["ok"] = out["pages"]["diff"]["bytes"] < out["target_bytes"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
