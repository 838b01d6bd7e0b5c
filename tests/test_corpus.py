"""Reading every input kind, and reporting every bad document with file and line."""

from __future__ import annotations

import csv
import io
import json
import sys

import polars as pl
import pytest

from saeembed.embedding.corpus import read_corpus
from saeembed.errors import CorpusError


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_ids_fields_and_line_number_ids(tmp_path):
    path = write(tmp_path / "a.jsonl", [json.dumps({"id": 7, "text": "x", "label": True}), "",
                                        json.dumps({"text": "y"})])
    docs = read_corpus([str(path)]).documents
    assert [(d.id, d.text) for d in docs] == [("7", "x"), ("2", "y")], "missing ids fall back to the 0-based line"
    assert docs[0].fields == {"id": 7, "label": True}


def test_custom_fields_csv_parquet_txt_and_globs(tmp_path):
    write(tmp_path / "a.jsonl", [json.dumps({"key": "k1", "body": "hello"})])
    (tmp_path / "b.csv").write_text('key,body\nk2,"multi\nline"\nk3,plain\n')
    pl.DataFrame({"key": ["k4"], "body": ["from parquet"]}).write_parquet(tmp_path / "c.parquet")
    corpus = read_corpus([str(tmp_path / "*.*")], text_field="body", id_field="key")
    assert [d.id for d in corpus.documents] == ["k1", "k2", "k3", "k4"]
    assert corpus.documents[1].text == "multi\nline"
    assert {d.fields["source"] for d in corpus.documents} == {"a", "b", "c"}, "several files: a source column"
    txt = write(tmp_path / "d.txt", ["first doc", "second doc"])
    assert [(d.id, d.text) for d in read_corpus(str(txt)).documents] == [("0", "first doc"), ("1", "second doc")]


def test_stdin(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "from stdin"}\n')))
    assert read_corpus(["-"]).documents[0].text == "from stdin"


def test_chat_documents(tmp_path):
    path = write(tmp_path / "c.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                                 {"role": "assistant", "content": "hello"}]})])
    doc = read_corpus(str(path)).documents[0]
    assert doc.text is None and doc.messages[1] == {"role": "assistant", "content": "hello"}


def test_chat_messages_keep_every_key_and_one_kind_per_key(tmp_path):
    """Messages are kept as given (a `name`, tool calls, metadata); a key that changes kind between
    records is refused before any work, naming the line, like any other stored field."""
    chat = [{"role": "user", "content": "hi", "name": "ann", "meta": {"turn": 1}},
            {"role": "assistant", "content": "yo"}]
    path = write(tmp_path / "c.jsonl", [json.dumps({"messages": chat})])
    assert read_corpus(str(path), check_field_types=True).documents[0].messages == chat
    clash = [{"role": "user", "content": "hi", "meta": {"turn": "first"}}]
    path = write(tmp_path / "d.jsonl", [json.dumps({"messages": chat}), json.dumps({"messages": clash})])
    with pytest.raises(CorpusError, match=r"d.jsonl:line 2: field 'messages\[\].meta.turn' is text here but a whole "
                                          r"number at .*d.jsonl:line 1"):
        read_corpus(str(path), check_field_types=True)
    assert read_corpus(str(path)).documents[1].messages == clash, "only stored fields need one kind"


def test_a_record_refused_for_its_messages_leaves_the_field_kinds_alone(tmp_path):
    chat = [{"role": "user", "content": "hi", "meta": {"turn": 1}, "tool_calls": None}]
    clash = [{"role": "user", "content": "hi", "meta": {"turn": "first"}}]
    path = write(tmp_path / "c.jsonl", [json.dumps({"messages": chat}), json.dumps({"messages": clash, "n": "text"}),
                                        json.dumps({"text": "t", "n": 5})])
    corpus = read_corpus(str(path), check_field_types=True, skip_invalid=True)
    assert [d.fields.get("n") for d in corpus.documents] == [None, 5], "line 2's n did not make n text"
    assert len(corpus.skipped) == 1 and "line 2" in corpus.skipped[0].where
    assert corpus.documents[0].messages == [{"role": "user", "content": "hi", "meta": {"turn": 1}}], \
        "a null key says nothing and would trip templates that test for the key: dropped"


BAD_LINES = {
    "malformed JSON": '{"text": "unterminated',
    "no field 'text'": '{"body": "x"}',
    "empty document": '{"text": "   "}',
    "expected a JSON object": '["a list"]',
    "expected a string": '{"text": 5}',
    "must be an object with string 'role'": '{"messages": [{"role": "user"}]}',
}


@pytest.mark.parametrize("reason", BAD_LINES)
def test_bad_documents_stop_the_run_with_file_and_line(tmp_path, reason):
    path = write(tmp_path / "bad.jsonl", ['{"text": "fine"}', BAD_LINES[reason], '{"text": "also fine"}'])
    with pytest.raises(CorpusError) as err:
        read_corpus([str(path)])
    assert f"{path}:line 2: " in str(err.value) and reason in str(err.value)
    assert "nothing was embedded" in str(err.value) and "--skip-invalid" in str(err.value)


def test_non_utf8_and_duplicate_ids(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok", "id": "a"}\n{"text": "caf\xe9"}\n{"text": "again", "id": "a"}\n')
    with pytest.raises(CorpusError) as err:
        read_corpus([str(path)])
    message = str(err.value)
    assert "bad.jsonl:line 2: not valid UTF-8" in message
    assert "bad.jsonl:line 3: duplicate id 'a' (first at" in message and "2 invalid" in message


def test_skip_invalid_reads_the_rest_and_lists_what_was_skipped(tmp_path):
    path = write(tmp_path / "bad.jsonl", ['{"text": "fine"}', "{oops", '{"text": "also fine"}'])
    corpus = read_corpus([str(path)], skip_invalid=True)
    assert [d.text for d in corpus.documents] == ["fine", "also fine"]
    assert [str(p).split(": ")[0] for p in corpus.skipped] == [f"{path}:line 2"]


def test_missing_inputs(tmp_path):
    with pytest.raises(CorpusError, match="input file not found"):
        read_corpus([str(tmp_path / "nope.jsonl")])
    with pytest.raises(CorpusError, match="no file matches"):
        read_corpus([str(tmp_path / "*.jsonl")])


def test_forced_format_reads_any_suffix_and_unknown_formats_are_refused(tmp_path):
    path = tmp_path / "data.dump"
    path.write_text("id,text\na,hello\n")
    assert read_corpus([str(path)], fmt="csv").documents[0].text == "hello"
    with pytest.raises(CorpusError, match="unknown input format 'xml'"):
        read_corpus([str(path)], fmt="xml")


# --- issue: every bad input refused in one line before work, nothing silently lost -----------------


def one_line_error(inputs, **kw) -> str:
    with pytest.raises(CorpusError) as err:
        read_corpus(inputs, **kw)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    return message


@pytest.mark.parametrize("suffix, body", [
    (".jsonl", b'{"text": "first", "id": "a"}\n{"text": "second", "id": "b"}\n'),
    (".txt", b"first\nsecond\n"),
    (".csv", b"id,text\na,first\nb,second\n"),
])
def test_a_utf8_byte_order_mark_is_dropped(tmp_path, suffix, body):
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body)
    docs = read_corpus([str(path)]).documents
    assert [d.text for d in docs] == ["first", "second"], "the BOM is neither an error nor part of document 0"
    assert all("\ufeff" not in str(d.fields) for d in docs)


def test_a_byte_order_mark_on_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'\xef\xbb\xbf{"text": "from stdin"}\n')))
    assert read_corpus(["-"]).documents[0].text == "from stdin"


def test_utf16_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_bytes('{"text": "x"}\n'.encode("utf-16"))
    assert f"{path} is UTF-16" in one_line_error([str(path)])


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_every_line_ending_is_a_line_ending(tmp_path, ending):
    (tmp_path / "a.jsonl").write_bytes(ending.join(['{"text": "one"}', '{"text": "two"}', ""]).encode())
    (tmp_path / "b.txt").write_bytes(ending.join(["one", "two"]).encode())
    (tmp_path / "c.csv").write_bytes(ending.join(["text,n", "one,1", '"t' + ending + 'wo",2', ""]).encode())
    for name, texts in (("a.jsonl", ["one", "two"]), ("b.txt", ["one", "two"]), ("c.csv", ["one", f"t{ending}wo"])):
        assert [d.text for d in read_corpus([str(tmp_path / name)]).documents] == texts, name
    bad = tmp_path / "d.jsonl"
    bad.write_bytes(ending.join(['{"text": "one"}', "{oops", ""]).encode())
    assert f"{bad}:line 2: malformed JSON" in one_line_error([str(bad)]), "line numbers count every line ending"


def test_blank_lines_of_a_text_file_are_not_documents(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first paragraph\n\n  \nsecond paragraph\n\n")
    docs = read_corpus([str(path)]).documents
    assert [(d.id, d.text) for d in docs] == [("0", "first paragraph"), ("3", "second paragraph")]


def test_a_csv_cell_longer_than_the_csv_module_default(tmp_path):
    long = "word " * 40_000  # 200,000 characters, over csv.field_size_limit()'s 131,072
    path = tmp_path / "long.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "text"], ["a", long], ["b", "short"]])
    before = csv.field_size_limit()
    assert [d.text for d in read_corpus([str(path)]).documents] == [long, "short"]
    assert csv.field_size_limit() == before, "the process-wide csv limit is restored"


def test_folders_are_refused_in_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "x"}\n')
    message = one_line_error([str(tmp_path / "*")])
    assert "matches the folder" in message and str(tmp_path / "data") in message
    assert "is a folder" in one_line_error([str(tmp_path / "data")])
    assert read_corpus([str(tmp_path / "data" / "*")]).documents[0].text == "x"


def test_json_nested_100k_deep_is_one_line_with_file_and_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + '{"text": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    message = one_line_error([str(path)])
    assert f"{path}:line 2: JSON nested too deeply" in message


def test_nesting_the_store_cannot_hold_is_refused_when_fields_are_stored(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "x", "a": ' + "[" * 40 + "]" * 40 + "}\n")
    assert read_corpus([str(path)]).documents[0].fields["a"], "readers that store no fields take it"
    message = one_line_error([str(path)], check_field_types=True)
    assert f"{path}:line 1: field 'a" in message and "more than 32 levels" in message


@pytest.mark.parametrize("line, got", [("[1, 2]", "a list"), ("5", "a number"), ('"text"', "a string"),
                                       ("null", "null"), ("true", "true/false")])
def test_a_jsonl_row_that_is_not_an_object(tmp_path, line, got):
    path = write(tmp_path / "rows.jsonl", ['{"text": "fine"}', line])
    assert f"{path}:line 2: expected a JSON object per line" in one_line_error([str(path)])
    assert got in one_line_error([str(path)])


def test_csv_rows_with_too_few_or_too_many_cells(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("id,text,label\na,fine,1\nb,short\nc,long,2,extra\n")
    message = one_line_error([str(path)])
    assert f"{path}:line 3: 2 cell(s) but the header has 3 columns" in message
    assert f"{path}:line 4: 4 cell(s)" in message
    assert [d.id for d in read_corpus([str(path)], skip_invalid=True).documents] == ["a"]


def test_broken_csv_is_one_line_with_file_and_line(tmp_path):
    cases = {
        "quote.csv": (b'id,text\na,"fine"\nb,"unclosed\n', "line 3: not valid CSV"),
        "utf8.csv": (b"id,text\na,fine\nb,caf\xe9\n", "line 3: not valid UTF-8"),
        "dup.csv": (b"text,text\na,b\n", "line 1: the column 'text' appears twice"),
        "nofield.csv": (b"id,body\na,b\n", "line 1: no column 'text' in the header"),
    }
    for name, (body, expected) in cases.items():
        (tmp_path / name).write_bytes(body)
        assert f"{tmp_path / name}:{expected}" in one_line_error([str(tmp_path / name)]), name


def test_invalid_utf8_names_file_and_line_in_every_text_format(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    (tmp_path / "b.txt").write_bytes(b"ok\ncaf\xe9\n")
    for name in ("a.jsonl", "b.txt"):
        assert f"{tmp_path / name}:line 2: not valid UTF-8" in one_line_error([str(tmp_path / name)])


def test_unreadable_and_broken_parquet_files(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert f"{broken}: cannot read it as Parquet" in one_line_error([str(broken)])
    pl.DataFrame({"body": ["x"]}).write_parquet(tmp_path / "other.parquet")
    assert "no column 'text' (columns: 'body')" in one_line_error([str(tmp_path / "other.parquet")])
    pl.DataFrame({"text": ["from parquet"]}).write_parquet(tmp_path / "noext")
    assert read_corpus([str(tmp_path / "noext")]).documents[0].text == "from parquet", "found by its magic"


def test_a_lone_surrogate_is_refused_naming_the_field(tmp_path):
    path = write(tmp_path / "s.jsonl", ['{"text": "fine"}', '{"text": "bad \\ud800 half"}',
                                        '{"text": "ok", "meta": {"k": ["\\udfff"]}}',
                                        '{"text": "a pair \\ud83d\\ude00 is fine"}'])
    message = one_line_error([str(path)])
    assert f"{path}:line 2: field 'text' holds a lone surrogate" in message
    assert f"{path}:line 3: field 'meta.k[]' holds a lone surrogate" in message
    docs = read_corpus([str(path)], skip_invalid=True).documents
    assert docs[-1].text == "a pair \U0001F600 is fine"


def test_a_key_twice_in_one_object_is_refused(tmp_path):
    path = write(tmp_path / "k.jsonl", ['{"text": "a", "label": 1, "label": 2}'])
    assert f"{path}:line 1: the key 'label' appears twice" in one_line_error([str(path)])


def test_messages_next_to_a_text_are_kept_as_a_field(tmp_path):
    path = write(tmp_path / "m.jsonl", [json.dumps({"text": "t", "messages": [{"role": "user", "content": "c"}]})])
    doc = read_corpus([str(path)]).documents[0]
    assert doc.text == "t" and doc.fields["messages"] == [{"role": "user", "content": "c"}]


MIXED = [
    # (records, field path, kind here, kind first seen)
    ([{"x": 1}, {"x": "s"}], "'x' is text here but a whole number at {f}:line 1", None),
    ([{"x": "s"}, {"x": None}, {"x": True}], "'x' is true/false here but text at {f}:line 1", None),
    ([{"x": [1, 2]}, {"x": [3, "s"]}], "'x[]' is text here but a whole number at {f}:line 2", None),
    ([{"x": {"a": 1}}, {"x": {"b": 2}}, {"x": {"a": [1]}}], "'x.a' is a list here but a whole number", None),
    ([{"x": {"a": 1}}, {"x": [1]}], "'x' is a list here but an object", None),
    ([{"x": 1.5}, {"x": 2 ** 60}], "mixes numbers with decimals and the whole number", None),
    ([{"x": 1}, {"x": 2 ** 64}], "too large to store as a number", None),
]


@pytest.mark.parametrize("records, expected, _", MIXED)
def test_a_field_of_mixed_kinds_names_the_first_record_that_disagrees(tmp_path, records, expected, _):
    path = write(tmp_path / "mixed.jsonl", [json.dumps({"text": f"doc {i}", **r}) for i, r in enumerate(records)])
    message = one_line_error([str(path)], check_field_types=True)
    assert f"{path}:line {len(records)}: field " in message and expected.format(f=path) in message
    assert "1 invalid document(s)" in message
    if "here but" in expected:
        assert "quote the values so they are all text" in message
    skipped = read_corpus([str(path)], check_field_types=True, skip_invalid=True)
    assert len(skipped.documents) == len(records) - 1 and skipped.skipped[0].where == f"{path}:line {len(records)}"
    assert len(read_corpus([str(path)]).documents) == len(records), "only checked when the fields are stored"


def test_mixed_kinds_across_files_name_both_files(tmp_path):
    write(tmp_path / "a.jsonl", [json.dumps({"text": "x", "n": 1})])
    (tmp_path / "b.csv").write_text("text,n\ny,1\n")
    message = one_line_error([str(tmp_path / "a.jsonl"), str(tmp_path / "b.csv")], check_field_types=True)
    assert f"{tmp_path / 'b.csv'}:line 2: field 'n' is text here but a whole number at {tmp_path / 'a.jsonl'}" \
           ":line 1" in message


def test_fields_that_can_be_stored_together_are_accepted(tmp_path):
    records = [{"n": 1, "tags": [], "meta": {}, "z": None}, {"n": 2.5, "tags": ["a"], "meta": {"k": None}},
               {"n": None, "tags": None, "meta": {"k": [1, 2.0]}, "z": "late"}, {"id": 5}, {"id": "five"}]
    path = write(tmp_path / "ok.jsonl", [json.dumps({"text": f"doc {i}", **r}) for i, r in enumerate(records)])
    docs = read_corpus([str(path)], check_field_types=True).documents
    assert [d.fields for d in docs] == records, "every field as written; ids of any kind are stored as text"


def test_an_object_empty_in_every_record_cannot_be_stored(tmp_path):
    path = write(tmp_path / "e.jsonl", [json.dumps({"text": "a", "meta": {}}), json.dumps({"text": "b"})])
    message = one_line_error([str(path)], check_field_types=True)
    assert f"{path}:line 1: field 'meta' is an empty object" in message


def test_many_problems_are_still_one_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", ["{oops"] * 25 + ['{"body": "a\\nb"}'])
    message = one_line_error([str(path)])
    assert message.startswith("26 invalid document(s)") and "... and 16 more" in message


def test_a_number_too_long_to_convert_is_one_line(tmp_path):
    path = write(tmp_path / "n.jsonl", ['{"text": "a", "n": ' + "9" * 5000 + "}"])
    assert f"{path}:line 1: a number JSON readers cannot read" in one_line_error([str(path)])


def test_a_tool_call_with_null_content_is_read_as_empty_text(tmp_path):
    """OpenAI's form of a turn that only calls a tool (content null beside tool_calls) was refused though
    tool calls are kept; null content without tool calls is still refused."""
    call = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]
    chat = [{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": None, "tool_calls": call},
            {"role": "tool", "content": "12 C, rain", "tool_call_id": "c1"}]
    path = write(tmp_path / "c.jsonl", [json.dumps({"messages": chat})])
    messages = read_corpus(str(path), check_field_types=True).documents[0].messages
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": call}
    path = write(tmp_path / "d.jsonl", [json.dumps({"messages": [{"role": "user", "content": None}]})])
    with pytest.raises(CorpusError, match="content may be null only beside tool_calls"):
        read_corpus(str(path))


@pytest.mark.parametrize("raw, stored", [("a1", "a1"), (7, "7"), (7.0, "7"), (True, None), (2.5, None),
                                         ({"k": 1}, None), ([1], None)])
def test_ids_are_text_or_whole_numbers(tmp_path, raw, stored):
    """str() stored `true` as 'True' and an object as a Python repr: such ids are refused, naming the line."""
    path = write(tmp_path / "c.jsonl", [json.dumps({"id": raw, "text": "a document"})])
    if stored is None:
        with pytest.raises(CorpusError, match=r"line 1.*an id must be text or a whole number"):
            read_corpus(str(path))
    else:
        assert read_corpus(str(path)).documents[0].id == stored


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_a_compressed_corpus_is_named_as_such(tmp_path, kind):
    import bz2
    import gzip
    import lzma

    packed = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind](b'{"text": "hello"}\n')
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(packed)
    with pytest.raises(CorpusError, match=f"is {kind}-compressed; decompress it first"):
        read_corpus([str(path)])


def test_text_that_starts_like_a_magic_number_is_text(tmp_path):
    """bzip2 files start with "BZh"; so does a line about Mr BZhang: only the whole magic is refused."""
    path = tmp_path / "names.txt"
    path.write_text("BZhang said hello\nPK is a name too\n")
    assert [d.text for d in read_corpus([str(path)]).documents] == ["BZhang said hello", "PK is a name too"]
