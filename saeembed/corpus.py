"""Reading corpus files (JSONL, CSV, Parquet, plain text, stdin) into validated documents."""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from saeembed.errors import CorpusError

Format = Literal["auto", "jsonl", "csv", "parquet", "txt"]
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                   ".parquet": "parquet", ".txt": "txt", ".text": "txt"}
_MAX_LISTED = 10


@dataclass(frozen=True)
class Document:
    """One input document: plain `text` or a chat (`messages`), plus the input's other fields."""

    id: str
    text: str | None
    messages: list[dict[str, str]] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "file:line" for messages that point the user at the input


@dataclass(frozen=True)
class Problem:
    """A document that could not be read, with where it is."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Corpus:
    """The documents read from one or more inputs, and the ones skipped with `skip_invalid`."""

    documents: list[Document]
    skipped: list[Problem]
    sources: list[str]


def read_corpus(
    inputs: list[str] | str,
    *,
    text_field: str = "text",
    id_field: str = "id",
    fmt: Format = "auto",
    skip_invalid: bool = False,
) -> Corpus:
    """Read and validate documents from files, globs or `-` (stdin).

    Every problem is collected first; unless `skip_invalid`, any problem raises `CorpusError`
    naming file and line, before anything is embedded.

    Examples:
        >>> corpus = read_corpus(["a.jsonl"], text_field="response")  # doctest: +SKIP
        >>> corpus.documents[0].text  # doctest: +SKIP
    """
    if fmt not in ("auto", *_SUFFIX_FORMATS.values()):
        raise CorpusError(f"unknown input format {fmt!r}; choose auto, jsonl, csv, parquet or txt")
    paths = _expand(inputs if isinstance(inputs, list) else [inputs])
    many = len(paths) > 1
    docs: list[Document] = []
    problems: list[Problem] = []
    seen_ids: dict[str, str] = {}
    for path in paths:
        name = "<stdin>" if path == "-" else path
        for where, row_number, record, problem in _records(path, fmt):
            if problem:
                problems.append(Problem(f"{name}:{where}", problem))
                continue
            doc, problem = _document(record, row_number, text_field, id_field,
                                     f"{name}:{where}", Path(name).stem if many else None)
            if problem:
                problems.append(Problem(f"{name}:{where}", problem))
                continue
            if doc.id in seen_ids:
                problems.append(Problem(doc.where, f"duplicate id {doc.id!r} (first at {seen_ids[doc.id]}); "
                                        f"ids must be unique, pass --id-field with a unique field"))
                continue
            seen_ids[doc.id] = doc.where
            docs.append(doc)
    if problems and not skip_invalid:
        listed = "\n  ".join(str(p) for p in problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CorpusError(f"{len(problems)} invalid document(s); nothing was embedded. Fix them or pass "
                          f"--skip-invalid to embed the rest:\n  {listed}{more}")
    if not docs:
        raise CorpusError(f"no documents found in {', '.join(paths)}")
    return Corpus(docs, problems, ["<stdin>" if p == "-" else p for p in paths])


def _expand(inputs: list[str]) -> list[str]:
    paths: list[str] = []
    for item in inputs:
        if item == "-":
            paths.append("-")
        elif any(ch in item for ch in "*?["):
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise CorpusError(f"no file matches {item!r}")
            paths.extend(matched)
        elif not Path(item).is_file():
            raise CorpusError(f"input file not found: {item}")
        else:
            paths.append(item)
    return paths


def _format_of(path: str, fmt: Format, head: bytes) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    # stdin or an unknown suffix: JSON lines if it starts like an object, else one document per line.
    return "jsonl" if head.lstrip()[:1] == b"{" else "txt"


Record = tuple[str, int, dict[str, Any] | None, str | None]


def _records(path: str, fmt: Format) -> Iterator[Record]:
    """Yield (where, 0-based row number, record, problem) for each row of one input."""
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as fh:
            head = fh.read(64)
        kind = _format_of(path, fmt, head)
        if kind == "parquet":
            yield from _parquet_records(path)
            return
        data = Path(path).read_bytes()
    kind = _format_of(path, fmt, data[:64])
    if kind == "parquet":
        raise CorpusError("Parquet cannot be read from stdin; pass the file path")
    if kind == "csv":
        yield from _csv_records(data)
    else:
        yield from _line_records(data, kind == "jsonl")


def _line_records(data: bytes, is_json: bool) -> Iterator[Record]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    for number, raw in enumerate(lines):
        where = f"line {number + 1}"
        raw = raw.removesuffix(b"\r")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, number, None, f"not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
            continue
        if not is_json:
            yield where, number, {"text": line}, None
            continue
        if not line.strip():
            continue  # blank lines between JSON records carry no document
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, number, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(record, dict):
            yield where, number, None, f"expected a JSON object, got {type(record).__name__}"
            continue
        yield where, number, record, None


def _csv_records(data: bytes) -> Iterator[Record]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorpusError(f"line {line}: not valid UTF-8; re-encode the CSV file as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for number, row in enumerate(reader):
        # line_num is the physical line the row ended on; quoted fields may span several lines.
        yield f"line {reader.line_num}", number, row, None


def _parquet_records(path: str) -> Iterator[Record]:
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a broken file
        raise CorpusError(f"{path}: cannot read as Parquet ({exc})") from None
    for number, row in enumerate(frame.iter_rows(named=True)):
        yield f"row {number}", number, row, None


def _document(record: dict[str, Any], row_number: int, text_field: str, id_field: str,
              where: str, prefix: str | None) -> tuple[Document, str | None]:
    raw_id = record.get(id_field)
    doc_id = str(row_number) if raw_id is None or raw_id == "" else str(raw_id)
    if prefix is not None and raw_id is None:
        doc_id = f"{prefix}:{doc_id}"  # line numbers repeat across files
    fields = {k: v for k, v in record.items() if k not in (text_field, "messages")}
    if prefix is not None:
        fields.setdefault("source", prefix)
    text = record.get(text_field)
    if text is None and "messages" in record:
        messages, problem = _messages(record["messages"])
        return Document(doc_id, None, messages, fields, where), problem
    if text is None:
        known = ", ".join(sorted(record)[:8]) or "none"
        return _EMPTY, (f"no field {text_field!r} (fields: {known}); pass --text-field NAME, "
                        f"or give chats as a 'messages' list")
    if not isinstance(text, str):
        return _EMPTY, f"field {text_field!r} is {type(text).__name__}, expected a string"
    if not text.strip():
        return _EMPTY, "empty document"
    return Document(doc_id, text, None, fields, where), None


def _messages(value: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    if not isinstance(value, list) or not value:
        return None, "'messages' must be a non-empty list of {role, content}"
    for i, msg in enumerate(value):
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                and isinstance(msg.get("content"), str)):
            return None, f"messages[{i}] must be an object with string 'role' and 'content'"
    if not any(m["content"].strip() for m in value):
        return None, "empty document (every message is empty)"
    return [{"role": m["role"], "content": m["content"]} for m in value], None


_EMPTY = Document("", None)
