"""`engine="ray"` on a real local Ray (2 CPUs): the folder store equals the single-process store, a killed
run resumes without redoing finished parts, a worker killed mid-run is replaced and its batch retried, and
every analysis reads the folder. Ray starts once per session (a few seconds); each run loads the tiny
model in two actors."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import ray  # the Ray extra is part of the dev install
from typer.testing import CliRunner

from commands.app import app
from saeembed import EmbedConfig, Embedder, embed, load_store
from saeembed.errors import ConfigError, SAEError, StoreError
from saeembed.store import read_meta
from tests import sae_files
from tests.conftest import STRICT_TEMPLATE, TEXTS, with_chat_template

# 32 distinct documents and 16 repeats in later parts (embedded once, written wherever they occur), a
# field only some records carry.
DOCS = [f"{t} (variant {i % 4})" for i in range(6) for t in TEXTS]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray with 2 CPUs for the module; runs join it (the library through `ray.is_initialized`,
    the CLI in a subprocess through --ray-address)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, llama_dir):
    root = tmp_path_factory.mktemp("ray")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t, "n": i, **({"tag": "x"} if i % 5 == 0 else {})})
                              + "\n" for i, t in enumerate(DOCS)))
    sae, _ = sae_files.saelens(root / "sae", 64, arch="topk", layer=1)
    local = root / "local.parquet"
    result = embed([str(corpus)], local, config(llama_dir, sae, root / "cache", dense=True))
    return corpus, sae, local, result


def config(llama_dir, sae, cache, **kw):
    return EmbedConfig(model=str(llama_dir), sae=str(sae), cache_dir=cache,
                       **{"layer": 1, "window_docs": 8, "batch_tokens": 256, **kw})


def assert_same_store(local: Path, folder: Path) -> None:
    a, b = load_store(local), load_store(folder)
    # A retried batch is grouped differently, so float sums differ in the last bits: floats are compared
    # with a tolerance, everything else exactly.
    floats = [c for c, t in a.frame.schema.items() if getattr(t, "inner", t).is_float()]
    assert a.frame.columns == b.frame.columns
    assert a.frame.drop(floats).equals(b.frame.drop(floats)), "ids in input order, text, every field"
    for column in floats:
        np.testing.assert_allclose(np.asarray(a.frame[column].to_list(), float),
                                   np.asarray(b.frame[column].to_list(), float), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(a.matrix.indptr, b.matrix.indptr)
    np.testing.assert_array_equal(a.matrix.indices, b.matrix.indices)
    np.testing.assert_allclose(a.matrix.data, b.matrix.data, rtol=1e-3)
    np.testing.assert_array_equal(a.peak_start, b.peak_start)
    np.testing.assert_array_equal(a.peak_end, b.peak_end)
    differ = {k for k in set(a.meta) | set(b.meta) if a.meta.get(k) != b.meta.get(k)}
    assert differ <= {"created", "part"}, differ


def test_a_ray_run_equals_the_single_process_store(setup, llama_dir, ray_address, tmp_path, monkeypatch):
    """Also: a run killed after the final rename, before its job file went, is finished by the next run
    without embedding anything."""
    import saeembed.embedding.ray_engine as engine

    corpus, sae, local, local_result = setup
    out = tmp_path / "out"
    drop = engine._drop_job_file  # a kill right after the final rename, before the job file goes
    monkeypatch.setattr(engine, "_drop_job_file", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c", dense=True, engine="ray", workers=2))
    assert (out / "job.json").exists()
    monkeypatch.setattr(engine, "_drop_job_file", drop)
    monkeypatch.setattr(engine, "ray_session", None)  # the second run must not need Ray
    result = embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c", dense=True, engine="ray", workers=2))
    assert result.n_cached == len(DOCS)
    assert_same_store(local, out)
    parts = sorted(p.name for p in out.iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(-(-len(DOCS) // 8))], "one part per window, nothing else"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "the work folder is gone"
    for name in ("n_docs", "n_tokens", "n_chunked", "n_truncated", "n_unpooled"):
        assert getattr(result, name) == getattr(local_result, name), name
    assert read_meta(out)["n_tokens"] == read_meta(local)["n_tokens"]


def test_chats_with_every_key_equal_the_single_process_store(setup, llama_dir, ray_address, tmp_path):
    """Chats travel to the workers as JSON (keys beside role and content too), pooled over the answer."""
    _, sae, _, _ = setup
    corpus = tmp_path / "chats.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": "Say something.", "name": "ann", "meta": {"turn": i}},
        {"role": "assistant", "content": t}]}) + "\n" for i, t in enumerate(DOCS[:12])))
    local, folder = tmp_path / "local.parquet", tmp_path / "out"
    embed([str(corpus)], local, config(llama_dir, sae, tmp_path / "cache", pool_roles=("assistant",)))
    embed([str(corpus)], folder, config(llama_dir, sae, tmp_path / "cache", pool_roles=("assistant",),
                                        engine="ray", workers=2))
    assert_same_store(local, folder)
    assert load_store(folder).frame["messages"][0][0]["name"] == "ann"


def test_the_cli_runs_on_a_cluster_address_and_analyses_read_the_folder(setup, llama_dir, ray_address, tmp_path):
    corpus, sae, local, _ = setup
    out = tmp_path / "cli-out"
    command = [sys.executable, "-c", "from commands.app import main; main()", "embed", str(corpus),
               "-o", str(out), "--model", str(llama_dir), "--sae", str(sae), "--layer", "1", "--engine", "ray",
               "--ray-address", ray_address, "--workers", "2", "--dense", "--json"]
    # the timeout only guards a hang: beside busy processes Ray's niced actors can take many minutes
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["docs"] == len(DOCS) and summary["path"] == str(out)
    assert "Traceback" not in proc.stderr
    store = load_store(out)
    np.testing.assert_array_equal(store.matrix.indices, load_store(local).matrix.indices)

    runner = CliRunner()
    for args in (["info", str(out)], ["correlations", str(out), "--top", "5"],
                 ["search", str(out), "budget committee", "--dense", "--top", "3"], ["diff", str(out), str(local)]):
        done = runner.invoke(app, args)
        assert done.exit_code == 0, (args, done.output)
    assert "documents" in runner.invoke(app, ["info", str(out)]).output


def test_a_killed_run_resumes_without_redoing_finished_parts(setup, llama_dir, ray_address, tmp_path):
    corpus, sae, local, _ = setup
    out = tmp_path / "killed"
    work = tmp_path / ".killed.ray-work"
    # The driver writes two parts a second (its progress callback sleeps), so the kill lands mid-run.
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from saeembed import EmbedConfig, embed
        cfg = EmbedConfig(model={str(llama_dir)!r}, sae={str(sae)!r}, layer=1, window_docs=8, batch_tokens=256,
                          dense=True, engine="ray", ray_address={ray_address!r}, workers=2)
        embed([{str(corpus)!r}], Path({str(out)!r}), cfg, on_progress=lambda progress: time.sleep(0.5))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import time

        # waits for the parts, not for a time: on a starved machine (the actors run niced) two parts took over
        # 5 minutes; the deadline only keeps a broken run from hanging the suite
        deadline = time.monotonic() + 1800
        while len(list(work.glob("part-*.parquet"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before two parts were written"
        assert time.monotonic() < deadline, "no two parts in 30 minutes"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    assert not out.exists(), "no partial store appears under the output name"
    written = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("part-*.parquet")}
    assert 2 <= len(written) < -(-len(DOCS) // 8)

    result = embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c", dense=True, engine="ray", workers=2))
    assert result.n_cached == 8 * len(written), "the parts written before the kill are not embedded again"
    for name, stat in written.items():
        assert (os.stat(out / name).st_ino, os.stat(out / name).st_mtime_ns) == stat or name == "part-00000.parquet"
    assert_same_store(local, out)


def _worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"SaeembedWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_worker_killed_mid_run_is_replaced_and_its_batch_retried(setup, llama_dir, ray_address, tmp_path):
    corpus, sae, local, _ = setup
    killed = []

    def kill_a_worker(progress):
        if progress.docs_done and not killed:
            pids = _worker_pids()
            assert pids, "the actors run as processes named after SaeembedWorker"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    out = tmp_path / "out"
    embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c", dense=True, window_docs=2, engine="ray",
                                     workers=2), on_progress=kill_a_worker)
    assert killed
    assert_same_store(local, out)


def test_in_memory_documents_into_a_used_folder_replace_the_store(setup, llama_dir, ray_address, tmp_path):
    """`Embedder.embed` on Ray, into a folder that holds a bigger store: the folder ends with the new one only."""
    corpus, sae, _, _ = setup
    out = tmp_path / "out"
    embed([str(corpus)], out, config(llama_dir, sae, tmp_path / "c", engine="ray", workers=1))
    records = [{"id": f"s{i}", "text": t, "kind": "new"} for i, t in enumerate(TEXTS[:3])]
    store = Embedder(config=config(llama_dir, sae, tmp_path / "c", engine="ray", workers=1)).embed(records, path=out)
    assert store.frame["id"].to_list() == ["s0", "s1", "s2"] and store.frame["kind"].to_list() == ["new"] * 3
    assert [p.name for p in out.iterdir()] == ["part-00000.parquet"], "no part of the earlier store is left"
    assert load_store(out).frame.equals(store.frame)


def test_a_model_that_does_not_fit_the_sae_is_one_error_before_any_actor(setup, llama_dir, ray_address, tmp_path):
    corpus, sae, _, _ = setup
    with pytest.raises(SAEError, match=r"set layer=1 \(--layer 1\)"):
        embed([str(corpus)], tmp_path / "out", config(llama_dir, sae, tmp_path / "c", layer=2, engine="ray"))
    with pytest.raises(ConfigError, match="do not fit the Ray cluster"):
        embed([str(corpus)], tmp_path / "out", config(llama_dir, sae, tmp_path / "c", engine="ray", workers=3))


def test_a_worker_that_cannot_read_the_weights_is_one_line(setup, llama_dir, ray_address, tmp_path):
    """The first check reads the model's config and tokenizer only; the actors fail on the weights. The
    run stops (it does not retry forever) with one line naming the error, not Ray's wrapper of it."""
    import shutil

    corpus, sae, _, _ = setup
    broken = tmp_path / "broken-llama"
    shutil.copytree(llama_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    runner = CliRunner()
    done = runner.invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(broken),
                                    "--sae", str(sae), "--layer", "1", "--engine", "ray", "--workers", "1"])
    assert done.exit_code == 1, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.output
    assert "SafetensorError" in lines[0] and "ray::" not in lines[0] and "Traceback" not in done.output
    assert not (tmp_path / "out").exists()
    fixed = runner.invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(llama_dir),
                                "--sae", str(sae), "--layer", "1", "--engine", "ray", "--workers", "1"])
    assert fixed.exit_code == 0, "a failed run that wrote no part does not block the next"
    assert load_store(tmp_path / "out").n_docs == len(DOCS)


def test_nothing_of_the_user_is_replaced_or_deleted(setup, llama_dir, tmp_path):
    """A folder of the user's own stores, and the work folder of another interrupted run, are refused before
    Ray is reached, and left as they were."""
    import shutil

    corpus, sae, local, _ = setup
    stores = tmp_path / "stores"
    stores.mkdir()
    shutil.copy(local, stores / "tweets.parquet")
    base = ["--model", str(llama_dir), "--sae", str(sae), "--layer", "1", "--engine", "ray",
            "--ray-address", "127.0.0.1:1"]
    runner = CliRunner()
    done = runner.invoke(app, ["embed", str(corpus), "-o", str(stores), *base])
    assert done.exit_code == 1 and "tweets.parquet" in done.output and "new or empty folder" in done.output
    assert (stores / "tweets.parquet").read_bytes() == local.read_bytes()

    other = tmp_path / ".out.ray-work"
    other.mkdir()
    (other / "job.json").write_text(json.dumps({"job": "another run"}))
    (other / "part-00000.parquet").write_bytes(local.read_bytes())
    done = runner.invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "out"), *base])
    assert done.exit_code == 1 and "interrupted run with other documents" in done.output, done.output
    assert sorted(p.name for p in other.iterdir()) == ["job.json", "part-00000.parquet"]


def test_parts_of_another_model_or_precision_are_not_mixed():
    from saeembed.embedding.ray_engine import _check_same_model

    meta = {"model": {"id": "m", "fingerprint": "f", "layer": 1, "dtype": "float32"},
            "sae": {"fingerprint": "s", "d_sae": 96}, "pooling": "max", "max_tokens": 256}
    _check_same_model("a", meta, "b", json.loads(json.dumps(meta)))
    on_gpu = json.loads(json.dumps(meta))
    on_gpu["model"]["dtype"] = "bfloat16"
    with pytest.raises(StoreError, match="model.dtype"):
        _check_same_model("the parts written", meta, "the model now", on_gpu)
    fast_encoder = json.loads(json.dumps(meta))
    fast_encoder["sae"]["compute_dtype"] = "bfloat16"  # a worker whose CPU multiplies bfloat16 natively
    with pytest.raises(StoreError, match="sae.compute_dtype"):
        _check_same_model("the parts written", meta, "the model now", fast_encoder)


def test_bad_input_is_refused_before_ray_is_reached(tmp_path, llama_dir):
    """The corpus, the output folder and the settings are checked first: the unreachable cluster is never tried."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    runner = CliRunner()
    base = ["--model", str(llama_dir), "--sae", "unused", "--engine", "ray", "--ray-address", "127.0.0.1:1"]
    done = runner.invoke(app, ["embed", str(bad), "-o", str(tmp_path / "out"), *base])
    assert done.exit_code == 1 and "bad.jsonl" in done.output and "line 2" in done.output, done.output
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine"}\n')
    done = runner.invoke(app, ["embed", str(good), "-o", str(taken), *base])
    assert done.exit_code == 1 and "notes.txt" in done.output and "new or empty folder" in done.output, done.output
    assert (taken / "notes.txt").read_text() == "mine"
    done = runner.invoke(app, ["embed", str(good), "-o", str(tmp_path / "x.parquet"), "--model", str(llama_dir),
                               "--sae", "unused", "--workers", "2"])
    assert done.exit_code != 0 and "--engine ray" in done.output
    done = runner.invoke(app, ["embed", str(good), "-o", str(tmp_path / "x.parquet"), "--cpus-per-worker", "2"])
    assert done.exit_code != 0 and "--engine ray" in done.output


def test_a_conversation_the_template_rejects_is_refused_before_ray_is_reached(tmp_path, llama_dir):
    """As on the local engine, every conversation is rendered with the chat template (tokenizer only) before
    anything starts: the unreachable cluster is never tried, and the line names the record."""
    model = with_chat_template(llama_dir, tmp_path / "model", STRICT_TEMPLATE)
    chats = [[{"role": "user", "content": t}] for t in TEXTS[:4]]
    chats[2] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    corpus = tmp_path / "chats.jsonl"
    corpus.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in chats))
    done = CliRunner().invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "out"), "--model", str(model),
                                    "--sae", "unused", "--layer", "1", "--engine", "ray",
                                    "--ray-address", "127.0.0.1:1"])
    assert done.exit_code == 1, done.output
    assert "1 conversation(s) cannot be read" in done.output and "line 3" in done.output, done.output
    assert "no system turns" in done.output and not (tmp_path / "out").exists()


def test_without_ray_installed_the_engine_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine"}\n')
    done = CliRunner().invoke(app, ["embed", str(good), "-o", str(tmp_path / "out"), "--engine", "ray"])
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == ['error: --engine ray needs Ray Data, which is not installed: '
                                                'pip install "saeembed[ray]"']


def test_part_names_sort_in_input_order():
    from saeembed.embedding.ray_engine import _part_name, _plan

    assert _plan(10, 4) == [(0, 4), (4, 8), (8, 10)]
    names = [_part_name(i, 123_456) for i in range(0, 123_456, 997)]
    assert names == sorted(names) and names[0] == "part-000000.parquet"
