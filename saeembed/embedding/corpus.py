"""Reading corpus files (JSONL, CSV, Parquet, plain text, stdin) into validated documents.

What is refused, and how: a problem with one document (malformed JSON, a missing or empty text, a line
that is not UTF-8, a CSV row with too few or too many cells, a lone surrogate, a field whose kind of
value differs from earlier records) is collected with its file and line; unless `skip_invalid`, the
problems are raised as one `CorpusError` of one line, before anything is embedded. A problem with a
whole file (not found, a folder, unreadable, not CSV, not Parquet, UTF-16) is raised at once, naming
the file. Nothing else escapes.

What is accepted: a UTF-8 byte-order mark at the start of any text format (it is dropped, and so is
one at the start of a line of JSON lines or text, left by concatenating files), and CRLF, LF or bare CR
line endings in JSON lines, CSV and text files; CSV cells of any length.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from saeembed.errors import CorpusError

Format = Literal["auto", "jsonl", "csv", "parquet", "txt"]
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                   ".parquet": "parquet", ".txt": "txt", ".text": "txt"}
_MAX_LISTED = 10
_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32 LE starts like UTF-16 LE
_NEWLINE = re.compile(rb"\r\n|\r|\n")
MAX_FIELD_DEPTH = 32
"""Objects and lists nested deeper than this in a field are refused: the store (Parquet) cannot hold them."""
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_EXACT_IN_FLOAT = 2 ** 53


@dataclass(frozen=True)
class Document:
    """One input document: plain `text` or a chat (`messages`), plus the input's other fields."""

    id: str
    text: str | None
    messages: list[dict[str, Any]] | None = None
    """A chat: its messages as given (a string `role` and `content` each, and any other keys)."""
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
    check_field_types: bool = False,
) -> Corpus:
    """Read and validate documents from files, globs or `-` (stdin).

    Every problem is collected first; unless `skip_invalid`, any problem raises one `CorpusError`
    (one line) naming file and line, before anything is embedded.

    `check_field_types`: the fields are going to be stored as columns (`embed` does), so each field
    must hold one kind of value in every record: text, true/false, a number (whole numbers and numbers
    with decimals mix: the column holds numbers with decimals), a list or an object (checked the same
    way inside, to `MAX_FIELD_DEPTH` levels); null fits anywhere. The first record that disagrees with
    the ones before it is a problem naming its file, line, field and both kinds. The id field is not
    checked: ids are stored as text.

    Examples:
        >>> corpus = read_corpus(["a.jsonl"], text_field="response")  # doctest: +SKIP
        >>> corpus.documents[0].text  # doctest: +SKIP
    """
    if fmt not in ("auto", *_SUFFIX_FORMATS.values()):
        raise CorpusError(f"unknown input format {fmt!r}; choose auto, jsonl, csv, parquet or txt")
    paths = _expand(inputs if isinstance(inputs, list) else [inputs])
    names = ["<stdin>" if p == "-" else p for p in paths]
    streams = ((name, _records(path, name, fmt, text_field)) for path, name in zip(paths, names))
    return _gather(streams, names, text_field=text_field, id_field=id_field, skip_invalid=skip_invalid,
                   check_field_types=check_field_types, prefix_ids=len(paths) > 1)


def records_corpus(
    documents: Any,
    *,
    text_field: str = "text",
    id_field: str = "id",
    skip_invalid: bool = False,
    check_field_types: bool = False,
) -> Corpus:
    """Validate in-memory documents exactly as `read_corpus` validates a file's records: a list of
    strings, a list of records (dicts with the text under `text_field`, other keys kept as fields), or a
    polars or pandas DataFrame with a text column (other columns kept). Problems name the record by its
    0-based position.

    Examples:
        >>> records_corpus(["a first document", "a second one"]).documents[1].id
        '1'
    """
    rows = _in_memory_rows(documents, text_field)
    stream = (("records", _memory_records(rows)),)
    return _gather(stream, ["records"], text_field=text_field, id_field=id_field, skip_invalid=skip_invalid,
                   check_field_types=check_field_types, prefix_ids=False, where_prefix=False)


def _in_memory_rows(documents: Any, text_field: str) -> list[Any]:
    """The rows of a list / tuple / Series / DataFrame of documents, or of one string (strings become
    {text_field: string})."""
    if hasattr(documents, "columns") and (hasattr(documents, "iter_rows") or hasattr(documents, "to_dict")):
        columns = [str(c) for c in documents.columns]  # a polars or a pandas DataFrame
        if text_field not in columns and "messages" not in columns:
            raise CorpusError(f"the DataFrame has no column {text_field!r} (columns: {_listed(columns)}); "
                              f"pass text_field=NAME")
        if hasattr(documents, "iter_rows"):
            return list(documents.iter_rows(named=True))
        return documents.to_dict("records")
    if isinstance(documents, str):  # one document, as sentence-transformers takes it
        documents = [documents]
    elif hasattr(documents, "to_list") or hasattr(documents, "tolist"):  # a pandas / polars Series, an array
        documents = documents.to_list() if hasattr(documents, "to_list") else documents.tolist()
    if isinstance(documents, bytes) or not isinstance(documents, (list, tuple)):
        raise CorpusError(f"give the documents as a list of strings, a list of records (dicts) or a DataFrame, "
                          f"not {type(documents).__name__}")
    return [{text_field: d} if isinstance(d, str) else d for d in documents]


def _memory_records(rows: list[Any]) -> Iterator[Record]:
    for number, record in enumerate(rows):
        where = f"record {number}"
        if not isinstance(record, dict):
            yield where, number, None, f"expected a string or a dict, got {type(record).__name__}"
        elif not all(isinstance(key, str) for key in record):
            yield where, number, None, "every field name must be a string"
        elif (bad := _surrogate_path(record)) is not None:
            yield where, number, None, (f"field {bad!r} holds a lone surrogate (\\ud800-\\udfff that is not half "
                                        f"of a pair), which is not text; remove or replace it")
        else:
            yield where, number, record, None


def _gather(streams: Iterable[tuple[str, Iterator[Record]]], names: list[str], *, text_field: str, id_field: str,
            skip_invalid: bool, check_field_types: bool, prefix_ids: bool, where_prefix: bool = True) -> Corpus:
    """Documents from (source name, records) streams: every problem collected, then one CorpusError."""
    docs: list[Document] = []
    problems: list[Problem] = []
    seen_ids: dict[str, str] = {}
    kinds = _FieldKinds(id_field) if check_field_types else None
    chats = _FieldKinds(id_field) if check_field_types else None  # the messages' keys, stored as given
    for name, records in streams:
        for where, row_number, record, problem in records:
            where = f"{name}:{where}" if where_prefix else where
            if problem:
                problems.append(Problem(where, problem))
                continue
            assert record is not None  # every Record without a problem carries its record
            doc, problem = _document(record, row_number, text_field, id_field,
                                     where, Path(name).stem if prefix_ids else None)
            if not problem and kinds is not None and chats is not None:  # both or neither (check_field_types)
                # fitted together: a refused record changes neither the fields' kinds nor the messages'
                try:
                    fitted = (kinds.fit(doc.fields, where),
                              chats.fit({"messages": doc.messages} if doc.messages is not None else {}, where))
                except _Conflict as exc:
                    problem = str(exc)
                else:
                    kinds.take(fitted[0])
                    chats.take(fitted[1])
            if problem:
                problems.append(Problem(where, problem))
                continue
            if doc.id in seen_ids:
                problems.append(Problem(doc.where, f"duplicate id {doc.id!r} (first at {seen_ids[doc.id]}); "
                                        f"ids must be unique: set id_field to a unique field (--id-field)"))
                continue
            seen_ids[doc.id] = doc.where
            docs.append(doc)
    if problems and not skip_invalid:
        raise CorpusError(problems_message(problems))
    if kinds is not None and chats is not None:
        kinds.check_storable()
        chats.check_storable()
    if not docs:
        raise CorpusError(f"no documents found in {', '.join(names)}"
                          + (f" ({len(problems)} skipped as invalid)" if problems else ""))
    return Corpus(docs, problems, names)


def problems_message(problems: list[Problem]) -> str:
    """One line: how many documents are invalid, what to do, and the first few with file and line."""
    listed = " | ".join(str(p) for p in problems[:_MAX_LISTED])
    more = f" | ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return (f"{len(problems)} invalid document(s); nothing was embedded. Fix them or set skip_invalid=True "
            f"(--skip-invalid) to embed the rest: {listed}{more}")


def _expand(inputs: list[str]) -> list[str]:
    paths: list[str] = []
    for item in inputs:
        if item == "-":
            paths.append("-")
        elif any(ch in item for ch in "*?["):
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise CorpusError(f"no file matches {item!r}")
            folders = [m for m in matched if Path(m).is_dir()]
            if folders:
                raise CorpusError(f"{item!r} matches the folder {folders[0]}; give a pattern that matches only "
                                  f"files, e.g. {str(Path(folders[0]) / '*.jsonl')!r}")
            paths.extend(matched)
        elif Path(item).is_dir():
            raise CorpusError(f"{item} is a folder; pass the files in it, e.g. {str(Path(item) / '*.jsonl')!r}")
        elif not Path(item).exists():
            raise CorpusError(f"input file not found: {item}")
        else:
            paths.append(item)  # a regular file, or a pipe such as <(zcat corpus.jsonl.gz)
    return paths


def _format_of(path: str, fmt: Format, head: bytes) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    if head[:4] == b"PAR1":
        return "parquet"
    # stdin or an unknown suffix: JSON lines if it starts like an object, else one document per line.
    return "jsonl" if head.lstrip()[:1] == b"{" else "txt"


Record = tuple[str, int, "dict[str, Any] | None", "str | None"]


def _records(path: str, name: str, fmt: Format, text_field: str) -> Iterator[Record]:
    """Yield (where, 0-based row number, record, problem) for each row of one input."""
    if path != "-" and (fmt == "parquet" or fmt == "auto" and Path(path).suffix.lower() == ".parquet"):
        yield from _parquet_records(path, name, text_field)
        return
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CorpusError(f"{name}: cannot read it ({exc.strerror or exc}); check the path and its permissions") \
            from None
    if data.startswith(_UTF16_32_BOMS):
        raise CorpusError(f"{name} is UTF-16 or UTF-32 encoded; re-encode it as UTF-8")
    kind = _compressed(data)
    if kind:  # gzip, bzip2, xz, zstd, zip: not text at all
        raise CorpusError(f"{name} is {kind}-compressed; decompress it first (e.g. `gunzip -k {name}`), or "
                          f"pipe it in: `zcat {name} | saeembed embed - ...`")
    data = data.removeprefix(_BOM)
    kind = _format_of(path, fmt, data[:64])
    if kind == "parquet":
        if path == "-":
            raise CorpusError("Parquet cannot be read from stdin; pass the file path")
        yield from _parquet_records(io.BytesIO(data), name, text_field)
    elif kind == "csv":
        yield from _csv_records(data, name, text_field)
    else:
        yield from _line_records(data, kind == "jsonl", text_field)


def _lines(data: bytes) -> list[bytes]:
    """Lines ended by LF, CRLF or a bare CR; the final line ending does not start an empty line."""
    lines = _NEWLINE.split(data)
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


# Magic bytes of compressed files, which were refused as "not valid UTF-8" without a word on why. bzip2's
# "BZh" alone starts ordinary text ("BZhang said ..."): its block size digit and block magic must follow.
_COMPRESSED_NAMES = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")


def _compressed(data: bytes) -> str | None:
    """The compression a file's first bytes name (gzip, bzip2, xz, zstd, zip), or None."""
    if _BZIP2.match(data[:10]):
        return "bzip2"
    return next((kind for magic, kind in _COMPRESSED_NAMES.items() if data.startswith(magic)), None)


def _clipped(value: str, limit: int = 80) -> str:
    """A value from the input as shown in a message: repr, cut to `limit` characters (a 5 MB key was
    echoed whole into the error line)."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + f"… ({len(value):,} characters)"


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _line_records(data: bytes, is_json: bool, text_field: str = "text") -> Iterator[Record]:
    for number, raw in enumerate(_lines(data)):
        where = f"line {number + 1}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, number, None, (f"not valid UTF-8 (byte {exc.start + 1} of the line); re-encode the "
                                        f"file as UTF-8")
            continue
        line = line.removeprefix("\ufeff")  # the BOM of a file concatenated after another one
        if not line.strip():
            continue  # blank lines carry no document (between JSON records, or between paragraphs of text)
        if not is_json:
            yield where, number, {text_field: line}, None  # a text line is the text, whatever its field name
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            yield where, number, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
            continue
        except _DuplicateKey as exc:
            yield where, number, None, (f"the key {_clipped(exc.args[0])} appears twice in one object; keep one "
                                        f"(JSON readers silently drop one of them)")
            continue
        except RecursionError:
            yield where, number, None, (f"JSON nested too deeply to read; at most {MAX_FIELD_DEPTH} levels of "
                                        f"objects and lists can be stored")
            continue
        except ValueError as exc:  # a whole number of more digits than Python converts (4,300)
            yield where, number, None, f"a number JSON readers cannot read ({_one_line(exc, 80)}); quote it"
            continue
        if not isinstance(record, dict):
            what = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
                type(record), "a number")
            yield where, number, None, f"expected a JSON object per line ({{\"text\": ...}}), got {what}"
            continue
        if _SURROGATE_ESCAPE.search(raw):
            bad = _surrogate_path(record)
            if bad is not None:
                yield where, number, None, (f"field {bad!r} holds a lone surrogate (a \\ud800-\\udfff escape "
                                            f"that is not half of a pair), which is not text; remove or "
                                            f"replace it")
                continue
        yield where, number, record, None


def _surrogate_path(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The path of the first string (value or key) holding a lone surrogate, else None."""
    if isinstance(value, str):
        return None if _is_text(value) else path
    if depth > MAX_FIELD_DEPTH + 1:
        return None  # refused for its depth elsewhere
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if not _is_text(key):
                return where
            found = _surrogate_path(item, where, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _surrogate_path(item, f"{path}[]", depth + 1)
            if found is not None:
                return found
    return None


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def _unlimited_csv_fields() -> Iterator[None]:
    """The csv module refuses cells over 131,072 characters by default; a document may be longer."""
    previous = csv.field_size_limit()
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            break
        except OverflowError:  # a C long narrower than Py_ssize_t (Windows)
            limit //= 2
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _csv_records(data: bytes, name: str, text_field: str) -> Iterator[Record]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(_lines(data[: exc.start] + b"x"))
        raise CorpusError(f"{name}:line {line}: not valid UTF-8; re-encode the CSV file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    with _unlimited_csv_fields():
        try:
            for row in reader:
                if row:  # csv yields [] for an empty line
                    rows.append((reader.line_num, row))
        except csv.Error as exc:
            raise CorpusError(f"{name}:line {max(reader.line_num, 1)}: not valid CSV ({exc}); quote cells that "
                              f"hold commas, quotes or line breaks, and double the quotes inside them") from None
    if not rows:
        return
    header_line, header = rows[0]
    for i, column in enumerate(header):
        if column in header[:i]:
            raise CorpusError(f"{name}:line {header_line}: the column {column!r} appears twice in the header; "
                              f"rename one so no cell is lost")
    if text_field not in header and "messages" not in header:
        raise CorpusError(f"{name}:line {header_line}: no column {text_field!r} in the header (columns: "
                          f"{_listed(header)}); set text_field (--text-field NAME)")
    for number, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            yield (f"line {line}", number, None,
                   f"{len(row)} cell(s) but the header has {len(header)} columns ({_listed(header)}); "
                   f"quote cells that hold commas, and give every row one cell per column")
            continue
        yield f"line {line}", number, dict(zip(header, row)), None


def _parquet_records(source: Any, name: str, text_field: str) -> Iterator[Record]:
    import polars as pl

    try:
        frame = pl.read_parquet(source)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a missing or broken file
        raise CorpusError(f"{name}: cannot read it as Parquet ({_one_line(exc)}); check the file or pass "
                          f"--input-format") from None
    if text_field not in frame.columns and "messages" not in frame.columns:
        raise CorpusError(f"{name}: no column {text_field!r} (columns: {_listed(frame.columns)}); "
                          f"set text_field (--text-field NAME)")
    for number, row in enumerate(frame.iter_rows(named=True)):
        yield f"row {number}", number, row, None


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    return (shown + (", ..." if len(names) > 8 else "")) or "none"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _document(record: dict[str, Any], row_number: int, text_field: str, id_field: str,
              where: str, prefix: str | None) -> tuple[Document, str | None]:
    raw_id = record.get(id_field)
    if isinstance(raw_id, float) and raw_id.is_integer():
        raw_id = int(raw_id)  # a whole number read as a float (Parquet, pandas with nulls)
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        # str() made `true` the id 'True' and an object a Python repr: ids name documents, so only text and
        # whole numbers are taken as they are
        return _EMPTY, (f"field {id_field!r} is {_KIND_NAMES.get(_kind_name(raw_id), 'not text')}; an id must be "
                        f"text or a whole number (set id_field to another field, or leave it out for line numbers)")
    doc_id = str(row_number) if raw_id is None or raw_id == "" else str(raw_id)
    if prefix is not None and raw_id is None:
        doc_id = f"{prefix}:{doc_id}"  # line numbers repeat across files
    text = record.get(text_field)
    chat = text is None and "messages" in record
    # every other field is kept; `messages` too when it is not the document (the store renames it)
    fields = {k: v for k, v in record.items() if k != text_field and not (chat and k == "messages")}
    if prefix is not None:
        fields.setdefault("source", prefix)
    if chat:
        messages, problem = _messages(record["messages"])
        return Document(doc_id, None, messages, fields, where), problem
    if text is None:
        return _EMPTY, (f"no field {text_field!r} (fields: {_listed(sorted(record))}); set text_field "
                        f"(--text-field NAME), or give chats as a 'messages' list")
    if not isinstance(text, str):
        return _EMPTY, f"field {text_field!r} is {_KIND_NAMES.get(_kind_name(text), 'not text')}, expected a string"
    if not text.strip():
        return _EMPTY, "empty document"
    return Document(doc_id, text, None, fields, where), None


def _messages(value: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    if not isinstance(value, list) or not value:
        return None, "'messages' must be a non-empty list of {role, content}"
    for i, msg in enumerate(value):
        if isinstance(msg, dict) and msg.get("content") is None and msg.get("tool_calls"):
            # an assistant turn that only calls tools has no text (OpenAI's form: content null): read as ""
            value = [*value[:i], {**msg, "content": ""}, *value[i + 1:]]
            msg = value[i]
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                and isinstance(msg.get("content"), str)):
            return None, (f"messages[{i}] must be an object with string 'role' and 'content' (content may be null "
                          f"only beside tool_calls)")
    if not any(m["content"].strip() for m in value):
        return None, "empty document (every message is empty)"
    # Every key with a value is kept: the store holds them and templates may read them. A null is
    # dropped: it says nothing (Parquet fills keys a message lacks with null), and templates that test
    # `'tool_calls' in message` would then fail on it mid-run.
    return [{k: v for k, v in m.items() if v is not None} for m in value], None


_EMPTY = Document("", None)


# --- one kind of value per field -------------------------------------------------------------------

_KIND_NAMES = {"text": "text", "bool": "true/false", "int": "a whole number", "float": "a number",
               "list": "a list", "object": "an object"}


def _kind_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    name = type(value).__name__  # from Parquet or a DataFrame: date, datetime, Decimal, bytes ...
    return f"python {name}" if name in _KIND_NAMES else name  # a bare `object()` is no JSON object


class _Kind:
    """The kind of value at one path of a field, merged over records, with where it was first seen."""

    __slots__ = ("name", "where", "item", "keys", "big")

    def __init__(self, name: str, where: str, item: "_Kind | None" = None,
                 keys: "dict[str, _Kind | None] | None" = None, big: "tuple[int, str] | None" = None):
        self.name, self.where, self.item, self.keys, self.big = name, where, item, keys, big

    def shown(self) -> str:
        return _KIND_NAMES.get(self.name, f"a {self.name} value")


class _Conflict(Exception):
    pass


def _kind_of(value: Any, path: str, where: str, depth: int = 0) -> _Kind | None:
    """The kind of one record's value (None for null); raises _Conflict for what cannot be stored."""
    name = _kind_name(value)
    if name == "int":
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Conflict(f"field {path!r} is the whole number {value}, too large to store as a number; "
                            f"quote the values so they are all text")
        return _Kind(name, where, big=(value, where) if abs(value) > _EXACT_IN_FLOAT else None)
    if name not in ("list", "object"):
        return None if value is None else _Kind(name, where)
    if depth >= MAX_FIELD_DEPTH:
        raise _Conflict(f"field {path!r} nests objects and lists more than {MAX_FIELD_DEPTH} levels deep, "
                        f"more than the store can hold; flatten it, or quote it as a JSON string")
    if name == "list":
        item = None
        for element in value:
            item = _merge(item, _kind_of(element, f"{path}[]", where, depth + 1), f"{path}[]")
        return _Kind(name, where, item=item)
    return _Kind(name, where, keys={key: _kind_of(item, f"{path}.{key}", where, depth + 1)
                                    for key, item in value.items()})


def _merge(old: _Kind | None, new: _Kind | None, path: str) -> _Kind | None:
    """`old` widened by `new` (neither is changed), or _Conflict naming both kinds and where."""
    if old is None or new is None:
        return new if old is None else old
    if old.name == new.name:
        if old.name == "list":
            item = _merge(old.item, new.item, f"{path}[]")
            return old if item is old.item else _Kind("list", old.where, item=item)
        if old.name == "object":
            keys = dict(old.keys or {})
            for key, kind in (new.keys or {}).items():
                keys[key] = _merge(keys.get(key), kind, f"{path}.{key}") if key in keys else kind
            return _Kind("object", old.where, keys=keys)
        if old.name == "int" and new.big and not old.big:
            return _Kind("int", old.where, big=new.big)
        return old
    if {old.name, new.name} == {"int", "float"}:
        big = old.big or new.big
        if big:
            raise _Conflict(f"field {path!r} mixes numbers with decimals and the whole number {big[0]} "
                            f"(at {big[1]}), which a number with decimals cannot hold exactly; quote the values "
                            f"so they are all text")
        return old if old.name == "float" else _Kind("float", old.where)
    raise _Conflict(f"field {path!r} is {new.shown()} here but {old.shown()} at {old.where}; a field must hold "
                    f"one kind of value in every record: quote the values so they are all text, or make them "
                    f"all {old.shown()}")


class _FieldKinds:
    """The kind of every stored field so far; refuses the first record that disagrees."""

    def __init__(self, id_field: str):
        self.id_field = id_field
        self.kinds: dict[str, _Kind | None] = {}

    def fit(self, fields: dict[str, Any], where: str) -> dict[str, _Kind | None]:
        """The kinds of the record's fields merged with those so far (`take` them once the whole record
        fits); raises _Conflict, naming the field and both records, when one does not fit."""
        merged: dict[str, _Kind | None] = {}
        for name, value in fields.items():
            if name == self.id_field:
                continue  # stored as the text id
            kind = _kind_of(value, name, where)
            merged[name] = _merge(self.kinds[name], kind, name) if name in self.kinds else kind
        return merged

    def take(self, fitted: dict[str, _Kind | None]) -> None:
        self.kinds.update(fitted)

    def check_storable(self) -> None:
        for name, kind in self.kinds.items():
            empty = _empty_object(kind, name)
            if empty:
                path, where = empty
                raise CorpusError(f"{where}: field {path!r} is an empty object ({{}}) in every record, which the "
                                  f"store (Parquet) cannot hold; drop the field, or give it a key in some record")


def _empty_object(kind: _Kind | None, path: str) -> tuple[str, str] | None:
    if kind is None:
        return None
    if kind.name == "list":
        return _empty_object(kind.item, f"{path}[]")
    if kind.name == "object":
        if not kind.keys:
            return path, kind.where
        for key, item in kind.keys.items():
            found = _empty_object(item, f"{path}.{key}")
            if found:
                return found
    return None
