"""An interrupted embed resumes where it stopped and ends identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
import torch

from saeembed import EmbedConfig, embed, load_store
from tests import sae_files
from tests.conftest import TEXTS

DOCS = [f"{t} (variant {i})" for i in range(4) for t in TEXTS]  # 32 distinct documents


@pytest.fixture
def setup(tmp_path, llama_dir):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    return corpus, sae


def config(llama_dir, sae, cache, **kw):
    return EmbedConfig(model=str(llama_dir), sae=str(sae), layer=1, cache_dir=cache,
                       **{"window_docs": 8, "batch_tokens": 128, **kw})


def assert_same_store(a, b):
    sa, sb = load_store(a), load_store(b)
    assert sa.frame.equals(sb.frame)
    np.testing.assert_array_equal(sa.matrix.indptr, sb.matrix.indptr)
    np.testing.assert_array_equal(sa.matrix.indices, sb.matrix.indices)
    np.testing.assert_allclose(sa.matrix.data, sb.matrix.data, rtol=1e-3)
    np.testing.assert_array_equal(sa.peak_start, sb.peak_start)


@pytest.mark.parametrize("use_cache", [True, False])
def test_ctrl_c_then_rerun_resumes(setup, llama_dir, tmp_path, use_cache):
    corpus, sae = setup
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "cache-full"))

    out = tmp_path / "resumed.parquet"
    windows = []

    def interrupt_after_two_windows(progress):
        if progress.docs_done and progress.docs_done % 8 == 0 and progress.docs_done not in windows:
            windows.append(progress.docs_done)
            if len(windows) == 2:
                raise KeyboardInterrupt

    cfg = config(llama_dir, sae, tmp_path / "cache", use_cache=use_cache)
    with pytest.raises(KeyboardInterrupt):
        embed([str(corpus)], out, cfg, on_progress=interrupt_after_two_windows)
    assert not out.exists(), "no partial store appears under the output name"
    result = embed([str(corpus)], out, cfg)
    assert result.n_cached == 16, "the two finished windows are not embedded again"
    assert_same_store(full, out)
    assert len(pl.read_parquet(out)) == len(DOCS)
    if not use_cache:
        assert not any(p.name.endswith(".work") for p in tmp_path.iterdir()), "--no-cache leaves nothing behind"


def test_kill_9_then_rerun_resumes(setup, llama_dir, tmp_path):
    corpus, sae = setup
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "cache-full"))
    out, cache = tmp_path / "killed.parquet", tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from saeembed import EmbedConfig, embed
        cfg = EmbedConfig(model={str(llama_dir)!r}, sae={str(sae)!r}, layer=1, cache_dir=Path({str(cache)!r}),
                          window_docs=8, batch_tokens=128)
        def die(progress):
            if progress.docs_done >= 20:  # in the middle of the third window
                os.kill(os.getpid(), signal.SIGKILL)
        embed([{str(corpus)!r}], {str(out)!r}, cfg, on_progress=die)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not out.exists()
    result = embed([str(corpus)], out, config(llama_dir, sae, cache))
    assert result.n_cached == 16
    assert_same_store(full, out)


def test_out_of_memory_batches_are_split_and_retried(setup, llama_dir, tmp_path, monkeypatch):
    corpus, sae = setup
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "c1", batch_tokens=2048))
    from saeembed.reader import Reader

    real = Reader.hidden_states
    sizes = []

    def small_memory(self, batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, batch)

    monkeypatch.setattr(Reader, "hidden_states", small_memory)
    out = tmp_path / "split.parquet"
    embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c2", batch_tokens=2048))
    assert max(sizes) > 2 and any(s <= 2 for s in sizes)
    assert_same_store(full, out)
