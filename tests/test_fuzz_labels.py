"""`labels import` over any label file: Neuronpedia .jsonl(.gz) batches, JSON {id: label} and CSV
latent,label holding any values, any bytes, or cut short. Each import either gives exactly the labels
the file holds (worked out here independently) or one LabelError line naming the file and the line
or key of the first bad entry; never another exception."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeembed.labels import LabelError, import_labels

D = 10
# 100 examples per test keep the file at about 2 s; SAEEMBED_FUZZ_EXAMPLES=2000 searches deeper
EXAMPLES = int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=2), max_leaves=6)
# latent ids: mostly good ones, as numbers or as Neuronpedia's strings, sometimes anything
latent_ids = st.one_of(st.integers(0, D - 1), st.integers(0, D - 1).map(str), st.integers(-3, D + 3),
                       st.sampled_from([" 3 ", "+2", "1.0", "1e2", "", "٣", "12345678901234567890", True]), json_values)
BAD_SHAPE = object()  # stands for a CSV row of the wrong number of fields
labels = st.one_of(st.text(max_size=12), st.none(), st.just("  "), json_values)


def latent_of(value) -> int | None:
    """A latent id as the importer must read it (an integer, or a string of ASCII digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,18}", value.strip()):
        return int(value.strip())
    return None


def expected(entries: list[tuple[object, object]]) -> tuple[dict[int, str] | None, int | None, str, int]:
    """(labels, index of the first bad entry, what the message must say, entries skipped): labels None
    when the import must fail; the bad index None when only the range check fails."""
    out: dict[int, str] = {}
    skipped = 0
    seen = []
    for i, (latent_value, label) in enumerate(entries):
        if latent_value is BAD_SHAPE:
            return None, i, "where the header has 2", 0
        latent = latent_of(latent_value)
        if latent is None:
            return None, i, "is not a latent id (a whole number)", 0
        if not (label is None or isinstance(label, str)):
            return None, i, "not text; give every label as a string", 0
        text = label.strip() if isinstance(label, str) else ""
        if not text:
            skipped += 1
            continue
        seen.append(latent)
        out.setdefault(latent, text)
    if any(not 0 <= latent < D for latent in seen):
        return None, None, "outside 0..9", 0
    return out, None, "", skipped


def check(path, entries, where_of) -> None:
    """Import `path`, written from `entries`, and compare with what it must give."""
    want, bad, says, skipped = expected(entries)
    try:
        got, notes = import_labels(path, D)
    except LabelError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        assert want is None, f"refused a good file: {message}"
        assert says in message, (says, message)
        if bad is not None:
            assert where_of(bad) in message, (where_of(bad), message)
        else:
            assert "another SAE" in message, message
        return
    assert want is not None, f"accepted a bad file: {entries}"
    assert got.label == want
    assert (f"{skipped} entries without a label (null, empty or missing) skipped" in notes) == bool(skipped)


@FUZZ
@given(entries=st.lists(st.tuples(latent_ids, labels), max_size=6), gz=st.booleans(), ascii_only=st.booleans())
def test_fuzz_neuronpedia_lines(tmp_path, entries, gz, ascii_only):
    text = "".join(json.dumps({"index": latent, "description": label, "explanationModelName": "m"},
                              ensure_ascii=ascii_only) + "\n" for latent, label in entries)
    path = tmp_path / ("b.jsonl.gz" if gz else "b.jsonl")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    if not entries and not gz:
        return  # an empty .jsonl: refused as empty, checked below
    check(path, entries, lambda i: f"line {i + 1}:")


@FUZZ
@given(entries=st.dictionaries(st.one_of(st.integers(-2, D + 2).map(str), st.text(max_size=4)), labels, max_size=6))
def test_fuzz_json_objects(tmp_path, entries):
    path = tmp_path / "l.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    check(path, list(entries.items()), lambda i: f"key {json.dumps(list(entries)[i])[:40]}:")


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(rows=st.lists(st.one_of(st.tuples(st.one_of(st.integers(-2, D + 2).map(str), st.text(max_size=4)),
                                         st.text(max_size=12)).map(list),
                               st.lists(st.integers(0, D - 1).map(str) | st.text(max_size=4), max_size=3)),
                     max_size=6))
def test_fuzz_csv_rows(tmp_path, rows):
    """Rows of two fields (any latent, any label, quoted as needed) and rows of 0, 1 or 3 fields."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["latent", "label"])
    entries, lines = [], []
    for row in rows:
        writer.writerow(row)
        if row in ([], [""]):
            continue  # written as a blank line (or ""), which is no entry
        entries.append(tuple(row) if len(row) == 2 else (BAD_SHAPE, None))
        lines.append(len(re.findall(r"\r\n|\r|\n", out.getvalue())))  # a row's last line (a lone \r ends one)
    path = tmp_path / "l.csv"
    path.write_bytes(out.getvalue().encode())
    check(path, entries, lambda i: f"line {lines[i]}:")


@FUZZ
@given(data=st.binary(max_size=200), kind=st.sampled_from(["jsonl", "jsonl.gz", "gz of bytes", "json", "csv"]))
def test_fuzz_any_bytes(tmp_path, data, kind):
    path = tmp_path / f"l.{kind.replace('gz of bytes', 'jsonl.gz')}"
    path.write_bytes(gzip.compress(data) if kind == "gz of bytes" else data)
    try:
        got, notes = import_labels(path, D)
    except LabelError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return
    assert all(isinstance(text, str) and text == text.strip() and text for text in got.label.values())
    assert all(0 <= latent < D for latent in got.label) and notes


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True))
def test_fuzz_truncated_gzip(tmp_path, cut):
    whole = gzip.compress("".join(json.dumps({"index": i % D, "description": f"label {i}"}) + "\n"
                                  for i in range(300)).encode())
    path = tmp_path / "b.jsonl.gz"
    path.write_bytes(whole[:int(cut * len(whole))])
    try:
        import_labels(path, D)
    except LabelError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        assert "truncated" in str(exc) or "empty" in str(exc) or "damaged gzip" in str(exc), str(exc)
    else:
        raise AssertionError("a cut .gz was imported")
