"""Published labels into a label store: Neuronpedia .jsonl(.gz) batches, JSON {latent: label}, CSV
latent,label. A bad row is refused in one line naming the file, line (or key) and field."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Any

from saeembed.errors import first_line
from saeembed.labels.store import LabelError, Labels

_LATENT_ID = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")


def import_labels(path: str | Path, d_sae: int) -> tuple[Labels, list[str]]:
    """Read Neuronpedia explanation batches (.jsonl.gz or .jsonl, or a folder of them: one JSON object
    per line with `index` and `description`), JSON {latent id: label} or CSV (columns latent,label).
    Returns the labels and notes for the user (labelled count, duplicates, entries without a label).

    Every row is checked before anything is saved; a bad one raises one LabelError line naming the
    file, the line (or JSON key) and the field: a file that is not UTF-8, cut short (a truncated
    .gz) or not JSON/CSV, a line that is not an object, a CSV row with too few or too many fields, a
    latent id that is not an integer or is outside 0..d_sae-1 (the labels of another SAE), a label
    that is not text (a number, list or object). A label that is null, empty or missing is skipped
    and counted in the notes: Neuronpedia lists latents it has no explanation for that way.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"{path}: no such file or folder; give Neuronpedia .jsonl.gz batches (a file or a "
                         f"folder of them), a .json or a .csv file")
    files = sorted(path.glob("*.jsonl.gz")) + sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise LabelError(f"{path} holds no .jsonl.gz or .jsonl explanation batches")
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    for file in files:
        found, empty = _read_pairs(file)
        pairs.extend(found)
        skipped += empty
    out_of_range = sorted({i for i, _, _ in pairs if not 0 <= i < d_sae})
    if out_of_range:
        first = next(where for i, _, where in pairs if not 0 <= i < d_sae)
        more = f" and {len(out_of_range) - 5} more" if len(out_of_range) > 5 else ""
        raise LabelError(f"{path} labels latents {out_of_range[:5]}{more} outside 0..{d_sae - 1} (first at "
                         f"{first}): these labels are for another SAE; import them with a store of that SAE")
    label: dict[int, str] = {}
    repeated = 0
    for latent, text, _ in pairs:  # several explanations of one latent: keep the first, as listed
        if latent in label:
            repeated += 1
        else:
            label[latent] = text
    labels = Labels(d_sae, label, {i: f"import:{path.name}" for i in label}, {i: None for i in label})
    notes = [f"{len(label)} of {d_sae} latents labelled ({d_sae - len(label)} unlabelled)"]
    if repeated:
        notes.append(f"{repeated} further explanations of already-labelled latents ignored")
    if skipped:
        notes.append(f"{skipped} entries without a label (null, empty or missing) skipped")
    return labels, notes


def _read_pairs(file: Path) -> tuple[list[tuple[int, str, str]], int]:
    """(latent, label, where it was read) of a label file, and how many entries had no label."""
    name = file.name.lower()
    if not name.endswith((".jsonl.gz", ".jsonl", ".json", ".csv")):
        raise LabelError(f"{file}: unknown label file; give Neuronpedia .jsonl.gz batches, .jsonl, .json or .csv")
    if file.is_dir():
        raise LabelError(f"{file} is a folder; give the label file itself, or a folder of .jsonl.gz batches")
    if file.exists() and not file.stat().st_size:
        raise LabelError(f"{file} is empty (0 bytes); download or copy it again")
    try:
        if name.endswith((".jsonl.gz", ".jsonl")):
            return _read_jsonl(file, gzipped=name.endswith(".gz"))
        data = file.read_bytes()
    except OSError as exc:
        raise LabelError(f"{file}: cannot be read ({exc.strerror or exc}); check the path and its "
                         f"permissions") from None
    text = _utf8(data, file)
    return _read_json(text, file) if name.endswith(".json") else _read_csv(text, file)


def _read_jsonl(file: Path, gzipped: bool) -> tuple[list[tuple[int, str, str]], int]:
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    number = 0
    try:
        with (gzip.open(file, "rb") if gzipped else open(file, "rb")) as fh:
            for number, raw in enumerate(fh, 1):
                where = f"{file} line {number}"
                line = _utf8(raw, file, number).lstrip("\ufeff").strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise LabelError(f"{where}: not JSON ({first_line(exc, 120)}); each line must be one JSON "
                                     f"object with index and description") from None
                if not isinstance(row, dict):
                    raise LabelError(f"{where}: a JSON {_json_kind(row)}, not an object with index and "
                                     f"description")
                if "index" not in row:
                    raise LabelError(f"{where}: no index field (the latent id); each line needs index and "
                                     f"description")
                latent = _latent_id(row["index"], where, "index")
                text = _label_text(row.get("description"), where, "description")
                if text is None:
                    skipped += 1
                else:
                    pairs.append((latent, text, where))
    except EOFError:
        raise LabelError(f"{file}: the compressed file ends early, after line {number} (it is truncated); "
                         f"download or copy it again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise LabelError(f"{file}: damaged gzip data after line {number} ({first_line(exc, 120)}); download or "
                         f"copy it again, or decompress it yourself and give the .jsonl") from None
    except OSError as exc:
        raise LabelError(f"{file}: cannot be read ({exc.strerror or exc}); check the path and its "
                         f"permissions") from None
    return pairs, skipped


def _read_json(text: str, file: Path) -> tuple[list[tuple[int, str, str]], int]:
    objects: list[list[tuple[str, Any]]] = []  # every object's (key, value) pairs; the outermost ends last

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=keep_pairs)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{file} line {exc.lineno}: not JSON ({exc.msg}); give one object "
                         f"{{latent id: label}}") from None
    except RecursionError:
        raise LabelError(f"{file}: not JSON this program can read (nested too deep); give one object "
                         f"{{latent id: label}}") from None
    if not isinstance(data, dict):
        raise LabelError(f"{file}: a JSON {_json_kind(data)}; expected one JSON object {{latent id: label}}")
    pairs: list[tuple[int, str, str]] = []
    skipped = 0
    for key, value in objects[-1]:  # a repeated key is kept in order, as a repeated latent (the first wins)
        where = f"{file} key {json.dumps(key)[:40]}"
        latent = _latent_id(key, where, "the key")
        label = _label_text(value, where, "the label")
        if label is None:
            skipped += 1
        else:
            pairs.append((latent, label, where))
    return pairs, skipped


def _read_csv(text: str, file: Path) -> tuple[list[tuple[int, str, str]], int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        if "latent" not in header or "label" not in header:
            raise LabelError(f"{file}: a labels CSV needs a first line naming the columns latent,label "
                             f"(found {','.join(header)[:60] or 'nothing'})")
        at_latent, at_label = header.index("latent"), header.index("label")
        pairs: list[tuple[int, str, str]] = []
        skipped = 0
        for row in reader:
            where = f"{file} line {reader.line_num}"
            if not row or row == [""]:
                continue  # a blank line
            if len(row) != len(header):
                raise LabelError(f"{where}: {len(row)} field{'s' if len(row) != 1 else ''} where the header has "
                                 f"{len(header)} ({','.join(header)[:60]}); put a label that holds a comma in "
                                 f"double quotes")
            latent = _latent_id(row[at_latent], where, "latent")
            label = _label_text(row[at_label], where, "label")
            if label is None:
                skipped += 1
            else:
                pairs.append((latent, label, where))
    except csv.Error as exc:
        raise LabelError(f"{file} line {reader.line_num}: not CSV ({first_line(exc, 120)}); give columns "
                         f"latent,label") from None
    return pairs, skipped


def _utf8(data: bytes, file: Path, line: int | None = None) -> str:
    """Bytes as UTF-8 text (a byte order mark dropped), or a LabelError naming the line."""
    try:
        return data.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        if line is None:
            line = data.count(b"\n", 0, exc.start) + 1
        raise LabelError(f"{file} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                         f"UTF-8") from None


def _latent_id(value: Any, where: str, field: str) -> int:
    """A latent id from JSON (an integer, or a string of one, as Neuronpedia writes it) or CSV."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _LATENT_ID.fullmatch(value):
        return int(value.strip())  # int() strips less than \s matches (e.g. not \x1f)
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    raise LabelError(f"{where}: {field} {shown[:40]} is not a latent id (a whole number); fix or remove that "
                     f"entry")


def _label_text(value: Any, where: str, field: str) -> str | None:
    """A label: a JSON or CSV string, stripped; None (skipped) for null or empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise LabelError(f"{where}: {field} is a JSON {_json_kind(value)}, not text; give every label as a "
                         f"string (or null to leave the latent unlabelled)")
    return value.strip() or None


def _json_kind(value: Any) -> str:
    return {list: "list", dict: "object", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)
