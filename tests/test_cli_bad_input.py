"""Every bad input the CLI can be given ends in one `error:` line naming what to fix, before any model
work, with nothing written and no traceback; legitimate oddities (a BOM, a long CSV cell, a field that
early records lack) succeed and keep every field. Run through the real entry point, `main()`."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
import torch

from commands.app import main
from saeembed import load_store
from saeembed.synthetic import planted_store
from tests import sae_files

LAYER = 1


def run(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["saeembed", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err


@pytest.fixture
def sae(tmp_path) -> Path:
    folder, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=LAYER)
    return folder


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _corpus(tmp_path: Path) -> Path:
    return _jsonl(tmp_path / "ok.jsonl", [{"text": "a first document"}, {"text": "a second one"}])


# Each case: (name, a function building the command line from tmp_path and the SAE folder, what the line says).
# The model path does not exist: an error about the input proves it came before the model was loaded.
NO_MODEL = "no-such-model-folder"


def _embed(tmp_path: Path, sae: Path, corpus: Path, *extra: str) -> list[str]:
    return ["embed", str(corpus), "-o", str(tmp_path / "out.parquet"), "--model", str(tmp_path / NO_MODEL),
            "--sae", str(sae), "--layer", str(LAYER), "-q", *extra]


def mixed_types(tmp_path, sae):
    corpus = _jsonl(tmp_path / "c.jsonl", [{"text": "a", "x": 1}, {"text": "b", "x": "one"}])
    return _embed(tmp_path, sae, corpus), "line 2"


def lone_surrogate(tmp_path, sae):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n', encoding="utf-8")
    return _embed(tmp_path, sae, corpus), "lone surrogate"


def row_is_a_list(tmp_path, sae):
    return _embed(tmp_path, sae, _jsonl(tmp_path / "c.jsonl", [{"text": "a"}, ["b"]])), "got a list"


def deep_json(tmp_path, sae):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    return _embed(tmp_path, sae, corpus), "line 1"


def glob_of_a_folder(tmp_path, sae):
    (tmp_path / "docs.jsonl").mkdir()
    return _embed(tmp_path, sae, tmp_path / "docs.jsonl"), "folder"


def output_is_a_folder(tmp_path, sae):
    (tmp_path / "out.parquet").mkdir()
    return _embed(tmp_path, sae, _corpus(tmp_path)), "is a folder"


def sae_with_nan(tmp_path, sae):
    sae_files.edit_tensors(sae / "sae_weights.safetensors", W_enc=torch.full((64, 96), float("nan")))
    return _embed(tmp_path, sae, _corpus(tmp_path)), "W_enc"


def sae_cfg_is_a_list(tmp_path, sae):
    (sae / "cfg.json").write_text("[1, 2]")
    return _embed(tmp_path, sae, _corpus(tmp_path)), "cfg.json"


def sae_k_is_a_word(tmp_path, sae):
    sae_files.edit_json(sae / "cfg.json", k="eight")
    return _embed(tmp_path, sae, _corpus(tmp_path)), "k"


def store_meta_not_json(tmp_path, sae):
    import pyarrow.parquet as pq

    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    table = pq.read_table(tmp_path / "s.parquet")
    pq.write_table(table.replace_schema_metadata({b"saeembed": b"{not json"}), tmp_path / "s.parquet")
    return ["info", str(tmp_path / "s.parquet")], "s.parquet"


def labels_truncated_gz(tmp_path, sae):
    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    data = gzip.compress(b'{"index": "1", "description": "a label"}\n' * 50)
    (tmp_path / "batch.jsonl.gz").write_bytes(data[: len(data) // 2])
    return ["labels", "import", str(tmp_path / "batch.jsonl.gz"), "--store", str(tmp_path / "s.parquet")], \
        "batch.jsonl.gz"


def labels_csv_short_row(tmp_path, sae):
    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    (tmp_path / "labels.csv").write_text("latent,label\n1,fine\n2\n")
    return ["labels", "import", str(tmp_path / "labels.csv"), "--store", str(tmp_path / "s.parquet")], "line 3"


def probe_json_corrupt(tmp_path, sae):
    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.json").write_text("{oops")
    (tmp_path / "probe" / "probe.safetensors").write_bytes(b"\0" * 8)
    return ["risk", "score", str(tmp_path / "s.parquet"), "--probe", str(tmp_path / "probe")], "probe"


def table_output_without_suffix(tmp_path, sae):
    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    return ["correlations", str(tmp_path / "s.parquet"), "-o", str(tmp_path / "pairs.txt")], ".csv"


def output_is_an_input(tmp_path, sae):
    planted_store(tmp_path / "s.parquet", 20, [0.3] * 4)
    return ["search", str(tmp_path / "s.parquet"), "0,1", "-o", str(tmp_path / "s.parquet")], "is an input"


CASES = [output_is_an_input, mixed_types, lone_surrogate, row_is_a_list, deep_json, glob_of_a_folder,
         output_is_a_folder, sae_with_nan, sae_cfg_is_a_list, sae_k_is_a_word, store_meta_not_json,
         labels_truncated_gz, labels_csv_short_row, probe_json_corrupt, table_output_without_suffix]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_before_any_work(case, tmp_path, sae, monkeypatch, capsys):
    argv, says = case(tmp_path, sae)
    code, out, err = run(monkeypatch, capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], err
    assert NO_MODEL not in lines[0], "the input must be refused before the model is looked at"
    assert not (tmp_path / "out.parquet").is_file()


def test_legitimate_oddities_embed_and_keep_every_field(llama_dir, sae, tmp_path, monkeypatch, capsys):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"text": "with a byte order mark", "a": 1}\r\n'
                    b'{"text": "next", "b": "late"}\r\n')
    long_csv = tmp_path / "long.csv"
    long_csv.write_text('text,kind\n"' + "word " * 40_000 + '",long\nshort one,short\n', encoding="utf-8")
    for corpus, fields in ((bom, {"a": [1, None], "b": [None, "late"]}), (long_csv, {"kind": ["long", "short"]})):
        out = tmp_path / f"{corpus.stem}.parquet"
        code, _, err = run(monkeypatch, capsys, "embed", str(corpus), "-o", str(out), "--model", str(llama_dir),
                           "--sae", str(sae), "--layer", str(LAYER), "--max-tokens", "64", "-q")
        assert code == 0, err
        frame = load_store(out).frame
        assert frame.height == 2 and not frame["text"][0].startswith("\ufeff")
        for name, values in fields.items():
            assert frame[name].to_list() == values
