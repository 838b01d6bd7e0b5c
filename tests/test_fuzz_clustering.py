"""The loader of saved clusterings refuses every damaged folder in one line naming the file (and field):
any JSON in any field of clustering.json, any bytes as clustering.json, any array in place of one of
clustering.safetensors' (its checksum made to match, so the array checks are reached), damaged tables.
What loads must then assign documents (or refuse the store in one line), never raise anything else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from saeembed.analysis.assign import ARRAYS, CLUSTERS, HEAD, load_clustering, save_clustering
from saeembed.analysis.cluster import cluster
from saeembed.analysis.concepts import select_concepts
from saeembed.analysis.config import ClusterConfig
from saeembed.errors import SaeEmbedError
from saeembed.labels import Labels
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store

D = 8
# 100 examples per test keep the file at a few seconds; SAEEMBED_FUZZ_EXAMPLES=2000 searches deeper
EXAMPLES = int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
METHODS = {"spectral": ClusterConfig(k=2, neighbors=5), "kmeans": ClusterConfig(method="kmeans", k=2),
           "hdbscan": ClusterConfig(method="hdbscan", min_cluster_size=5)}
HEAD_FIELDS = ["format", "version", "method", "config", "config.method", "config.similarity", "config.neighbors",
               "config.min_cluster_size", "config.k", "unit", "concepts", "concepts.labels", "concepts.why",
               "concepts.query", "concepts.matched", "concepts.notes", "store", "store.sae", "store.sae.d_sae",
               "store.model", "clusters", "sha256", "n_docs"]
ARRAY_NAMES = ["latents", "labels", "weights", "indptr", "indices", "values", "reference", "centroids", "coords",
               "components", "extra"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small store with two planted groups, and each method's clustering of it saved."""
    root = tmp_path_factory.mktemp("fuzz-clustering")
    rng = np.random.default_rng(0)
    n = 60
    group = np.repeat([0, 1], n // 2)
    columns = random_columns(n, np.full(D, 0.1), rng)
    for latent in range(4):
        columns[latent] = np.flatnonzero((group == latent // 2) & (rng.random(n) < 0.9))
    write_store(root / "s.parquet", vectors_from_columns(n, columns, rng), None, fake_meta(D))
    from saeembed.store import load_store

    store = load_store(root / "s.parquet")
    labels = Labels(D, {}, {}, {})
    concepts = select_concepts("0,1,2,3", store, labels=labels)
    folders = {method: save_clustering(cluster(store, concepts, config, labels=labels), store, root / method)
               for method, config in METHODS.items()}
    return store, folders


def _copy(folder: Path, into: Path) -> Path:
    target = into / folder.name
    shutil.copytree(folder, target)
    return target


def _set(data: dict, path: str, value, delete: bool) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.get(key) if isinstance(data.get(key), dict) else data.setdefault(key, {})
        if not isinstance(data, dict):
            return
    if delete:
        data.pop(keys[-1], None)
    else:
        data[keys[-1]] = value


def _loads_or_refuses(folder: Path, store) -> None:
    """Load, and assign when it loads: a correct result or one SaeEmbedError line naming the folder."""
    try:
        model = load_clustering(folder)
    except SaeEmbedError as exc:
        message = str(exc)
        assert "\n" not in message and str(folder) in message, message
        return
    try:
        placed = model.assign(store)
    except SaeEmbedError as exc:
        assert "\n" not in str(exc)
        return
    frame = placed.assignments
    assert len(frame) == store.n_docs
    assert frame["membership"].is_between(0, 1).all() and frame["outlier_score"].is_between(0, 1).all()


def _rehash(folder: Path, name: str) -> None:
    head = json.loads((folder / HEAD).read_text())
    head["sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / HEAD).write_text(json.dumps(head))


@FUZZ
@given(method=st.sampled_from(list(METHODS)), path=st.sampled_from(HEAD_FIELDS), value=JSON, delete=st.booleans())
def test_any_value_in_any_field_of_the_head(saved, method, path, value, delete):
    store, folders = saved
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(folders[method], Path(tmp))
        head = json.loads((folder / HEAD).read_text())
        _set(head, path, value, delete)
        (folder / HEAD).write_text(json.dumps(head))
        _loads_or_refuses(folder, store)


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_the_head(saved, data):
    store, folders = saved
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(folders["spectral"], Path(tmp))
        (folder / HEAD).write_bytes(data)
        _loads_or_refuses(folder, store)


ARRAY = hnp.arrays(dtype=st.sampled_from([np.int8, np.int32, np.int64, np.uint32, np.float16, np.float32,
                                          np.float64, np.bool_]),
                   shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=70))


@FUZZ
@given(method=st.sampled_from(list(METHODS)), name=st.sampled_from(ARRAY_NAMES), array=ARRAY, delete=st.booleans(),
       at=st.integers(0, 10**6), special=st.sampled_from([None, -3, -1, 0, 1, 7, 10**6, np.nan, np.inf, 1e30]))
def test_any_array_in_place_of_a_saved_one(saved, method, name, array, delete, at, special):
    """`special`: keep the saved array's shape and dtype and change one value to it (out of range, NaN)."""
    from safetensors.numpy import load, save

    store, folders = saved
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(folders[method], Path(tmp))
        arrays = load((folder / ARRAYS).read_bytes())
        if delete:
            arrays.pop(name, None)
        elif special is not None and name in arrays and arrays[name].size:
            changed = arrays[name].copy()
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                changed.reshape(-1)[at % changed.size] = np.array(special).astype(changed.dtype)
            arrays[name] = changed
        else:
            arrays[name] = np.ascontiguousarray(array)
        try:
            blob = save(arrays)
        except Exception:  # noqa: BLE001 - a shape or dtype safetensors cannot hold: nothing to load
            return
        (folder / ARRAYS).write_bytes(blob)
        _rehash(folder, ARRAYS)
        _loads_or_refuses(folder, store)


@FUZZ
@given(method=st.sampled_from(list(METHODS)), cut=st.integers(0, 4000), flip=st.integers(0, 4000),
       name=st.sampled_from([ARRAYS, CLUSTERS]), rehash=st.booleans())
def test_damaged_files(saved, method, cut, flip, name, rehash):
    store, folders = saved
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy(folders[method], Path(tmp))
        data = bytearray((folder / name).read_bytes())
        if data:
            data[flip % len(data)] ^= 0xFF
        (folder / name).write_bytes(bytes(data[: max(len(data) - cut, 0)] if cut % 3 else data))
        if rehash:
            _rehash(folder, name)
        _loads_or_refuses(folder, store)
