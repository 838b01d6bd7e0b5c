"""The store reader refuses every damaged store in one line naming the file (and row), before any
analysis sees it: metadata that is not JSON, not an object or lacks a field; rows whose indices,
values or peak spans cannot be right; files that are not Parquet or are cut short. Example tests for
each case, then hypothesis fuzzing over any metadata, any rows and any truncation or damage."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from saeembed.errors import SaeEmbedError
from saeembed.store import META_KEY, StoreError, is_store, load_store, read_meta
from saeembed.synthetic import fake_meta, vectors_from_columns, write_store

D = 6
# 100 examples per test (200 for rows) keep the file at about 3 s; SAEEMBED_FUZZ_EXAMPLES=2000 searches deeper
EXAMPLES = int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def raw_table(rows: list[dict], ids: list | None = None, texts: list | None = None,
              value_type: pa.DataType = pa.float32(), index_type: pa.DataType = pa.int32()) -> pa.Table:
    """A store table written cell by cell, so each row's lists may disagree (a real writer never does)."""
    n = len(rows)
    return pa.table({
        "id": pa.array(ids if ids is not None else [f"doc{i}" for i in range(n)], pa.string()),
        "text": pa.array(texts if texts is not None else ["a document of twenty-nine chars"[:29]] * n, pa.string()),
        "indices": pa.array([r["indices"] for r in rows], pa.list_(index_type)),
        "values": pa.array([r["values"] for r in rows], pa.list_(value_type)),
        "peak_start": pa.array([r["start"] if "start" in r else [0] * len(r["indices"]) for r in rows],
                               pa.list_(pa.int32())),
        "peak_end": pa.array([r["end"] if "end" in r else [3] * len(r["indices"]) for r in rows], pa.list_(pa.int32())),
        "n_tokens": pa.array([5] * n, pa.int32()),
    })


def write_raw(path: Path, table: pa.Table, meta: bytes | dict | None = None) -> Path:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta or fake_meta(D)).encode()
    pq.write_table(table.replace_schema_metadata({META_KEY: raw}), path)
    return path


def refused(path: Path, *fragments: str) -> str:
    """load_store's one-line StoreError, which names the file and holds each fragment."""
    with pytest.raises(StoreError) as caught:
        load_store(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def good_row(*latents: int) -> dict:
    return {"indices": list(latents), "values": [1.0] * len(latents)}


# -- metadata --------------------------------------------------------------------------------------

def test_metadata_that_is_not_json_or_not_an_object_or_incomplete(tmp_path):
    table = raw_table([good_row(1, 2)])
    path = tmp_path / "s.parquet"
    write_raw(path, table, b"\xff{not json")
    refused(path, "metadata is not JSON", "embed the corpus again")
    write_raw(path, table, b"[1, 2]")
    refused(path, "metadata is a JSON list, not an object")
    write_raw(path, table, b'"a string"')
    refused(path, "metadata is a JSON string, not an object")
    write_raw(path, table, b"[" * 100_000 + b"]" * 100_000)  # deeper than the JSON parser recurses
    refused(path, "metadata is not JSON")
    meta = fake_meta(D)
    del meta["sae"]["d_sae"]
    write_raw(path, table, meta)
    refused(path, "lacks sae.d_sae")
    for field, value, fragment in (("sae", {"d_sae": "6"}, 'sae.d_sae = "6", not a positive integer'),
                                   ("sae", {"d_sae": 0}, "sae.d_sae = 0"),
                                   ("sae", {"d_sae": True}, "sae.d_sae = true"),
                                   ("sae", {"fingerprint": "../../etc/x"}, "sae.fingerprint"),
                                   ("sae", {"fingerprint": None}, "sae.fingerprint = null"),
                                   ("model", [], "model = [], not an object"),
                                   ("pooling", 3, "pooling = 3, not a string"),
                                   ("versions", "1.0", "versions"),
                                   ("store_version", "1", "store_version")):
        meta = fake_meta(D)
        meta[field] = {**meta[field], **value} if isinstance(value, dict) else value
        write_raw(path, table, meta)
        refused(path, fragment)
        with pytest.raises(StoreError, match="metadata"):
            read_meta(path)
    write_raw(path, table, fake_meta(D, store_version=7))
    refused(path, "newer saeembed (store version 7", "upgrade saeembed")
    write_raw(path, table, fake_meta(D))
    assert read_meta(path) == fake_meta(D) and is_store(path)


def test_files_that_are_not_parquet_or_are_cut_short(tmp_path):
    path = tmp_path / "s.parquet"
    path.write_text('{"text": "a corpus line, not a store"}\n')
    refused(path, "not a readable Parquet store", "embed the corpus again")
    assert not is_store(path)
    path.write_bytes(b"")
    refused(path, "not a readable Parquet store")
    good = write_store(tmp_path / "good.parquet", vectors_from_columns(30, [np.arange(0, 30, 2)] * 3,
                                                                       np.random.default_rng(0)), d_sae=D)
    data = good.read_bytes()
    for cut in (4, len(data) // 3, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        refused(path, "not a readable Parquet store")
    pq.write_table(pa.table({"text": ["a corpus in parquet"]}), path)
    refused(path, "has no saeembed metadata")


def test_a_folder_of_parts_is_checked_part_by_part(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_raw(folder / "a.parquet", raw_table([good_row(1), good_row(0, 5)]))
    write_raw(folder / "b.parquet", raw_table([good_row(2, 3)]))
    read = []
    store = load_store(folder, on_progress=lambda done, total: read.append((done, total)))
    assert read == [(1, 2), (2, 2)], "each part read is reported"
    assert [a.tolist() for a in store.matrix.toarray().nonzero()] == [[0, 1, 1, 2, 2], [1, 0, 5, 2, 3]]
    assert store.frame["id"].to_list() == ["doc0", "doc1", "doc0"] and len(store.peak_start) == 5
    write_raw(folder / "b.parquet", raw_table([good_row(2, 9)]))
    refused(folder / "b.parquet", "b.parquet, row 0 (id 'doc0'): latent index 9 is outside 0..5")
    with pytest.raises(StoreError, match=r"b\.parquet, row 0"):
        load_store(folder)
    write_raw(folder / "b.parquet", raw_table([good_row(2)]), fake_meta(D + 1))
    with pytest.raises(StoreError, match="embedded differently \\(sae.d_sae: 6 vs 7\\)"):
        load_store(folder)
    write_raw(folder / "b.parquet", raw_table([good_row(2)]), b"nope")
    with pytest.raises(StoreError, match="b.parquet: its saeembed metadata is not JSON"):
        load_store(folder)


def test_info_reads_a_folder_part_by_part_and_says_what_load_store_would(tmp_path):
    """`summarize` (saeembed info) streams the parts: the same counts as the whole store loaded, checked as
    load_store checks it, and parts whose fields differ are refused."""
    from saeembed.summary import summarize

    folder = tmp_path / "parts"
    folder.mkdir()
    write_raw(folder / "a.parquet", raw_table([good_row(1), good_row(0, 5), good_row()]))
    write_raw(folder / "b.parquet", raw_table([good_row(2, 3, 4), good_row(1, 2)]))
    counts = np.diff(load_store(folder).matrix.indptr)
    for check in (True, False):
        info = summarize(folder, check=check)
        assert info["documents"] == len(counts) == 5 and info["checked"] is check
        assert info["mean_latents_per_doc"] == pytest.approx(counts.mean())
        assert info["median_latents_per_doc"] == np.median(counts)
    write_raw(folder / "b.parquet", raw_table([good_row(2, 9)]))
    with pytest.raises(StoreError, match=r"b\.parquet, row 0"):
        summarize(folder)
    write_raw(folder / "b.parquet", raw_table([good_row(2)]).append_column("extra", pa.array(["x"])))
    with pytest.raises(StoreError, match="different fields"):
        load_store(folder)
    with pytest.raises(StoreError, match="different fields"):
        summarize(folder)


# -- rows ------------------------------------------------------------------------------------------

def test_rows_with_impossible_latents_values_or_spans(tmp_path):
    path = tmp_path / "s.parquet"
    ok = good_row(0, 2)
    cases = [
        ([ok, good_row(1, D)], "row 1 (id 'doc1'): latent index 6 is outside 0..5"),
        ([ok, ok, good_row(-1, 2)], "row 2 (id 'doc2'): latent index -1 is outside 0..5"),
        ([ok, {"indices": [1, 2], "values": [1.0]}], "row 1 (id 'doc1'): 2 latent indices but 1 values"),
        ([{"indices": [1], "values": [1.0], "start": [0, 1], "end": [3, 4]}], "row 0 (id 'doc0'): 1 latent indices "
                                                                              "but 2 peak_start"),
        ([ok, {"indices": [1, 2], "values": [1.0, math.nan]}], "row 1 (id 'doc1'): a value that is not a finite "
                                                                "number (nan) for latent 2"),
        ([{"indices": [3], "values": [-math.inf]}], "not a finite number (-inf)"),
        ([ok, good_row(3, 1)], "row 1 (id 'doc1'): latent indices not strictly ascending"),
        ([ok, good_row(3, 3)], "row 1 (id 'doc1'): latent indices not strictly ascending"),
        ([{"indices": [1], "values": [1.0], "start": [5], "end": [99]}], "peak span 5..99 of latent 1 is not within "
                                                                         "its text of 29 characters"),
        ([{"indices": [1], "values": [1.0], "start": [5], "end": [2]}], "peak span 5..2"),
        ([{"indices": [1], "values": [1.0], "start": [-1], "end": [2]}], "peak span -1..2"),
        ([ok, {"indices": None, "values": None, "start": None, "end": None}],
         "row 1 (id 'doc1'): indices is missing (null)"),
        ([{"indices": [1, None], "values": [1.0, 1.0]}], "row 0 (id 'doc0'): a missing (null) entry in indices"),
    ]
    for rows, fragment in cases:
        write_raw(path, raw_table(rows))
        refused(path, fragment, "embed the corpus again")
    # int64 indices past int32 wrapped to small, valid-looking latents when cast
    write_raw(path, raw_table([good_row(2**32 + 1)], index_type=pa.int64()))
    refused(path, "latent index 4294967297 is outside 0..5")
    # float16 stores overflow to inf above 65504
    write_raw(path, raw_table([{"indices": [1], "values": [1e6]}], value_type=pa.float16()))
    refused(path, "not a finite number (inf)")
    write_raw(path, raw_table([ok], texts=[None]))
    refused(path, "row 0 (id 'doc0'): text is missing (null)")
    write_raw(path, raw_table([ok]).drop_columns(["peak_end"]))
    refused(path, "no peak_end column")
    write_raw(path, raw_table([ok]).set_column(2, "indices", pa.array([["1", "2"]])))
    refused(path, "column indices holds list<element: string>, not lists of integers")
    write_raw(path, raw_table([ok]).append_column("dense", pa.array([[1.0, math.nan]])))
    refused(path, "dense holds a value that is not a finite number")


def test_a_correct_store_loads_unchanged(tmp_path):
    rng = np.random.default_rng(3)
    vectors = vectors_from_columns(50, [np.sort(rng.choice(50, 10, replace=False)) for _ in range(D)], rng)
    path = write_store(tmp_path / "s.parquet", vectors, d_sae=D)
    store = load_store(path)
    assert store.matrix.shape == (50, D) and store.matrix.nnz == len(vectors.indices)
    assert np.array_equal(store.matrix.indptr, vectors.offsets)
    assert np.array_equal(store.matrix.indices, vectors.indices)
    assert np.allclose(store.matrix.data, vectors.values) and np.array_equal(store.peak_start, vectors.peak_start)
    empty = write_store(tmp_path / "e.parquet", vectors_from_columns(0, [np.zeros(0, int)], rng), d_sae=D)
    assert load_store(empty).matrix.shape == (0, D)


def test_the_cli_prints_one_line(tmp_path):
    from commands.app import app

    path = write_raw(tmp_path / "s.parquet", raw_table([good_row(1, 9)]))
    result = CliRunner().invoke(app, ["labels", "show", str(path), "1"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "latent index 9 is outside 0..5" in result.stderr


# -- fuzzing ---------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=12)


@st.composite
def damaged_meta(draw) -> tuple[dict, bool]:
    """A valid metadata object with one field removed or replaced by any JSON value; whether still valid."""
    meta = fake_meta(D)
    section = draw(st.sampled_from(["", "model", "sae"]))
    parent = meta[section] if section else meta
    key = draw(st.sampled_from(sorted(parent)))
    if draw(st.booleans()):
        del parent[key]
        return meta, (section, key) == ("", "pool_roles")  # the one optional field fake_meta has
    value = draw(json_values)
    parent[key] = value
    valid = {("", "store_version"): lambda v: v == 1 and v is not True,
             ("", "model"): lambda v: False, ("", "sae"): lambda v: False,
             ("", "pooling"): lambda v: isinstance(v, str),
             ("", "pool_roles"): lambda v: v is None or (isinstance(v, list) and all(isinstance(r, str) for r in v)),
             ("model", "id"): lambda v: isinstance(v, str) and v != "",
             ("model", "fingerprint"): lambda v: isinstance(v, str),
             ("model", "layer"): lambda v: v is None or (type(v) is int and v >= 0),
             ("sae", "d_sae"): lambda v: False,  # the rows use latents up to 5: only 6.. would do, and is rare
             ("sae", "fingerprint"): lambda v: isinstance(v, str) and v != "" and v[0] != "." and len(v) <= 200
             and all(c.isascii() and (c.isalnum() or c in "._-") for c in v),
             ("sae", "source"): lambda v: isinstance(v, str), ("sae", "format"): lambda v: isinstance(v, str),
             ("sae", "architecture"): lambda v: isinstance(v, str)}[(section, key)]
    return meta, valid(value) or (section, key) == ("sae", "d_sae") and type(value) is int and 6 <= value < 2**31


@FUZZ
@given(meta=st.one_of(st.binary(max_size=40).map(lambda b: (b, False)),
                      json_values.map(lambda v: (json.dumps(v).encode(), False)),
                      damaged_meta().map(lambda m: (json.dumps(m[0]).encode(), m[1]))))
def test_fuzz_any_metadata(tmp_path, meta):
    raw, valid = meta
    path = write_raw(tmp_path / "s.parquet", raw_table([good_row(1, 5), good_row()]), raw)
    if valid:
        store = load_store(path)
        assert store.meta == json.loads(raw) and store.matrix.shape == (2, store.meta["sae"]["d_sae"])
    else:
        refused(path, "metadata")


entries = st.integers(-3, D + 2) | st.sampled_from([2**31, 2**40, -2**40])
floats = st.floats(-1e3, 1e3, width=32) | st.sampled_from([math.nan, math.inf, -math.inf, 1e39])


@st.composite
def any_rows(draw) -> list[dict]:
    """Well-formed rows, one of which mostly has one thing wrong: an index out of range, indices out of
    order or repeated, a non-finite value, one list longer or shorter, an impossible peak span, or any
    indices, values or spans at all."""
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        latents = sorted(draw(st.sets(st.integers(0, D - 1), max_size=4)))
        row = {"indices": latents, "values": [draw(st.floats(0.5, 10, width=32)) for _ in latents],
               "start": [draw(st.integers(0, 20)) for _ in latents]}
        row["end"] = [s + draw(st.integers(0, 8)) for s in row["start"]]
        rows.append(row)
    nonempty = [row for row in rows if row["indices"]]
    if not nonempty or draw(st.integers(0, 3)) == 0:
        return rows
    row = draw(st.sampled_from(nonempty))
    n = len(row["indices"])
    at = draw(st.integers(0, n - 1))
    broken = draw(st.sampled_from(["range", "order", "value", "length", "start", "end", "indices", "values",
                                   "spans"]))
    if broken == "range":
        row["indices"][at] = draw(entries.filter(lambda i: not 0 <= i < D))
    elif broken == "order":
        if n > 1 and draw(st.booleans()):
            row["indices"][at], row["indices"][at - 1] = row["indices"][at - 1], row["indices"][at]
        else:
            row["indices"].insert(at, row["indices"][at])
            row["values"].insert(at, 1.0)
            row["start"].insert(at, 0)
            row["end"].insert(at, 0)
    elif broken == "value":
        row["values"][at] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
    elif broken == "length":
        field = draw(st.sampled_from(["indices", "values", "start", "end"]))
        row[field] = row[field][:-1] if draw(st.booleans()) else row[field] + [1]
    elif broken == "start":
        row["start"][at] = draw(st.sampled_from([-1, row["end"][at] + 1]))
    elif broken == "end":
        row["end"][at] = draw(st.sampled_from([row["start"][at] - 1, 30]))
    elif broken in ("indices", "values"):
        row[broken] = draw(st.lists(entries if broken == "indices" else floats, min_size=n, max_size=n))
    else:
        row["start"] = draw(st.lists(st.integers(-2, 30), min_size=n, max_size=n))
        row["end"] = draw(st.lists(st.integers(-2, 35), min_size=n, max_size=n))
    return rows


def bad_rows(rows: list[dict], text_length: int) -> set[int]:
    """The rows a reader must refuse, worked out independently of it."""
    bad = set()
    for r, row in enumerate(rows):
        idx, values = row["indices"], row["values"]
        if not len(values) == len(row["start"]) == len(row["end"]) == len(idx):
            bad.add(r)
        elif any(not 0 <= i < D for i in idx) or any(b <= a for a, b in zip(idx, idx[1:])):
            bad.add(r)
        elif any(not math.isfinite(v) or abs(v) > np.finfo(np.float32).max for v in values):
            bad.add(r)
        elif any(not 0 <= s <= e <= text_length for s, e in zip(row["start"], row["end"])):
            bad.add(r)
    return bad


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(rows=any_rows(), float16=st.booleans())
def test_fuzz_any_rows(tmp_path, rows, float16):
    path = tmp_path / "s.parquet"
    write_raw(path, raw_table(rows, index_type=pa.int64(), value_type=pa.float16() if float16 else pa.float64()))
    if float16:
        for row in rows:
            row["values"] = [float(np.float16(v)) for v in row["values"]]
    bad = bad_rows(rows, 29)
    if not bad:
        store = load_store(path)
        dense = np.zeros((len(rows), D), np.float32)
        for r, row in enumerate(rows):
            dense[r, row["indices"]] = row["values"]
        assert np.array_equal(store.matrix.toarray(), dense)
        assert store.peak_start.tolist() == [s for row in rows for s in row["start"]]
        return
    message = refused(path, "embed the corpus again")
    assert any(f"row {r} (id 'doc{r}')" in message for r in bad), (bad, message)


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                       st.integers(1, 255)), max_size=3))
def test_fuzz_truncated_or_damaged_files(tmp_path, cut, flips):
    good = tmp_path / "good.parquet"
    if not good.exists():
        write_raw(good, raw_table([good_row(0, 3), good_row(), good_row(1, 2, 5)] * 4))
    data = bytearray(good.read_bytes())
    path = tmp_path / "s.parquet"
    path.write_bytes(data[:int(cut * len(data))])
    refused(path)  # a cut file has lost its footer: always refused
    assume(flips)
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path.write_bytes(data)
    try:  # a flipped byte inside the data pages may go unnoticed (Parquet has no checksum here): never a crash
        load_store(path)
    except SaeEmbedError as exc:
        assert isinstance(exc, StoreError) and "\n" not in str(exc) and str(path) in str(exc)


# -- analyses over any valid store -------------------------------------------------------------------

@st.composite
def valid_stores(draw):
    """Two stores a reader accepts, of any size, with any token counts (all 0 included: --pool-roles that
    matched no message) and a field that may be null or constant in every row."""
    sides = []
    for _ in range(2):
        n = draw(st.integers(1, 40))
        columns = [np.flatnonzero(draw(st.lists(st.booleans(), min_size=n, max_size=n))) for _ in range(D)]
        tokens = draw(st.sampled_from(["zero", "any", "same"]))
        n_tokens = {"zero": [0] * n, "same": [7] * n}.get(tokens) or draw(st.lists(st.integers(0, 60), min_size=n,
                                                                                   max_size=n))
        field = draw(st.sampled_from(["null", "constant", "mixed"]))
        values = {"null": [None] * n, "constant": ["x"] * n}.get(field) or draw(
            st.lists(st.sampled_from(["a", "b", None]), min_size=n, max_size=n))
        texts = draw(st.lists(st.sampled_from(["Sure! - a list\n- b", "plain words here, about this much",
                                               "Why? Because. #tag @you", "I cannot help, sorry."]),
                              min_size=n, max_size=n))
        sides.append((n, columns, n_tokens, values, texts))
    return sides


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 10))  # each example runs three analyses
@given(sides=valid_stores(), paired=st.booleans())
def test_fuzz_analyses_of_any_valid_store_give_a_result_or_one_line(tmp_path, sides, paired):
    """diff (form and latents, paired or not), correlations and correlations --with a field: a result or
    one SaeEmbedError line, never another exception (ZeroDivisionError on n_tokens all 0, IndexError on a
    field null in every row were found by fuzzing the CLI)."""
    from saeembed.analysis.associations import associations
    from saeembed.analysis.config import DiffConfig
    from saeembed.analysis.correlations import correlations
    from saeembed.analysis.diff import diff
    from saeembed.labels import Labels

    stores = []
    for k, (n, columns, n_tokens, values, texts) in enumerate(sides):
        vectors = vectors_from_columns(n, columns, np.random.default_rng(k), text_length=10)
        vectors.n_tokens = np.asarray(n_tokens, np.int32)
        path = tmp_path / f"s{k}.parquet"
        write_store(path, vectors, {"text": texts, "field": values, "key": [str(i) for i in range(n)]},
                    fake_meta(D))
        stores.append(load_store(path))
    labels = Labels(D, {}, {}, {})
    calls = [lambda: diff(stores[0], stores[1], DiffConfig(pair_on="key" if paired else None), labels=labels),
             lambda: correlations(stores[0], labels=labels), lambda: associations(stores[0], "field", labels=labels)]
    for call in calls:
        try:
            call()
        except SaeEmbedError as exc:
            assert "\n" not in str(exc), str(exc)
