"""The CLI: exit codes, one-line errors, clean stdout, and the installed package."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from commands.app import app
from tests import sae_files

runner = CliRunner()


def identity_sae(folder: Path, d_in: int, layer: int = 1) -> Path:
    """relu(x) - relu(-x) = x: an SAE that reconstructs perfectly (FVU 0, L0 = d_in)."""
    folder.mkdir(parents=True)
    eye = torch.eye(d_in)
    save_file({"W_enc": torch.cat([eye, -eye], 1).contiguous(), "b_enc": torch.zeros(2 * d_in),
               "W_dec": torch.cat([eye, -eye], 0).contiguous(), "b_dec": torch.zeros(d_in)},
              str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": 2 * d_in,
                                                 "metadata": {"hook_name": f"blocks.{layer}.hook_resid_post"}}))
    return folder


def test_embed_then_info(llama_dir, corpus_file, tmp_path):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["embed", str(corpus_file), "-o", str(out), "--model", str(llama_dir),
                                 "--sae", str(sae), "--cache-dir", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["docs"] == 8 and summary["path"] == str(out)
    quiet = runner.invoke(app, ["embed", str(corpus_file), "-o", str(out), "--model", str(llama_dir),
                                "--sae", str(sae), "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == "", "stdout stays clean for pipes"
    info = runner.invoke(app, ["info", str(out), "--json"])
    facts = json.loads(info.stdout)
    assert facts["documents"] == 8 and facts["d_sae"] == 96 and facts["layer"] == 1
    assert 0 < facts["mean_latents_per_doc"] <= 96 and facts["bytes_per_doc"] > 0


def test_bad_input_is_one_red_line_with_file_and_line(llama_dir, tmp_path):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    result = runner.invoke(app, ["embed", str(bad), "-o", str(tmp_path / "o.parquet"), "--model", str(llama_dir),
                                 "--sae", str(sae)])
    assert result.exit_code == 1
    assert f"{bad}:line 2: malformed JSON" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o.parquet").exists()
    skipped = runner.invoke(app, ["embed", str(bad), "-o", str(tmp_path / "o.parquet"), "--model", str(llama_dir),
                                  "--sae", str(sae), "--skip-invalid", "--cache-dir", str(tmp_path / "c")])
    assert skipped.exit_code == 0 and "skipped" in skipped.stderr and "line 2" in skipped.stderr


def test_mismatched_sae_is_refused(bert_dir, corpus_file, tmp_path):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    result = runner.invoke(app, ["embed", str(corpus_file), "-o", str(tmp_path / "o.parquet"), "--model",
                                 str(bert_dir), "--sae", str(sae)])
    assert result.exit_code == 1 and "hidden size 32" in result.stderr


def test_check_passes_a_faithful_sae_and_flags_a_wrong_one(llama_dir, tmp_path):
    good = runner.invoke(app, ["check", "--model", str(llama_dir), "--sae", str(identity_sae(tmp_path / "id", 64)),
                               "--json"])
    assert good.exit_code == 0, good.output
    report = json.loads(good.stdout)
    assert report["fvu"] < 1e-4 and report["ok"] and report["n_tokens"] > 100
    assert 0 < report["l0"] <= 64
    wrong, _ = sae_files.saelens(tmp_path / "rand", 64, arch="topk", layer=1, k=8)
    bad = runner.invoke(app, ["check", "--model", str(llama_dir), "--sae", str(wrong), "--json"])
    assert bad.exit_code == 1
    assert any("FVU" in w for w in json.loads(bad.stdout)["warnings"])


def test_help_does_not_import_torch():
    code = "import sys, commands.app; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "embed" in result.stdout


def test_wheel_ships_both_packages_and_data(tmp_path):
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True)
    names = zipfile.ZipFile(next(tmp_path.glob("saeembed-*.whl"))).namelist()
    assert "commands/app.py" in names and "saeembed/embedding/kernel.py" in names
    assert "saeembed/report/templates/diff.html" in names  # the HTML reports' templates
    assert "saeembed/data/check_sample.txt" in names and "saeembed/py.typed" in names  # typed for users
    assert {"saeembed/data/default-sae/sae_weights.safetensors", "saeembed/data/default-sae/labels.parquet",
            "saeembed/data/default-sae/cfg.json", "saeembed/data/default-sae/MODEL_CARD.md"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "saeembed = commands.app:main" in zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()


@pytest.mark.parametrize("args", [["embed", "x.jsonl", "-o", "o.parquet", "--model", "m", "--sae", "s",
                                   "--pool", "median"]])
def test_bad_options_are_refused_naming_the_option(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "EmbedConfig.pooling (--pool) = 'median' is not allowed" in result.output


def test_check_reads_any_corpus_format_and_reports_a_missing_one(llama_dir, corpus_file, tmp_path):
    sae = str(identity_sae(tmp_path / "id", 64))
    result = runner.invoke(app, ["check", str(corpus_file), "--model", str(llama_dir), "--sae", sae, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["n_tokens"] > 50, result.output
    missing = runner.invoke(app, ["check", str(tmp_path / "nope.txt"), "--model", str(llama_dir), "--sae", sae])
    assert missing.exit_code == 1 and "input file not found" in missing.stderr and "Traceback" not in missing.output


def test_a_corrupt_store_is_one_line(llama_dir, corpus_file, tmp_path):
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    out = tmp_path / "s.parquet"
    assert runner.invoke(app, ["embed", str(corpus_file), "-o", str(out), "--model", str(llama_dir), "--sae",
                               str(sae), "--cache-dir", str(tmp_path / "c"), "-q"]).exit_code == 0
    data = bytearray(out.read_bytes())
    data[8:2008] = bytes(2000)  # keep the footer (metadata readable), break the row data
    out.write_bytes(bytes(data))
    shown = runner.invoke(app, ["labels", "show", str(out), "0"])
    assert shown.exit_code == 1 and "cannot read the store" in shown.stderr


def _commands(group, prefix=()):
    """Every command path of the CLI, subcommands included."""
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, command in click_group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_help_page_renders():
    """A help text once crashed on rich markup (`org/repo[/subfolder]`)."""
    paths = list(_commands(app))
    assert {("embed",), ("diff",), ("labels", "show"), ("risk", "fit")} <= set(paths)
    for path in paths:
        out = CliRunner().invoke(app, [*path, "--help"])
        assert out.exit_code == 0 and "Usage" in out.output, (path, out.output[-300:])


def test_version():
    from saeembed import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"saeembed {__version__}"


def test_diff_names_corpora_apart_when_their_file_stems_repeat():
    from commands.diff import _names

    assert _names(["a/tweets.jsonl", "b/tweets.jsonl", "c/news.jsonl"]) == ["a/tweets.jsonl", "b/tweets.jsonl", "news"]


def test_help_lists_every_command_in_whole_sentences():
    """Click cuts a docstring's first sentence at 45 characters or at a full stop ("Train a TopK SAE (Gao
    et al."): every command's summary is written out whole."""
    runner = CliRunner()
    for group in ([], ["labels"], ["risk"]):
        out = runner.invoke(app, [*group, "--help"], terminal_width=200)
        commands = out.stdout.split("Commands:")[1]
        assert "..." not in commands and "et al." not in commands, commands


def test_a_corpus_given_where_a_store_goes_is_named_not_a_store(tmp_path):
    corpus = tmp_path / "tweets.jsonl"
    corpus.write_text('{"text": "a tweet"}\n')
    runner = CliRunner()
    for args in (["info", str(corpus)], ["labels", "show", str(corpus), "3"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 1 and "is not a store" in out.output, out.output
        assert f"saeembed embed {corpus} -o tweets.parquet" in " ".join(out.output.split())


def test_library_warnings_do_not_reach_the_screen(capfd):
    """sklearn's "Graph is not fully connected" and the like are for developers; the CLI keeps them off
    the user's screen (its notes say what matters)."""
    import warnings

    from commands.ui import no_traceback

    with no_traceback():
        warnings.warn("Graph is not fully connected, spectral embedding may not work as expected.", UserWarning,
                      stacklevel=1)
    assert "not fully connected" not in capfd.readouterr().err


def test_info_refuses_what_the_analyses_refuse(tmp_path):
    """A folder mixing parts of two SAEs, or a store with a value that is not finite, made `info` exit 0
    while every analysis refused it; --no-check reads only the metadata and counts, and says so."""
    import numpy as np

    from saeembed.synthetic import fake_meta, vectors_from_columns, write_store

    rng = np.random.default_rng(0)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, fingerprint in enumerate(("sae-one", "sae-two")):
        vectors = vectors_from_columns(20, [np.arange(0, 20, 2)] * 3, rng)
        write_store(folder / f"part-{i:05d}.parquet", vectors,
                    {"id": [f"{i}-{j}" for j in range(20)]}, fake_meta(3, fingerprint))
    nan = vectors_from_columns(20, [np.arange(0, 20, 2)] * 3, rng)
    nan.values[3] = np.nan
    write_store(tmp_path / "nan.parquet", nan, d_sae=3)
    runner = CliRunner()
    for store in (folder, tmp_path / "nan.parquet"):
        out = runner.invoke(app, ["info", str(store)])
        assert out.exit_code == 1 and out.output.startswith("error:"), out.output
    out = runner.invoke(app, ["info", str(tmp_path / "nan.parquet"), "--no-check", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["checked"] is False


def test_outputs_of_the_wrong_kind_are_refused_before_work(tmp_path):
    """`embed -o out.txt` wrote Parquet into a .txt and `--html x.pdf` wrote HTML into a .pdf."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a document"}\n')
    runner = CliRunner()
    out = runner.invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "out.txt")])
    assert out.exit_code == 1 and "must end .parquet" in out.output and not (tmp_path / "out.txt").exists()
    out = runner.invoke(app, ["diff", str(corpus), str(corpus), "--html", str(tmp_path / "x.pdf")])
    assert out.exit_code == 1 and "must end .html or .htm" in out.output and not (tmp_path / "x.pdf").exists()


def test_the_references_are_current():
    """docs/cli.md and docs/api.md are written from the app and the docstrings (`python -m commands.reference`):
    a command, an option or a public name changed without regenerating them fails here."""
    from commands.reference import api_reference, reference

    docs = Path(__file__).resolve().parents[1] / "docs"
    for name, text in (("cli.md", reference()), ("api.md", api_reference())):
        assert (docs / name).read_text(encoding="utf-8") == text, \
            f"docs/{name} is stale: run `python -m commands.reference`"
