"""Label store, importers, the offline labeler and `labels show`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from commands.app import app
from saeembed.labels import LabelError, Labels, import_labels, marked_context, offline_labels
from saeembed.store import Store


def test_neuronpedia_batches_json_and_csv(tmp_path):
    batch = tmp_path / "np"
    batch.mkdir()
    rows = [{"index": "0", "description": "python code", "explanationModelName": "gpt-4o"},
            {"index": "0", "description": "a second opinion", "explanationModelName": "claude"},
            {"index": "3", "description": " sports scores ", "typeName": "oai_token-act-pair"}]
    with gzip.open(batch / "batch-0.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    labels, notes = import_labels(batch, d_sae=8)
    assert labels.label == {0: "python code", 3: "sports scores"}
    assert notes == ["2 of 8 latents labelled (6 unlabelled)",
                     "1 further explanations of already-labelled latents ignored"]
    (tmp_path / "l.json").write_text(json.dumps({"1": "greetings"}))
    assert import_labels(tmp_path / "l.json", 8)[0].label == {1: "greetings"}
    (tmp_path / "l.csv").write_text("latent,label\n2,dates\n")
    assert import_labels(tmp_path / "l.csv", 8)[0].label == {2: "dates"}
    with pytest.raises(LabelError, match=r"latents \[3\] outside 0..2: these labels are for another SAE"):
        import_labels(batch, d_sae=3)
    labels.save(tmp_path / "saved.parquet")
    again = Labels.load(tmp_path / "saved.parquet")
    assert again.label == labels.label and again.d_sae == 8 and again.unlabelled() == [1, 2, 4, 5, 6, 7]


def synthetic_store() -> Store:
    """Latent 0 fires on code documents (peaking on 'def'), latent 1 on football ones, 2 on all."""
    code = [f"def handler_{i}(event): return python code for the function number {i}" for i in range(12)]
    sport = [f"the striker scored a football goal in match {i} and the league table moved" for i in range(12)]
    texts = code + sport
    rows, cols, vals, starts, ends = [], [], [], [], []
    for r, text in enumerate(texts):
        latent = 0 if r < 12 else 1
        word = "def" if latent == 0 else "football"
        at = text.index(word)
        for c, (s, e) in ((latent, (at, at + len(word))), (2, (0, 3))):
            rows.append(r)
            cols.append(c)
            vals.append(1.0 + r / 100)
            starts.append(s)
            ends.append(e)
    order = np.lexsort((cols, rows))
    matrix = sp.csr_matrix((np.array(vals)[order], (np.array(rows)[order], np.array(cols)[order])), shape=(24, 4))
    frame = pl.DataFrame({"id": [str(i) for i in range(24)], "text": texts})
    return Store(None, matrix, frame, {"sae": {"fingerprint": "x", "d_sae": 4}},
                 np.array(starts)[order], np.array(ends)[order])


def test_offline_labels_name_the_peak_token_and_contrastive_keywords():
    labels = offline_labels(synthetic_store())
    assert labels.label[0].startswith("def · ") and {"python", "code", "function"} & set(labels.label[0].split(" · "))
    assert labels.label[1].startswith("football · ")
    assert {"striker", "league", "goal", "scored"} & set(labels.label[1].split(" · "))
    assert labels.score[0] == 1.0 and labels.source[0] == "offline"
    assert 3 not in labels.label, "a latent that never fires gets no label"
    assert "python" not in labels.label[2], "a latent on every document has no contrastive keyword"


def test_marked_context():
    assert marked_context("I just love waiting in line", (7, 11), width=5) == "…just <<love>> wait…"


def test_cli_generate_then_show(llama_dir, corpus_file, tmp_path, monkeypatch):
    from tests import sae_files

    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    sae, _ = sae_files.saelens(tmp_path / "sae", 64, arch="topk", layer=1)
    out = tmp_path / "s.parquet"
    runner = CliRunner()
    assert runner.invoke(app, ["embed", str(corpus_file), "-o", str(out), "--model", str(llama_dir),
                               "--sae", str(sae), "-q"]).exit_code == 0
    generated = runner.invoke(app, ["labels", "generate", str(out), "--min-docs", "1"])
    assert generated.exit_code == 0, generated.output
    from saeembed import load_store

    busiest = int(np.argmax(np.asarray((load_store(out).matrix > 0).sum(0)).ravel()))
    shown = runner.invoke(app, ["labels", "show", str(busiest), "--store", str(out), "--json"])
    report = json.loads(shown.stdout)
    assert report["latent"] == busiest and report["documents"] > 0 and report["label"]
    assert "<<" in report["top"][0]["context"] and ">>" in report["top"][0]["context"]
    missing = runner.invoke(app, ["labels", "show", "999", "--store", str(out)])
    assert missing.exit_code == 1 and "0..95" in missing.stderr
    (tmp_path / "labels.csv").write_text(f"latent,label\n{busiest},imported label\n")
    assert runner.invoke(app, ["labels", "import", str(tmp_path / "labels.csv"), "--store", str(out)]).exit_code == 0
    again = runner.invoke(app, ["labels", "show", str(busiest), "--store", str(out), "--json"])
    assert json.loads(again.stdout)["label"] == "imported label"
