"""An interrupted embed resumes where it stopped and ends identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import polars as pl
import pytest
import torch

from saeembed import EmbedConfig, embed, load_store
from saeembed.embedding.cache import VectorCache
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
    # runs batched differently may differ in a float's last bits: floats with a tolerance, the rest exactly
    floats = [c for c, t in sa.frame.schema.items() if getattr(t, "inner", t).is_float()]
    assert sa.frame.drop(floats).equals(sb.frame.drop(floats))
    for column in floats:
        np.testing.assert_allclose(np.asarray(sa.frame[column].to_list(), float),
                                   np.asarray(sb.frame[column].to_list(), float), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(sa.matrix.indptr, sb.matrix.indptr)
    np.testing.assert_array_equal(sa.matrix.indices, sb.matrix.indices)
    np.testing.assert_allclose(sa.matrix.data, sb.matrix.data, rtol=1e-3)
    np.testing.assert_array_equal(sa.peak_start, sb.peak_start)


def assert_resumed_whole_windows(n_cached: int, reported: int) -> None:
    """Every window reported done is kept, whole windows only, and the run did not get to the end. Cache parts
    are written on a background thread, so the window in flight when the run stopped may have landed too (on a
    busy machine the reported count lags the disk): how many more than `reported` is a matter of timing."""
    assert n_cached >= reported, "a window reported done was embedded again"
    assert n_cached % 8 == 0, "only whole windows are kept"
    assert n_cached <= reported + 8, "at most the one window in flight lands after the last report"


@pytest.mark.parametrize("use_cache, slow_disk", [(True, False), (False, False), (True, True)])
def test_ctrl_c_then_rerun_resumes(setup, llama_dir, tmp_path, monkeypatch, use_cache, slow_disk):
    corpus, sae = setup
    if slow_disk:  # a busy machine: parts land well after the window behind them is read (CI saw 24 kept)
        real_put = VectorCache.put

        def slow_put(self, *args, **kwargs):
            time.sleep(0.3)
            return real_put(self, *args, **kwargs)

        monkeypatch.setattr(VectorCache, "put", slow_put)
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "cache-full"))

    out = tmp_path / "resumed.parquet"

    def interrupt_after_two_windows(progress):
        # a window counts once its part is on disk: 16 reported means the first two windows' 16 documents
        if progress.docs_done >= 16:
            raise KeyboardInterrupt

    cfg = config(llama_dir, sae, tmp_path / "cache", use_cache=use_cache)
    with pytest.raises(KeyboardInterrupt):
        embed([str(corpus)], out, cfg, on_progress=interrupt_after_two_windows)
    assert not out.exists(), "no partial store appears under the output name"
    result = embed([str(corpus)], out, cfg)
    assert_resumed_whole_windows(result.n_cached, reported=16)
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
    assert_resumed_whole_windows(result.n_cached, reported=16)
    assert_same_store(full, out)


def test_out_of_memory_batches_are_split_and_retried(setup, llama_dir, tmp_path, monkeypatch):
    corpus, sae = setup
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "c1", batch_tokens=2048))
    from saeembed.embedding.reader import Reader

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


# --- partial windows are committed every COMMIT_SECONDS --------------------------------------------


@pytest.mark.parametrize("commit_seconds, resumed", [(0.0, True), (3600.0, False)])
def test_a_run_inside_one_window_commits_as_it_goes(setup, llama_dir, tmp_path, monkeypatch, commit_seconds,
                                                    resumed):
    """All 32 documents in one window (as any corpus under 2,048 documents with the default window):
    interrupted after a few batches, the run keeps what was finished when a commit was due."""
    import saeembed.embedding.kernel as kernel

    corpus, sae = setup
    full = tmp_path / "full.parquet"
    embed([str(corpus)], full, config(llama_dir, sae, tmp_path / "cache-full", window_docs=2048, batch_tokens=64))
    monkeypatch.setattr(kernel, "COMMIT_SECONDS", commit_seconds)
    batches = []

    def interrupt_after_three_batches(progress):
        if progress.tokens_done:
            batches.append(progress.tokens_done)
            if len(batches) == 3:
                raise KeyboardInterrupt

    out = tmp_path / "resumed.parquet"
    cfg = config(llama_dir, sae, tmp_path / "cache", window_docs=2048, batch_tokens=64)
    with pytest.raises(KeyboardInterrupt):
        embed([str(corpus)], out, cfg, on_progress=interrupt_after_three_batches)
    monkeypatch.setattr(kernel, "COMMIT_SECONDS", 30.0)
    result = embed([str(corpus)], out, cfg)
    if resumed:
        assert 0 < result.n_cached < len(DOCS), "the documents of the first batches come from the cache"
    else:
        assert result.n_cached == 0, "no commit was due: the interrupted window kept nothing"
    assert_same_store(full, out)


# --- atomic writes: stale temporary files of killed runs are swept, a running writer's are not -----


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_temporary_files_are_swept_and_a_live_writers_are_kept(tmp_path):
    import time

    from saeembed.atomic import HOST, atomic_write

    target = tmp_path / "out.csv"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {
            "dead": f".out.csv.{HOST}-{dead}-0badc0de.tmp",
            "live": f".out.csv.{HOST}-{live.pid}-0badc0de.tmp",
            "mine": f".out.csv.{HOST}-{os.getpid()}-0badc0de.tmp",
            "other host": f".out.csv.ffffff-{dead}-0badc0de.tmp" if HOST != "ffffff" else ".out.csv.000000-1-0.tmp",
            "old style, old": ".out.csv.0123abcd.tmp",
            "old style, fresh": ".out.csv.4567cdef.tmp",
            "another target": f".out.csv.bak.{HOST}-{dead}-0badc0de.tmp",
            "not ours": ".out.csv.whatever.tmp",
        }
        for name in names.values():
            (tmp_path / name).write_text("partial")
        two_hours_ago = time.time() - 7200
        os.utime(tmp_path / names["old style, old"], (two_hours_ago, two_hours_ago))
        atomic_write(target, lambda tmp: tmp.write_text("whole"))
        assert target.read_text() == "whole"
        left = {label for label, name in names.items() if (tmp_path / name).exists()}
        assert left == {"live", "mine", "other host", "old style, fresh", "another target", "not ours"}
    finally:
        live.kill()
        live.wait()


def test_kill_9_during_a_write_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    from saeembed.atomic import atomic_write

    target = tmp_path / "table.parquet"
    script = textwrap.dedent(f"""
        import os, signal
        from saeembed.atomic import atomic_write
        def write(tmp):
            tmp.write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not target.exists() and len(list(tmp_path.glob(".table.parquet.*.tmp"))) == 1
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and not list(tmp_path.glob(".*.tmp"))


def test_two_runs_writing_one_output_both_finish(tmp_path):
    """Each writer's temporary file survives the other's sweep, so both renames succeed and the output is
    always one writer's whole file."""
    target = tmp_path / "shared.bin"
    script = textwrap.dedent(f"""
        import sys
        from saeembed.atomic import atomic_write
        payload = sys.argv[1].encode() * 100_000
        for _ in range(40):
            atomic_write({str(target)!r}, lambda tmp: tmp.write_bytes(payload))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", script, tag], env=env, stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert target.read_bytes() in (b"a" * 100_000, b"b" * 100_000)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_vector_cache_sweeps_parts_of_killed_runs(tmp_path):
    from saeembed.atomic import HOST
    from saeembed.embedding.cache import VectorCache

    cache = VectorCache(tmp_path, {"a": 1})
    dead = cache.folder / f".part-1-0badc0de.parquet.{HOST}-{_dead_pid()}-0badc0de.tmp"
    live = cache.folder / f".part-2-0badc0de.parquet.{HOST}-{os.getppid()}-0badc0de.tmp"
    dead.write_text("partial")
    live.write_text("partial")
    VectorCache(tmp_path, {"a": 1})
    assert not dead.exists() and live.exists()


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """ENOSPC while writing said "No space left on device" and nothing of where."""
    import errno

    import pytest

    from saeembed.atomic import atomic_write

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "out.parquet", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == [], "the temporary file is gone"


def test_progress_never_goes_back_while_a_part_is_being_written(setup, llama_dir, tmp_path, monkeypatch):
    """A window's part is written on a background thread while the next window is read; held until the next
    window reports, the count must stay where the last window left it, and end at every document."""
    import threading

    from saeembed.embedding.cache import VectorCache

    corpus, sae = setup
    gate = threading.Event()
    real_put = VectorCache.put

    def held_put(self, *args, **kwargs):
        assert gate.wait(timeout=120), "the next window never reported"
        gate.clear()
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(VectorCache, "put", held_put)
    reported = []

    def on_progress(progress):
        reported.append(progress.docs_done)
        gate.set()  # let the part in flight land, now that this report was made without it

    result = embed([str(corpus)], tmp_path / "s.parquet", config(llama_dir, sae, tmp_path / "cache"),
                   on_progress=on_progress)
    assert result.n_docs == len(DOCS) and reported[-1] == len(DOCS)
    assert reported == sorted(reported), f"the count went back: {reported}"
