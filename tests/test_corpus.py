"""Reading every input kind, and reporting every bad document with file and line."""

from __future__ import annotations

import io
import json
import sys

import polars as pl
import pytest

from saeembed.corpus import read_corpus
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
