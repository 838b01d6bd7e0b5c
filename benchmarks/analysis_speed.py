"""Speed and memory of the analyses on large synthetic stores; prints JSON.

    python benchmarks/analysis_speed.py           # diff 1M docs, correlations 200k, search 1M, cluster 20k
    python benchmarks/analysis_speed.py --diff-docs 100000 --corr-docs 20000 --search-docs 100000
    python benchmarks/analysis_speed.py --only search

Stores are real Parquet written by StoreWriter: 16,384 latents with Zipf-like frequencies (~64 active
per document), some latents shifted between A and B (diff) or made to follow another (correlations).
Timings include loading the stores from disk. Memory is the growth of peak RSS over the baseline,
reported per stored non-zero so it can be compared across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saeembed.analysis.config import CorrelationConfig, DiffConfig  # noqa: E402
from saeembed.analysis.correlations import correlations  # noqa: E402
from saeembed.analysis.diff import diff  # noqa: E402
from saeembed.labels import Labels  # noqa: E402
from saeembed.store import load_store  # noqa: E402
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store  # noqa: E402


def zipf_rates(d_sae: int, active: float, rng: np.random.Generator) -> np.ndarray:
    rates = 1.0 / (np.arange(d_sae) + 20.0) ** 0.9
    rates = np.minimum(rates * active / rates.sum(), 0.6)
    return rng.permutation(rates)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_diff(n_docs: int, d_sae: int, active: float, tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    rates = zipf_rates(d_sae, active, rng)
    shifted = rates.copy()
    planted = rng.choice(np.flatnonzero(rates > 0.02), 50, replace=False)  # B fires these 5 points more often
    shifted[planted] += 0.05
    nnz = 0
    for name, r in (("a", rates), ("b", shifted)):
        columns = random_columns(n_docs // 2, r, rng)
        vectors = vectors_from_columns(n_docs // 2, columns, rng)
        # mixed lengths, alike in A and B: the default length adjustment runs on many bands
        vectors.n_tokens = np.maximum(rng.lognormal(4, 0.6, n_docs // 2), 1).astype(np.int32)
        nnz += len(vectors.indices)
        write_store(tmp / f"{name}.parquet", vectors, meta=fake_meta(d_sae))
        del columns, vectors
    base = peak_rss_mb()
    started = time.perf_counter()
    a, b = load_store(tmp / "a.parquet"), load_store(tmp / "b.parquet")
    loaded = time.perf_counter()
    result = diff(a, b, DiffConfig(), labels=Labels(d_sae, {}, {}, {}))
    done = time.perf_counter()
    found = set(result.findings["latent"].to_list())
    return {"docs": n_docs, "d_sae": d_sae, "nnz": nnz, "active_per_doc": nnz / n_docs,
            "load_s": round(loaded - started, 2), "diff_s": round(done - loaded, 2),
            "total_s": round(done - started, 2), "target_s": 10,
            "findings": len(found), "themes": len(result.themes), "length": result.length.sentence,
            "planted": len(planted), "planted_found": len(found & set(planted.tolist())),
            "false_findings": len(found - set(planted.tolist())),
            "rss_growth_mb": round(peak_rss_mb() - base, 1),
            "rss_bytes_per_nnz": round((peak_rss_mb() - base) * 2**20 / nnz, 1)}


def bench_correlations(n_docs: int, d_sae: int, active: float, tmp: Path) -> dict:
    rng = np.random.default_rng(1)
    rates = zipf_rates(d_sae, active, rng)
    columns = random_columns(n_docs, rates, rng)
    frequent = np.flatnonzero(rates > 0.02)
    leaders = rng.choice(frequent, 100, replace=False)
    for leader in leaders:  # a follower fires on 60% of its leader's documents
        follower = int(rng.integers(d_sae))
        shared = rng.choice(columns[leader], int(0.6 * len(columns[leader])), replace=False)
        columns[follower] = np.union1d(columns[follower], shared)
    vectors = vectors_from_columns(n_docs, columns, rng)
    vectors.n_tokens = rng.integers(8, 512, n_docs).astype(np.int32)  # mixed lengths: the test runs per length band
    nnz = len(vectors.indices)
    write_store(tmp / "c.parquet", vectors, meta=fake_meta(d_sae))
    del columns, vectors
    base = peak_rss_mb()
    started = time.perf_counter()
    store = load_store(tmp / "c.parquet")
    loaded = time.perf_counter()
    result = correlations(store, CorrelationConfig(), labels=Labels(d_sae, {}, {}, {}),
                          decoder=np.eye(d_sae, 8, dtype=np.float32))
    done = time.perf_counter()
    return {"docs": n_docs, "d_sae": d_sae, "nnz": nnz, "active_per_doc": nnz / n_docs,
            "latents_in_band": result.n_band, "pairs_tested": result.n_tested,
            "significant": result.n_significant, "kept": len(result.table), "dropped": result.dropped,
            "length_bands": result.length_bands, "length_explained": result.n_length_explained,
            "load_s": round(loaded - started, 2), "correlations_s": round(done - loaded, 2),
            "total_s": round(done - started, 2), "target_s": 60,
            "rss_growth_mb": round(peak_rss_mb() - base, 1),
            "dense_pair_matrix_mb": round(result.n_band**2 * 8 / 2**20, 1)}


def bench_search(n_docs: int, d_sae: int, active: float, tmp: Path) -> dict:
    from saeembed.analysis.config import SearchConfig
    from saeembed.analysis.search import search

    rng = np.random.default_rng(2)
    rates = zipf_rates(d_sae, active, rng)
    vectors = vectors_from_columns(n_docs, random_columns(n_docs, rates, rng), rng)
    write_store(tmp / "s.parquet", vectors, meta=fake_meta(d_sae))
    del vectors
    started = time.perf_counter()
    store = load_store(tmp / "s.parquet")
    loaded = time.perf_counter()
    query = ",".join(str(i) for i in rng.choice(d_sae, 100, replace=False))  # a 100-latent query
    timings = []
    for _ in range(3):
        begin = time.perf_counter()
        result = search(store, query, SearchConfig(top=20), labels=Labels(d_sae, {}, {}, {}))
        timings.append(time.perf_counter() - begin)
    # A query in words selects latents by their labels (sentence embeddings, cached after the first
    # run) and is expanded by feedback (a query of ids is taken as given): the same 100 latents, labelled.
    latents = [int(i) for i in query.split(",")]
    worded = Labels(d_sae, {i: f"weather · rain · concept {i}" for i in latents}, {}, {})
    search(store, "weather, rain", SearchConfig(top=20), labels=worded)  # loads the sentence model, caches labels
    feedback = []
    for _ in range(3):
        begin = time.perf_counter()
        expanded = search(store, "weather, rain", SearchConfig(top=20), labels=worded)
        feedback.append(time.perf_counter() - begin)
    return {"docs": n_docs, "d_sae": d_sae, "nnz": int(store.matrix.nnz), "query_latents": 100,
            "load_s": round(loaded - started, 2), "search_s": [round(t, 3) for t in timings], "target_s": 1,
            "results": len(result.table), "words_with_feedback_s": [round(t, 3) for t in feedback],
            "latents_after_feedback": len(expanded.concepts)}


def bench_cluster(n_docs: int, d_sae: int, active: float, fit_on: int | None = None) -> dict:
    """20k documents in 7 groups, each with its own latents; clustering along 300 selected latents. With
    `fit_on` below the documents, spectral and HDBSCAN fit a sample and place the rest."""
    import scipy.sparse as sp
    from sklearn.metrics import adjusted_rand_score

    from saeembed.analysis.cluster import cluster
    from saeembed.analysis.concepts import Concepts
    from saeembed.analysis.config import ClusterConfig
    from saeembed.store import Store

    rng = np.random.default_rng(3)
    groups = rng.integers(0, 7, n_docs)
    columns = random_columns(n_docs, zipf_rates(d_sae, active, rng), rng)
    axis = rng.choice(d_sae, 300, replace=False)
    for j, latent in enumerate(axis):  # each group fires its own 300 / 7 axis latents at 30%
        members = np.flatnonzero((groups == j % 7) & (rng.random(n_docs) < 0.3))
        columns[latent] = np.union1d(columns[latent][: len(columns[latent]) // 3], members)
    vectors = vectors_from_columns(n_docs, columns, rng)
    matrix = sp.csr_matrix((vectors.values, vectors.indices, vectors.offsets), shape=(n_docs, d_sae))
    import polars as pl

    store = Store(Path("synthetic"), matrix, pl.DataFrame({"id": [str(i) for i in range(n_docs)],
                                                           "text": ["x"] * n_docs}),
                  fake_meta(d_sae), vectors.peak_start, vectors.peak_end)
    concepts = Concepts(axis, np.ones(len(axis)), [None] * len(axis), ["id"] * len(axis), "synthetic")
    out = {"docs": n_docs, "axis_latents": len(axis), "target_s": 60, "fit_on": fit_on}
    extra = {"fit_on": fit_on} if fit_on else {}
    for method in ("spectral", "kmeans", "hdbscan"):
        started = time.perf_counter()
        result = cluster(store, concepts, ClusterConfig(method=method, k=7, min_cluster_size=100, **extra),
                         labels=Labels(d_sae, {}, {}, {}))
        out[method] = {"seconds": round(time.perf_counter() - started, 1),
                       "ari": round(adjusted_rand_score(groups, result.assignments["cluster"].to_numpy()), 3),
                       "peak_rss_mb": round(peak_rss_mb()), "notes": result.notes}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff-docs", type=int, default=1_000_000)
    parser.add_argument("--corr-docs", type=int, default=200_000)
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--active", type=float, default=64)
    parser.add_argument("--search-docs", type=int, default=1_000_000)
    parser.add_argument("--cluster-docs", type=int, default=20_000)
    parser.add_argument("--fit-on", type=int, help="cluster: ClusterConfig.fit_on (default: the config's)")
    parser.add_argument("--only", choices=("diff", "correlations", "search", "cluster"))
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAEEMBED_CACHE"] = str(Path(tmp) / "cache")  # label embeddings: not the user's cache
        if args.only in (None, "diff"):
            out["diff"] = bench_diff(args.diff_docs, args.d_sae, args.active, Path(tmp))
        if args.only in (None, "correlations"):
            out["correlations"] = bench_correlations(args.corr_docs, args.d_sae, args.active, Path(tmp))
        if args.only in (None, "search"):
            out["search"] = bench_search(args.search_docs, args.d_sae, args.active, Path(tmp))
        if args.only in (None, "cluster"):
            out["cluster"] = bench_cluster(args.cluster_docs, args.d_sae, args.active, args.fit_on)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
