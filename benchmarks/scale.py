"""Ray scale-out on this machine, and the per-token costs behind the GPU plan in RESULTS.md; prints JSON.

    python benchmarks/scale.py                 # 4,000 real documents, the offline default, a local Ray of 2 CPUs
    python benchmarks/scale.py --docs 400 --repeats 1   # quicker

What it measures, in one process (this machine is shared and noisy, so only ratios taken in one run count):

- `embed --engine ray` with 1 and with 2 workers (1 CPU, one torch thread each), and the local engine (this
  process, 1 and 2 threads) as the reference, interleaved: each run's steady rate, from the first part
  written to the last (parts of 500 documents; start-up, i.e. loading the model and starting the actors,
  comes before the first), and its wall time.
- The reader's cost per token (measured tokens/s and the model's FLOPs per token: achieved FLOP/s here).
- A 65,536-latent TopK SAE's encode on 4,096-wide activations (Llama-3.1-8B's width): tokens/s and FLOP/s.
- What the driver does per document: read and check the corpus up front, and, at that SAE's scale, turn a
  worker's rows into a part and write it (3,000 latents per document, float16 values): documents/s, bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import real_documents, write_jsonl  # noqa: E402


def timed_embed(corpus: Path, out: Path, config) -> dict:
    """One `embed` call: its wall seconds, and its steady rate from the first part written to the last (the
    actors, or the local model, are loaded by the first)."""
    from saeembed import embed

    marks: list[tuple[float, int, int]] = []
    started = time.perf_counter()
    result = embed([str(corpus)], out, config,
                   on_progress=lambda p: marks.append((time.perf_counter(), p.docs_done, p.tokens_done)))
    wall = time.perf_counter() - started
    (t0, d0, k0), (t1, d1, k1) = next(m for m in marks if m[1] > 0), marks[-1]
    return {"seconds": round(wall, 2), "first_part_seconds": round(t0 - started, 2),
            "steady_docs_per_s": round((d1 - d0) / (t1 - t0), 1), "steady_tokens_per_s": round((k1 - k0) / (t1 - t0)),
            "tokens": result.n_tokens}


def reader_flops_per_token(reader) -> float:
    """2 FLOPs per multiply-add over the weights the read layers use (embeddings are lookups), plus attention."""
    params = sum(p.numel() for name, p in reader.model.named_parameters()
                 if "embeddings" not in name and "embed_tokens" not in name and "pooler" not in name)
    return 2.0 * params


def sae_encode_cost(d_in: int = 4096, d_sae: int = 65536, k: int = 64, tokens: int = 512, repeats: int = 3) -> dict:
    from saeembed.sae.model import SAE, SAEInfo

    torch.manual_seed(0)
    w_dec = torch.randn(d_sae, d_in)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    sae = SAE(W_enc=w_dec.T.contiguous(), b_enc=torch.zeros(d_sae), W_dec=w_dec, b_dec=torch.zeros(d_in), k=k,
              info=SAEInfo(source="random", format="saelens", architecture="topk", d_in=d_in, d_sae=d_sae,
                           layer=19, hook_name="blocks.19.hook_resid_post", fingerprint="random"))
    x = torch.randn(tokens, d_in)
    sae.encode_sparse(x[:16])  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, tokens, 64):  # the CPU chunking of `encode_chunks`: 64 x 65,536 fp32 = 16 MB
            sae.encode_sparse(x[start: start + 64])
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    flops = 2.0 * d_in * d_sae * tokens
    return {"d_in": d_in, "d_sae": d_sae, "k": k, "tokens_per_s": round(tokens / seconds, 1),
            "gflop_per_token": round(2.0 * d_in * d_sae / 1e9, 3),
            "achieved_gflop_per_s": round(flops / seconds / 1e9, 1)}


def driver_write_cost(n_docs: int = 2048, latents_per_doc: int = 3000, d_sae: int = 65536) -> dict:
    """A part as the driver writes it: worker rows -> store table -> atomic Parquet write."""
    import pyarrow as pa

    from saeembed.embedding.kernel import store_table
    from saeembed.store import COUNT_STATS, DocVectors, atomic_write_table

    rng = np.random.default_rng(0)
    indices = np.concatenate([np.sort(rng.choice(d_sae, latents_per_doc, replace=False)) for _ in range(n_docs)])
    nnz = len(indices)
    text = "x" * 1500
    vectors = DocVectors(np.arange(n_docs + 1, dtype=np.int64) * latents_per_doc, indices.astype(np.int32),
                         rng.random(nnz, dtype=np.float32) * 5, np.zeros(nnz, np.int32), np.ones(nnz, np.int32),
                         np.full(n_docs, 400, np.int32), np.zeros((n_docs, len(COUNT_STATS)), np.float32))
    fields = pa.table({"id": [str(i) for i in range(n_docs)], "text": [text] * n_docs})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        table = store_table(fields, vectors.arrow_columns("float16"), None)
        atomic_write_table(table, Path(tmp) / "part.parquet")
        seconds = time.perf_counter() - started
        size = (Path(tmp) / "part.parquet").stat().st_size
    return {"latents_per_doc": latents_per_doc, "docs_per_s": round(n_docs / seconds, 1),
            "bytes_per_doc": round(size / n_docs)}


def driver_read_cost(docs: list[str], copies: int = 20) -> dict:
    """What the driver does before any work: read and check the corpus, build its fields and cache keys
    (the documents repeated `copies` times, so the figure is not start-up)."""
    from saeembed.embedding.corpus import read_corpus
    from saeembed.embedding.kernel import document_key, fields_table

    with tempfile.TemporaryDirectory() as tmp:
        big = write_jsonl(docs * copies, Path(tmp) / "big.jsonl")
        started = time.perf_counter()
        docs = read_corpus([str(big)], check_field_types=True).documents
        fields_table(docs)
        [document_key(doc, None) for doc in docs]
        seconds = time.perf_counter() - started
        size = big.stat().st_size
    return {"docs": len(docs), "docs_per_s": round(len(docs) / seconds), "bytes_per_doc": round(size / len(docs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import logging

    import ray

    from saeembed.embedding.kernel import load_pipeline
    from saeembed.embedding.presets import embed_config

    out: dict = {"docs": args.docs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = real_documents(args.docs)
        corpus = write_jsonl(docs, root / "docs.jsonl")

        def cfg(**kw):  # parts (and blocks) of 500 documents: the steady rate is measured over several
            return embed_config("default", use_cache=False, window_docs=500, **kw)

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        out["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        engines = {"ray_1_worker": (cfg(engine="ray", workers=1), 2),
                   "ray_2_workers": (cfg(engine="ray", workers=2), 2),
                   "local_1_thread": (cfg(), 1), "local_2_threads": (cfg(), 2)}
        runs: dict[str, list[dict]] = {name: [] for name in engines}
        for repeat in range(args.repeats):
            for name, (config, threads) in engines.items():
                torch.set_num_threads(threads)
                out_path = root / (f"{name}-{repeat}" + ("" if config.engine == "ray" else ".parquet"))
                runs[name].append(timed_embed(corpus, out_path, config))
        ray.shutdown()

        def median(name: str, key: str) -> float:
            return statistics.median(run[key] for run in runs[name])

        def ratio(a: str, b: str, key: str = "steady_docs_per_s") -> float:
            return round(median(a, key) / median(b, key), 2)

        out["runs"] = runs
        out["ratio_2_vs_1_workers_steady"] = ratio("ray_2_workers", "ray_1_worker")
        out["ratio_2_vs_1_workers_wall"] = round(median("ray_1_worker", "seconds")
                                                 / median("ray_2_workers", "seconds"), 2)
        out["ratio_ray_1_worker_vs_local_1_thread_steady"] = ratio("ray_1_worker", "local_1_thread")
        out["ratio_ray_2_workers_vs_local_2_threads_steady"] = ratio("ray_2_workers", "local_2_threads")

        torch.set_num_threads(1)
        reader, _ = load_pipeline(cfg())
        per_s = median("local_1_thread", "steady_tokens_per_s")
        flops = reader_flops_per_token(reader)
        out["reader_one_thread"] = {"model": reader.spec.model, "layers_run": reader.spec.layer + 1,
                                    "tokens_per_s": round(per_s, 1), "mflop_per_token": round(flops / 1e6, 1),
                                    "achieved_gflop_per_s": round(per_s * flops / 1e9, 2)}
        out["sae_encode_one_thread_llama_width"] = sae_encode_cost()
        out["driver_corpus_read"] = driver_read_cost(docs)
        out["driver_part_write"] = driver_write_cost()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
