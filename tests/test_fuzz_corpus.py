"""Fuzzing the corpus readers: whatever the bytes or JSON values, reading ends in a correct result (every
document's text and fields as written) or in one `SaeEmbedError` of one line naming the file; no other
exception escapes. What read_corpus accepts with `check_field_types` can be stored."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saeembed.embedding.corpus import read_corpus
from saeembed.embedding.kernel import fields_table
from saeembed.errors import SaeEmbedError

# 60 examples per test keep the file at about 2 s; SAEEMBED_FUZZ_EXAMPLES=4000 searches deeper (about a minute)
FUZZ = settings(max_examples=int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "60")), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def read(path: Path, **kw):
    """The corpus, or None after checking the error is one line naming the file."""
    try:
        return read_corpus([str(path)], **kw)
    except SaeEmbedError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert str(path) in message, message
        return None


_SCRATCH: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _scratch(tmp_path_factory):
    """Hypothesis runs each test many times in one function call, so `tmp_path` would be shared; every example
    gets its own folder under pytest's temporary tree instead (cleaned by pytest, not left in /tmp)."""
    _SCRATCH[:] = [tmp_path_factory.mktemp("fuzz-corpus")]
    yield


def folder() -> Path:
    return Path(tempfile.mkdtemp(dir=_SCRATCH[0]))


# --- arbitrary bytes -----------------------------------------------------------------------------------

PIECES = [b"{", b"}", b"[", b"]", b'"text"', b'"id"', b'"x"', b":", b",", b'"a b"', b"1", b"2.5", b"true", b"null",
          b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"\xff", b"\xc3\xa9", b"\x00", b'"', b"\\ud800", b"\\n", b" ",
          b"text,id\n", b"id,text,x\n", b"a,b", b"PAR1", b"\xfe\xff", b"\\", b"{}", b'"messages"',
          b"9" * 4400, b'{"text": "x", "y": ', b"[" * 2000]
SOUPS = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join))


def text_oracle(data: bytes, skip: bool) -> list[str] | None:
    """What a .txt file must read as: one document per non-blank line (LF, CRLF or CR), a BOM dropped;
    None: refused (or nothing left)."""
    if data.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"PK\x03\x04")) \
            or re.match(rb"BZh[1-9]1AY&SY", data):
        return None  # a compressed file: refused with its kind named
    data = data.removeprefix(b"\xef\xbb\xbf")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    lines = re.split(b"\r\n|\r|\n", data)
    if lines[-1] == b"":
        lines.pop()
    texts = []
    for raw in lines:
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            if skip:
                continue
            return None
        if line.strip():
            texts.append(line)
    return texts or None


@FUZZ
@given(data=SOUPS, suffix=st.sampled_from([".jsonl", ".csv", ".txt", ".parquet", ".dat"]),
       check=st.booleans(), skip=st.booleans())
def test_arbitrary_bytes(data, suffix, check, skip):
    path = folder() / f"in{suffix}"
    path.write_bytes(data)
    corpus = read(path, check_field_types=check, skip_invalid=skip)
    event(f"{suffix} {'read' if corpus else 'refused'}")
    if suffix == ".txt":
        expected = text_oracle(data, skip)
        assert (corpus is None) == (expected is None)
        if corpus:
            assert [d.text for d in corpus.documents] == expected
    if corpus is None:
        return
    ids = [d.id for d in corpus.documents]
    assert len(ids) == len(set(ids))
    for doc in corpus.documents:
        content = doc.text if doc.text is not None else "".join(m["content"] for m in doc.messages)
        assert content.strip() and content.encode("utf-8")
    if check:
        assert_storable(corpus.documents)


# --- arbitrary JSON values -----------------------------------------------------------------------------

# rare ingredients (a surrogate key, an "id" that repeats, a lone surrogate) among common ones
KEYS = st.sampled_from(["x", "y", "z", "x", "y", "z", "é", "", "messages", "indices", "input_indices", "text", "id",
                        "\ud800"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=False), st.text(max_size=8), st.text(max_size=8),
                    st.sampled_from(["\ud800", "a\udfffb", "  ", "\r\n", "\ufeffx", "x", "y", "z"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(KEYS, inner, max_size=3)), max_leaves=8)
TEXTS = st.one_of(st.text(min_size=1, max_size=12), SCALARS)
RECORD = st.builds(lambda text, rest: {**rest, "text": text}, TEXTS, st.dictionaries(KEYS, VALUES, max_size=3))
CLEAN = st.builds(lambda text, rest: {**rest, "text": text}, st.text(min_size=1, max_size=12).filter(str.strip),
                  st.dictionaries(st.sampled_from(["x", "y", "z", "é", ""]), VALUES, max_size=3))
# half the corpora: records with a text and other fields of any value; half: anything, rows of any JSON value
RECORDS = st.one_of(st.lists(CLEAN, min_size=1, max_size=4),
                    st.lists(st.one_of(RECORD, RECORD, st.dictionaries(KEYS, VALUES, max_size=4), VALUES),
                             min_size=1, max_size=4))


def has_surrogate(value) -> bool:
    return bool(re.search("[\ud800-\udfff]", json.dumps(value, ensure_ascii=False)))


def leaves(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def consistent(records) -> bool:
    """Whether every field holds one kind of value (int and float mixing, null anywhere), at any depth."""
    kinds: dict = {}

    def walk(value, path):
        if value is None:
            return True
        kind = "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
        if kinds.setdefault(path, kind) != kind:
            return False
        if isinstance(value, list):
            return all(walk(v, path + "[]") for v in value)
        if isinstance(value, dict):
            return all(walk(v, f"{path}.{k}") for k, v in value.items())
        return True

    return all(walk(v, k) for r in records for k, v in r.items() if k not in ("text", "id"))


@FUZZ
@given(records=RECORDS, ending=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans(), ascii_=st.booleans(),
       check=st.booleans())
def test_arbitrary_json_values(records, ending, bom, ascii_, check):
    path = folder() / "in.jsonl"
    lines = [json.dumps(r, ensure_ascii=ascii_ or has_surrogate(r)) for r in records]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ending.join(lines + [""]).encode("utf-8"))
    corpus = read(path, check_field_types=check)
    event(f"check={check} {'read' if corpus else 'refused'}")
    valid = all(isinstance(r, dict) and isinstance(r.get("text"), str) and r["text"].strip()
                and not has_surrogate(r) and "id" not in r for r in records)
    plain = valid and consistent(records) and "{}" not in json.dumps(records) and not any(
        isinstance(n, int) and abs(n) > 2 ** 53 for n in leaves(records))
    if valid and (not check or plain):
        assert corpus is not None, "a corpus of valid records (one kind per field when checked) is read"
    if corpus is None:
        return
    assert len(corpus.documents) == len(records)
    for doc, record in zip(corpus.documents, records):
        assert doc.text == record["text"]
        assert doc.fields == {k: v for k, v in record.items() if k != "text"}, "every field as written"
        raw = record.get("id")
        if raw not in (None, ""):  # ids are text or whole numbers, taken as written (true was stored as 'True')
            assert isinstance(raw, str) or (isinstance(raw, (int, float)) and not isinstance(raw, bool)
                                            and float(raw).is_integer()), f"id {raw!r} was accepted"
            assert doc.id == (raw if isinstance(raw, str) else str(int(raw)))
    if check:
        assert_storable(corpus.documents)


# records whose fields keep one kind each: read with check_field_types, they must be accepted and stored
KINDS = {
    "label": st.text(max_size=10),
    "number": st.one_of(st.integers(-(2 ** 53), 2 ** 53), st.floats(allow_nan=False, allow_infinity=False)),
    "whole": st.integers(-(2 ** 63), 2 ** 63 - 1),
    "flag": st.booleans(),
    "tags": st.lists(st.text(max_size=5), max_size=3),
    "object": st.fixed_dictionaries({}, optional={"a": st.integers(-5, 5), "b": st.lists(st.booleans(), max_size=2)}),
}


@st.composite
def consistent_corpus(draw):
    names = draw(st.lists(st.sampled_from(sorted(KINDS)), unique=True, max_size=4))
    n = draw(st.integers(1, 6))
    records = []
    for _ in range(n):
        record = {"text": draw(st.text(min_size=1, max_size=20).filter(str.strip))}
        for name in names:
            if draw(st.integers(0, 3)):  # sometimes missing, sometimes null
                record[name] = draw(st.one_of(st.none(), KINDS[name]))
        records.append(record)
    return records


@FUZZ
@given(records=consistent_corpus())
def test_fields_of_one_kind_each_are_accepted_and_stored(records):
    path = folder() / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    corpus = read(path, check_field_types=True)
    if any(r.get("object") == {} for r in records) and not any(r.get("object") for r in records):
        assert corpus is None, "an object empty in every record cannot be stored"
        return
    assert corpus is not None
    assert [d.fields for d in corpus.documents] == [{k: v for k, v in r.items() if k != "text"} for r in records]
    frame = assert_storable(corpus.documents)
    for name in ("label", "whole", "flag", "tags"):
        if name in frame.columns:
            assert frame[name].to_list() == [r.get(name) for r in records]
    if "number" in frame.columns:
        assert frame["number"].to_list() == [None if r.get("number") is None else float(r["number"]) for r in records]


def assert_storable(docs) -> pl.DataFrame:
    """The fields table of accepted documents is written to Parquet and read back by polars."""
    table = fields_table(docs)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    frame = pl.from_arrow(pq.read_table(buffer))
    assert len(frame) == len(docs)
    return frame


# --- CSV and Parquet as written by their own writers ---------------------------------------------------

CELLS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)


@FUZZ
@given(rows=st.lists(st.tuples(CELLS.filter(str.strip), CELLS, CELLS), min_size=1, max_size=6),
       terminator=st.sampled_from(["\r\n", "\n", "\r"]), bom=st.booleans(), quoting=st.sampled_from(
           [csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
def test_csv_written_by_a_csv_writer(rows, terminator, bom, quoting):
    path = folder() / "in.csv"
    out = io.StringIO()
    if any(ch in cell for row in rows for cell in row for ch in "\r\n"):
        quoting = csv.QUOTE_ALL  # before 3.12 the writer leaves a CR or LF not in its line terminator unquoted
    csv.writer(out, lineterminator=terminator, quoting=quoting).writerows([("text", "a", "b"), *rows])
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))
    corpus = read(path, check_field_types=True)
    assert corpus is not None
    assert [(d.text, d.fields) for d in corpus.documents] == [(t, {"a": a, "b": b}) for t, a, b in rows]


@FUZZ
@given(rows=st.lists(st.tuples(CELLS.filter(str.strip), st.one_of(st.none(), st.integers(-(2 ** 63), 2 ** 63 - 1)),
                               st.one_of(st.none(), st.floats(allow_nan=False)),
                               st.lists(CELLS, max_size=2)), min_size=1, max_size=5))
def test_parquet_written_by_polars(rows):
    path = folder() / "in.parquet"
    pl.DataFrame(rows, schema={"text": pl.Utf8, "n": pl.Int64, "f": pl.Float64, "tags": pl.List(pl.Utf8)},
                 orient="row").write_parquet(path)
    corpus = read(path, check_field_types=True)
    assert corpus is not None
    for doc, (text, n, f, tags) in zip(corpus.documents, rows, strict=True):
        assert doc.text == text and doc.fields["n"] == n and doc.fields["tags"] == tags
        assert doc.fields["f"] == f or (f is not None and math.isnan(f))
    assert_storable(corpus.documents)


def test_a_table_parquet_cannot_hold_is_a_corpus_error():
    """The guard behind the reader's checks: whatever slips past them fails before the model, as a
    CorpusError naming the field."""
    from saeembed.embedding.corpus import Document

    docs = [Document("0", "a", fields={"x": {}})]
    with pytest.raises(SaeEmbedError, match="cannot be stored in Parquet"):
        fields_table(docs)
    with pytest.raises(SaeEmbedError, match="the field 'x' cannot be stored"):
        fields_table([Document("0", "a", fields={"x": 1}), Document("1", "b", fields={"x": "s"})])
    assert pa.types.is_string(fields_table([Document("0", "a")]).schema.field("id").type)
