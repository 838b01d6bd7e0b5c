"""Analyses on folder stores as they grow: peak memory and time of `diff`, `correlations`, `search`, `info` and
`assign` run by the CLI in a fresh process; prints JSON. Issue 24: folder stores are read part by part
(`saeembed.stream.StoreStream`), so memory follows the latents, not the documents.

    python benchmarks/scale_analyses.py                          # synthetic: 250k-document parts, 1 and 2 a side
    python benchmarks/scale_analyses.py --part-docs 100000 --parts 1 2 4
    python benchmarks/scale_analyses.py --tiled-docs 5000000 --ray   # the README's main job tiled to 5M a side

A synthetic part is real Parquet written by StoreWriter: 16,384 latents with Zipf-like frequencies, ~64
active per document, lengths mixed; side B has 50 latents 5 points more frequent. Tiles of one part get
their own ids. `--tiled-docs` embeds the bundled examples (sarcastic vs rephrased) with the offline default,
diffs them, tiles both stores (ids made unique) into parts of `--part-docs`, and checks that the tiled diff
finds every finding of the untiled one. Peak RSS is each analysis's own process's, so Python, its imports and
the store all count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis_speed import zipf_rates  # noqa: E402

from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store  # noqa: E402


def write_side(folder: Path, rates: np.ndarray, part_docs: int, parts: int, d_sae: int, seed: int) -> int:
    """A folder store of `parts` tiles of one synthetic part; returns its stored non-zeros."""
    rng = np.random.default_rng(seed)
    vectors = vectors_from_columns(part_docs, random_columns(part_docs, rates, rng), rng)
    vectors.n_tokens = np.maximum(rng.lognormal(4, 0.6, part_docs), 1).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(parts):
        ids = [f"{folder.name}-{k}-{i}" for i in range(part_docs)]
        write_store(folder / f"part-{k:05d}.parquet", vectors, fields={"id": ids}, meta=fake_meta(d_sae))
    return len(vectors.indices) * parts


# The CLI in a child process that reports its own peak RSS as it exits (each analysis measured alone).
_CHILD = """import resource, sys
sys.argv = ["saeembed", *sys.argv[1:]]
from commands.app import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
sys.stderr.write(f"\\nPEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
sys.exit(code)
"""


def run(args: list[str], env: dict[str, str]) -> dict:
    """One CLI run in a fresh process: seconds, its peak RSS (MB), exit code."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    seconds = time.perf_counter() - started
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(int(peak[-1]) / 1024, 1) if peak else None,
            "exit": done.returncode, "error": errors[-1:]}


def tile(store: Path, folder: Path, docs: int, part_docs: int) -> None:
    """`store` repeated to `docs` documents as a folder of parts of `part_docs`, each copy's ids made unique."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from saeembed.store import StoreWriter, read_meta

    table, meta = pq.read_table(store), read_meta(store)
    folder.mkdir(parents=True, exist_ok=True)
    ids = table.column("id").to_pylist()
    copy, written, part = 0, 0, 0
    while written < docs:
        writer = StoreWriter(folder / f"part-{part:05d}.parquet", table.schema, meta)
        in_part = 0
        while in_part < part_docs and written < docs:
            take = min(table.num_rows, part_docs - in_part, docs - written)
            piece = table.slice(0, take)
            piece = piece.set_column(piece.schema.get_field_index("id"), "id",
                                     pa.array([f"{i}~{copy}" for i in ids[:take]], pa.string()))
            writer.write(piece)
            copy += 1
            in_part += take
            written += take
        writer.close()
        part += 1


def findings_of(table: Path) -> set[tuple[str, str]]:
    """(layer, latent or feature) of each finding `diff -o` wrote."""
    import polars as pl

    frame = pl.read_parquet(table)
    return {(layer, str(feature if feature is not None else latent)) for layer, feature, latent in
            zip(frame["layer"], frame["feature"] if "feature" in frame.columns else [None] * len(frame),
                frame["latent"] if "latent" in frame.columns else [None] * len(frame))}


def tiled_real(docs: int, part_docs: int, ray: bool, analyses: list[str]) -> dict:
    """The README's main job embedded once (the offline default's content store, no style layer: stores),
    diffed as it is and tiled to `docs` documents a side; then correlations and search of one tiled side, and
    (`ray`) the diff again with --engine ray on a local Ray, its table compared with the local run's."""
    import polars as pl

    root = Path(__file__).resolve().parents[1]
    out: dict = {"docs_per_side": docs, "part_docs": part_docs}
    with tempfile.TemporaryDirectory(prefix="saeembed-tiled-") as tmp:
        env = {**os.environ, "SAEEMBED_CACHE": str(Path(tmp) / "cache")}
        stores = {}
        for name in ("sarcastic", "rephrased"):
            stores[name] = Path(tmp) / f"{name}.parquet"
            done = run(["embed", str(root / "examples" / f"{name}.jsonl"), "-o", str(stores[name]), "-q"], env)
            assert done["exit"] == 0, done
        table = Path(tmp) / "findings.parquet"
        whole = _timed(["diff", str(stores["sarcastic"]), str(stores["rephrased"]), "-o", str(table)], env)
        found_whole = findings_of(table)
        out["untiled"] = {**whole, "findings": len(found_whole)}
        for name, store in stores.items():
            tile(store, Path(tmp) / name, docs, part_docs)
        a, b = str(Path(tmp) / "sarcastic"), str(Path(tmp) / "rephrased")
        if "diff" in analyses or ray:
            tiled = _timed(["diff", a, b, "-o", str(table)], env)
            found, local_table = findings_of(table), pl.read_parquet(table)
            out["tiled_diff"] = {**tiled, "findings": len(found)}
            out["untiled_found_again"] = len(found_whole & found)
            out["untiled_missing"] = sorted(found_whole - found)
            print(json.dumps(out), file=sys.stderr, flush=True)
        if "correlations" in analyses:
            out["correlations"] = _timed(["correlations", a, "--json", "--top", "5"], env)
        if "search" in analyses:
            # first: opening checks every part (and caches each check) and the query's columns make each part's
            # latent index; again: the checks and indexes are read from the cache; a new query: its latents are
            # read from the indexes alone
            for kept in ("checked-parts", "latent-index"):  # diff's opening cached the checks
                shutil.rmtree(Path(tmp) / "cache" / kept, ignore_errors=True)
            out["search"] = _timed(["search", a, "sarcasm, irony", "--json", "--top", "10"], env)
            out["search_again"] = _timed(["search", a, "sarcasm, irony", "--json", "--top", "10"], env)
            out["search_new_query"] = _timed(["search", a, "praise, gratitude", "--json", "--top", "10"], env)
            out["latent_index_mb"] = round(sum(f.stat().st_size for f in (Path(tmp) / "cache" / "latent-index")
                                               .rglob("*") if f.is_file()) / 2**20, 1)
        print(json.dumps(out), file=sys.stderr, flush=True)
        if ray:
            out["tiled_diff_ray"] = _timed(["diff", a, b, "-o", str(table), "--engine", "ray"], env)
            out["tiled_diff_ray"]["same_table_as_local"] = pl.read_parquet(table).equals(local_table)
    return out


def _timed(args: list[str], env: dict[str, str]) -> dict:
    """One CLI run (`run`), refused loudly if it failed."""
    done = run([*args, "-q"], env)
    assert done["exit"] == 0, done
    return {"seconds": done["seconds"], "peak_rss_mb": done["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part-docs", type=int, default=250_000)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--d-sae", type=int, default=16384)
    parser.add_argument("--active", type=float, default=64)
    parser.add_argument("--analyses", nargs="+", default=["diff", "correlations", "search", "info", "assign"],
                        choices=["diff", "correlations", "search", "info", "assign"])
    parser.add_argument("--ray", action="store_true", help="with --tiled-docs: the diff again with --engine ray")
    parser.add_argument("--tiled-docs", type=int, default=0,
                        help="instead: diff the README's main job's stores tiled to this many documents a side")
    args = parser.parse_args()
    if args.tiled_docs:
        print(json.dumps(tiled_real(args.tiled_docs, args.part_docs, args.ray, args.analyses), indent=2))
        return
    out = []
    rng = np.random.default_rng(0)
    rates = zipf_rates(args.d_sae, args.active, rng)
    shifted = rates.copy()
    shifted[rng.choice(np.flatnonzero(rates > 0.02), 50, replace=False)] += 0.05
    with tempfile.TemporaryDirectory(prefix="saeembed-scale-") as tmp:
        env = {**os.environ, "SAEEMBED_CACHE": str(Path(tmp) / "cache")}
        for parts in sorted(args.parts):
            root = Path(tmp) / f"x{parts}"
            nnz = write_side(root / "a", rates, args.part_docs, parts, args.d_sae, 1)
            nnz += write_side(root / "b", shifted, args.part_docs, parts, args.d_sae, 2)
            a, b = str(root / "a"), str(root / "b")
            clustering = Path(tmp) / "clustering"
            if "assign" in args.analyses and not clustering.exists():  # fitted once, on side b's first part
                fit = run(["cluster", str(next((root / "b").iterdir())), "--concepts", "0,1,2,3,4,5,6,7",
                           "--method", "kmeans", "--clusters", "5", "--save", str(clustering), "-q"], env)
                assert fit["exit"] == 0, fit
            commands = {"diff": ["diff", a, b, "--json", "-q"],
                        "correlations": ["correlations", a, "--json", "-q", "--top", "5"],
                        "search": ["search", a, "0,1,2", "--json", "-q", "--top", "10"],
                        "info": ["info", a, "--json"],  # checked, part by part
                        "assign": ["assign", a, "--clustering", str(clustering), "-o",
                                   str(Path(tmp) / "assigned.parquet"), "-q"]}  # part by part
            row = {"docs_per_side": args.part_docs * parts, "parts_per_side": parts, "nnz_both": nnz,
                   **{name: run(commands[name], env) for name in args.analyses}}
            out.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            for side in ("a", "b"):
                for file in (root / side).iterdir():
                    file.unlink()
    print(json.dumps({"runs": out}, indent=2))


if __name__ == "__main__":
    main()
