"""The analyses of folder stores with `engine="ray"` (each part's work a Ray task on a real local Ray of 2 CPUs)
give the results of the same analyses in this process."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import ray  # the Ray extra is part of the dev install
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import DiffConfig, SearchConfig
from saeembed.analysis.correlations import correlations
from saeembed.analysis.diff import diff
from saeembed.analysis.search import search
from saeembed.errors import StoreError
from saeembed.stream import StoreStream
from tests.test_streamed import NO_LABELS, corpus, split


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    a = corpus(root / "a.parquet", 700, 1, {3: 0.3, 4: 0.25, 7: 0.02, "lists": 0.6})
    b = corpus(root / "b.parquet", 600, 2, {3: 0.1, 4: 0.05, 7: 0.2})
    return split(a, root / "A", 3), split(b, root / "B", 4)


def test_diff_correlations_and_search_on_ray_equal_the_local_ones(folders, ray_address):
    folder_a, folder_b = folders
    local = [StoreStream(folder_a), StoreStream(folder_b)]
    on_ray = [StoreStream(folder_a, engine="ray"), StoreStream(folder_b, engine="ray")]
    np.testing.assert_array_equal(local[0].n_tokens, on_ray[0].n_tokens)
    np.testing.assert_array_equal(local[1].counts, on_ray[1].counts)
    config = DiffConfig(holdout=0.5)
    one, other = (diff(*stores, config, names=["A", "B"], labels=NO_LABELS) for stores in (local, on_ray))
    assert one.table.equals(other.table) and one.form.equals(other.form) and one.themes.equals(other.themes)
    pairs = [correlations(stores[0], labels=NO_LABELS).table.sort("latent_a", "latent_b") for stores in (local, on_ray)]
    assert pairs[0].equals(pairs[1]) and len(pairs[0])
    found = [search(stores[1], "3, 4", SearchConfig(top=20), where="n_tokens > 30", labels=NO_LABELS).table
             for stores in (local, on_ray)]
    assert found[0].equals(found[1]) and len(found[0]) == 20


def test_a_cli_diff_with_engine_ray(folders, ray_address):
    folder_a, folder_b = folders
    runner = CliRunner()
    outputs = [runner.invoke(app, ["diff", str(folder_a), str(folder_b), "--json", *extra])
               for extra in ([], ["--engine", "ray", "--ray-address", ray_address])]
    assert all(out.exit_code == 0 for out in outputs), outputs[1].output
    records = [[json.loads(line) for line in out.output.splitlines() if line.startswith("{")] for out in outputs]
    assert records[0] == records[1] and len(records[0]) > 3


def test_a_damaged_part_read_by_a_ray_task_is_one_line(folders, tmp_path, ray_address):
    import shutil

    folder_a, _ = folders
    broken = tmp_path / "broken"
    shutil.copytree(folder_a, broken)
    part = sorted(broken.iterdir())[1]
    part.write_bytes(part.read_bytes()[:-200])  # truncated
    with pytest.raises(StoreError, match="part-00001"):
        StoreStream(broken, engine="ray")
    runner = CliRunner()
    out = runner.invoke(app, ["correlations", str(broken), "--engine", "ray", "--ray-address", ray_address])
    assert out.exit_code != 0 and "part-00001" in out.output and "Traceback" not in out.output
