"""What the CLI prints is safe: data cannot drive the terminal or rich markup, and no traceback
reaches a user (unexpected errors leave one line and a log file)."""

from __future__ import annotations

import os
import sys

import pytest
from typer.testing import CliRunner

from commands.app import app, main
from commands.ui import shown
from saeembed.synthetic import planted_store

EVIL = "[/oops] [link=file:///etc/passwd]click[/link] \x1b[2J\x1b]8;;http://x\x07y\x1b]8;;\x07 \u202eevil :smile:"


def test_shown_strips_escapes_and_escapes_markup():
    from rich.console import Console

    console = Console(record=True, width=200, emoji=False, color_system=None)
    console.print(f"[bold]{shown(EVIL)}[/bold]")
    text = console.export_text()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "[/oops]" in text and "[link=file:///etc/passwd]click[/link]" in text
    assert ":smile:" in text  # no emoji substitution
    assert shown("a\nb\tc", one_line=True) == "a b c"
    assert shown("a\nb") == "a\nb"


def test_labels_ids_and_texts_from_data_print_as_written(tmp_path, monkeypatch):
    from saeembed.labels import Labels, save_labels

    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))  # the hostile label stays in this test

    n = 300
    texts = [f"{EVIL} document {i}" for i in range(n)]
    fields = {"text": texts, "id": [f"{EVIL}{i}" for i in range(n)]}
    planted_store(tmp_path / "a.parquet", n, [0.7, 0.2, 0.3], seed=1, fields=fields)
    planted_store(tmp_path / "b.parquet", n, [0.1, 0.2, 0.3], seed=2, fields=fields)
    save_labels(Labels(3, {0: EVIL}, {0: "test"}, {}), "fake-sae")
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"),
                                      "--length", "ignore"])
    assert result.exit_code == 0, result.output
    assert "[/oops]" in result.output and "[link=file:///etc/passwd]" in result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output


def _main(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["saeembed", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr()


def test_an_unexpected_error_is_one_line_and_a_log_file(tmp_path, monkeypatch, capsys):
    import saeembed.summary

    def broken(path, **_):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(saeembed.summary, "summarize", broken)
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    code, out = _main(monkeypatch, capsys, ["info", str(tmp_path / "x.parquet")])
    assert code == 1
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert "unexpected RuntimeError: something nobody expected second line" in lines[0]
    logs = list((tmp_path / "cache" / "logs").glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0].replace("\n", "")
    log = logs[0].read_text()
    assert "Traceback" in log and "RuntimeError" in log and "info" in log


def test_the_environment_failing_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    import saeembed.summary

    def full_disk(path, **_):
        raise OSError(28, os.strerror(28), "/data/out.parquet")

    monkeypatch.setattr(saeembed.summary, "summarize", full_disk)
    code, out = _main(monkeypatch, capsys, ["info", str(tmp_path / "x.parquet")])
    assert code == 1 and "Traceback" not in out.err
    assert "No space left on device" in out.err and "/data/out.parquet" in out.err


def test_a_library_error_outside_a_command_guard_is_still_one_line(tmp_path, monkeypatch, capsys):
    code, out = _main(monkeypatch, capsys, ["info", str(tmp_path / "missing.parquet")])
    assert code == 1 and "Traceback" not in out.err and out.err.startswith("error:")


def test_a_model_with_only_pickled_weights_is_refused_before_anything_is_read(tmp_path, llama_dir, corpus_file):
    """A folder holding a pickled pytorch_model.bin (which runs code when unpickled) is refused in one line
    naming the file; nothing is unpickled (the raw UnpicklingError text reached the user)."""
    import pickle
    import shutil

    from tests import sae_files

    folder = tmp_path / "pickled"
    shutil.copytree(llama_dir, folder)
    (folder / "model.safetensors").unlink()
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    out = CliRunner().invoke(app, ["embed", str(corpus_file), "-o", str(tmp_path / "o.parquet"), "--model",
                                   str(folder), "--sae", str(sae), "--layer", "1"])
    assert out.exit_code == 1 and "pytorch_model.bin" in out.output and "never reads" in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and not ran.exists()
