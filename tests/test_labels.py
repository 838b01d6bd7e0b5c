"""Label store, importers, the offline labeler and `labels show`."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from commands.app import app
from saeembed.labels import (
    ROLE_MARKERS,
    LabelError,
    Labels,
    import_labels,
    offline_labels,
    save_labels,
    strip_role_markers,
)
from saeembed.spans import marked_context
from saeembed.store import DocVectors, Store
from saeembed.synthetic import fake_meta, write_store


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
    with pytest.raises(LabelError, match=r"latents \[3\] outside 0..2 \(first at .*batch-0.jsonl.gz line 3\): "
                                         r"these labels are for another SAE"):
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
    labels = offline_labels(synthetic_store(), holdout=0)
    assert labels.label[0].startswith("«def» opening the text · "), "the peak token, and where it stands"
    assert {"python", "code", "function"} & set(labels.label[0].split(" · "))
    assert labels.label[1].startswith("«football» · ")
    assert {"striker", "league", "goal", "scored"} & set(labels.label[1].split(" · "))
    assert labels.score[0] is None and labels.source[0] == "offline", "no held-out documents, no score"
    assert 3 not in labels.label, "a latent that never fires gets no label"
    assert " · " not in labels.label[2], "a latent on every document has no contrastive keyword"
    assert offline_labels(synthetic_store()).score[0] is None, "24 documents hold out too few positives to score"


def planted_store(texts: list[str], fires: dict[int, list[tuple[int, str | None]]], d_sae: int,
                  seed: int = 0) -> Store:
    """A store whose latent j fires on the documents in fires[j], each (row, word it peaks on; None:
    a random 3-character span), with random activations."""
    rng = np.random.default_rng(seed)
    entries = []  # (row, latent, start, end)
    for latent, docs in fires.items():
        for row, word in docs:
            if word is None:
                start = int(rng.integers(0, max(len(texts[row]) - 3, 1)))
                entries.append((row, latent, start, start + 3))
            else:
                start = texts[row].index(word)
                entries.append((row, latent, start, start + len(word)))
    entries.sort()
    rows, cols, starts, ends = (np.array(column) for column in zip(*entries))
    matrix = sp.csr_matrix((rng.uniform(0.5, 3.0, len(rows)).astype(np.float32), (rows, cols)),
                           shape=(len(texts), d_sae))
    frame = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
    return Store(None, matrix, frame, fake_meta(d_sae), starts.astype(np.int32), ends.astype(np.int32))


FILLER = ("river mountain garden window letter market engine silver winter bridge candle forest "
          "harbor ladder pepper rocket saddle tunnel velvet whistle anchor basket cactus dragon "
          "feather glacier hammer island jacket kettle lantern magnet needle orchard pillow quarry").split()


def filler(rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(rng.choice(FILLER, n, replace=False))


def chat_store() -> Store:
    """Half the documents are chat transcripts (hh-rlhf style, ChatML, Llama [INST]) about cooking,
    half are news about volcanoes. Latent 0 fires on the hh-rlhf transcripts peaking on `Human`, 1 on
    the ChatML ones peaking on `<|im_start|>`, 2 on the [INST] ones peaking on `[INST]`, 3 on every
    transcript peaking on `Assistant` or `user`, 4 on the news peaking on `volcano`."""
    rng = np.random.default_rng(1)
    texts, fires = [], {i: [] for i in range(5)}
    for i in range(300):
        topic = f"recipe soup oven {filler(rng, 3)}"
        kind = i % 4
        if kind == 0:
            texts.append(f"Human: how do I make a {topic}?\n\nAssistant: Begin with the broth, then the oven.")
            fires[0].append((i, "Human"))
            fires[3].append((i, "Assistant"))
        elif kind == 1:
            texts.append(f"<|im_start|>user\nA {topic} please<|im_end|>\n<|im_start|>assistant\nSure, soup."
                         f"<|im_end|>")
            fires[1].append((i, "<|im_start|>"))
            fires[3].append((i, "user"))
        elif kind == 2:
            texts.append(f"<s>[INST] <<SYS>> be kind <</SYS>> a {topic} [/INST] Use the oven. </s>")
            fires[2].append((i, "[INST]"))
            fires[3].append((i, "[INST]"))
        else:
            texts.append(f"The volcano erupted near the {filler(rng)} and lava reached the coast.")
            fires[4].append((i, "volcano"))
    return planted_store(texts, fires, 6)


def label_words(label: str) -> set[str]:
    return {w for part in label.split(" · ") for w in re.findall(r"[a-z_]+", part.lower())}


def test_role_markers_and_template_tokens_never_label_a_latent():
    labels = offline_labels(chat_store())
    for latent, text in labels.label.items():
        assert not label_words(text) & ROLE_MARKERS, (latent, text)
        assert not label_words(text) & {"start", "end", "sys", "im"}, ("template pieces", latent, text)
    assert "broth" in label_words(labels.label[0]), "what the transcripts say still labels them"
    assert labels.label[4].startswith("«volcano» · ")


def test_role_marker_stripping():
    chat = ("Human: Is it raining?\n\nAssistant: Yes, in London.\n### User: and tomorrow?\n"
            "  **System:** be brief\nASSISTANT:sunny")
    assert strip_role_markers(chat) == "Is it raining?\n\nYes, in London.\nand tomorrow?\nbe brief\nsunny"
    assert strip_role_markers("the user: a person; Human: rights\nhuman rights") == \
        "the user: a person; Human: rights\nhuman rights", "only prefixes at line starts go"


def topic_store(n: int = 600) -> Store:
    """Random filler documents; a fifth mention `volcano` (latent 0 fires exactly there, peaking on
    it, a tenth of them also `obsidian`); latents 1-10 fire on a random fifth of the documents."""
    rng = np.random.default_rng(2)
    texts, fires = [], {i: [] for i in range(11)}
    for i in range(n):
        volcano = i % 5 == 0
        extra = " obsidian" if volcano and i % 50 == 0 else ""
        texts.append(f"{filler(rng)} volcano{extra} {filler(rng)}" if volcano else filler(rng, 12))
        if volcano:
            fires[0].append((i, "volcano"))
    for latent in range(1, 11):
        fires[latent] = [(int(r), None) for r in rng.choice(n, n // 5, replace=False)]
    return planted_store(texts, fires, 11)


def test_held_out_score_separates_a_real_concept_from_noise():
    store = topic_store()
    labels = offline_labels(store, holdout=0.3, seed=0)
    assert labels.label[0].startswith("«volcano»") and labels.score[0] > 0.8
    noise = [labels.score[i] for i in range(1, 11)]
    assert all(s is not None for s in noise) and abs(np.mean(noise) - 0.5) < 0.1, noise
    assert offline_labels(store, holdout=0.3, seed=0).score == labels.score, "seeded: the same split again"
    assert all(s is None for s in offline_labels(store, holdout=0).score.values())
    with pytest.raises(LabelError, match="holdout"):
        offline_labels(store, holdout=1.0)


def test_keywords_need_support_in_the_top_documents():
    store = topic_store()
    assert "obsidian" in offline_labels(store, min_support=0).label[0], "rare but distinctive"
    assert "obsidian" not in offline_labels(store).label[0], "in a tenth of the top documents: unsupported"


def test_cli_show_and_generate_report_the_quality(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    store = topic_store()
    path = tmp_path / "topics.parquet"
    matrix = store.matrix
    write_store(path, DocVectors(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data,
                                 store.peak_start, store.peak_end, np.full(store.n_docs, 12, np.int32)),
                {"text": store.frame["text"].to_list()}, store.meta)
    runner = CliRunner()
    generated = runner.invoke(app, ["labels", "generate", str(path)])
    assert generated.exit_code == 0, generated.output
    assert "quality (held-out detection accuracy, 0.5 = chance) of 11 of 11 labels: mean" in generated.stderr
    assert "below 0.75" in generated.stderr
    shown = runner.invoke(app, ["labels", "show", str(path), "0"])
    assert shown.exit_code == 0, shown.output
    assert "held-out detection accuracy, 0.5 = chance" in shown.stdout and "quality " in shown.stdout
    save_labels(Labels(11, {1: "[weird] label"}, {1: "import:x.csv"}, {1: 0.5}), store.meta["sae"]["fingerprint"])
    shown = runner.invoke(app, ["labels", "show", str(path), "1"])
    assert "[weird] label" in shown.stdout and "quality 0.50: held-out detection accuracy, 0.5 = chance" in shown.stdout
    assert "may mislead" in shown.stdout


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
    shown = runner.invoke(app, ["labels", "show", str(out), str(busiest), "--json"])
    report = json.loads(shown.stdout)
    assert report["latent"] == busiest and report["documents"] > 0 and report["label"]
    assert "<<" in report["top"][0]["context"] and ">>" in report["top"][0]["context"]
    missing = runner.invoke(app, ["labels", "show", str(out), "999"])
    assert missing.exit_code == 1 and "0..95" in missing.stderr
    (tmp_path / "labels.csv").write_text(f"latent,label\n{busiest},imported label\n")
    assert runner.invoke(app, ["labels", "import", str(tmp_path / "labels.csv"), "--store", str(out)]).exit_code == 0
    again = runner.invoke(app, ["labels", "show", str(out), str(busiest), "--json"])
    assert json.loads(again.stdout)["label"] == "imported label"


# -- bad label files: one LabelError line naming the file, the line or key, and the field -----------

def refused_labels(path, *fragments, d_sae=8):
    with pytest.raises(LabelError) as caught:
        import_labels(path, d_sae)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_truncated_or_damaged_gzip_batches(tmp_path):
    rows = "".join(json.dumps({"index": str(i), "description": f"label {i} " * 20}) + "\n" for i in range(200))
    whole = gzip.compress(rows.encode())
    path = tmp_path / "batch.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    refused_labels(path, "the compressed file ends early", "truncated", "download or copy it again", d_sae=200)
    path.write_bytes(b"not gzip at all")
    refused_labels(path, "damaged gzip data")
    path.write_bytes(whole[:20] + bytes(b ^ 0x5A for b in whole[20:60]) + whole[60:])
    refused_labels(path, str(path), d_sae=200)
    path.write_bytes(whole)
    assert len(import_labels(path, 200)[0].label) == 200


def test_rows_that_are_not_labels(tmp_path):
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text('{"index": 0, "description": "ok"}\n[1, "a list"]\n')
    refused_labels(jsonl, "l.jsonl line 2: a JSON list, not an object with index and description")
    jsonl.write_text('{"index": 0, "description": "ok"}\n\n{"index": 1, "description": "ok" \n')
    refused_labels(jsonl, "line 3: not JSON")
    jsonl.write_text('{"description": "no index"}\n')
    refused_labels(jsonl, "line 1: no index field")
    for index in ('"1.5"', "1.5", "true", '"seven"', '"1e3"', "[1]", "null"):
        jsonl.write_text(f'{{"index": {index}, "description": "x"}}\n')
        refused_labels(jsonl, "line 1: index", "is not a latent id (a whole number)")
    for description, kind in (("{}", "object"), ("3", "number"), ('["a"]', "list"), ("false", "boolean")):
        jsonl.write_text(f'{{"index": 1, "description": {description}}}\n')
        refused_labels(jsonl, f"line 1: description is a JSON {kind}, not text")
    jsonl.write_bytes(b'{"index": 0, "description": "caf\xc3\xa9"}\n{"index": 1, "description": "caf\xe9"}\n')
    refused_labels(jsonl, "line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8")
    jsonl.write_text('{"index": "-1", "description": "x"}\n')
    refused_labels(jsonl, "latents [-1] outside 0..7 (first at", "line 1)")

    csv_file = tmp_path / "l.csv"
    csv_file.write_text("latent,label\n1,fine\n2\n")
    refused_labels(csv_file, "l.csv line 3: 1 field where the header has 2 (latent,label)")
    csv_file.write_text("latent,label\n1,sports, games\n")
    refused_labels(csv_file, "line 2: 3 fields where the header has 2", "double quotes")
    csv_file.write_text("latent,label\n1,fine\nx,bad\n")
    refused_labels(csv_file, "line 3: latent 'x' is not a latent id")
    csv_file.write_text("id,text\n1,fine\n")
    refused_labels(csv_file, "needs a first line naming the columns latent,label (found id,text)")
    csv_file.write_bytes(b"latent,label\n1,ok\n2,\xff\xfe\n")
    refused_labels(csv_file, "line 3: not UTF-8 text (byte 0xff)")
    csv_file.write_bytes("\ufefflatent,label\n1,\"a, quoted\"\n\n2,\n".encode())  # Excel's BOM, a blank line
    labels, notes = import_labels(csv_file, 8)
    assert labels.label == {1: "a, quoted"} and "1 entries without a label (null, empty or missing) skipped" in notes

    json_file = tmp_path / "l.json"
    json_file.write_text('{"1": "fine", "2": null, "3": ""}')
    labels, notes = import_labels(json_file, 8)
    assert labels.label == {1: "fine"} and notes[-1] == "2 entries without a label (null, empty or missing) skipped"
    json_file.write_text('{"1": "first", "01": "same latent", "1": "repeated key"}')  # json.loads kept the last
    labels, notes = import_labels(json_file, 8)
    assert labels.label == {1: "first"} and "2 further explanations of already-labelled latents ignored" in notes
    json_file.write_text('{"1": {"text": "nested"}}')
    refused_labels(json_file, 'l.json key "1": the label is a JSON object, not text')
    json_file.write_text('{"one": "x"}')
    refused_labels(json_file, "key \"one\": the key 'one' is not a latent id")
    json_file.write_text('{"1": "x",\n "2": }')
    refused_labels(json_file, "l.json line 2: not JSON")
    json_file.write_text("[" * 100_000)
    refused_labels(json_file, "not JSON")
    refused_labels(tmp_path / "missing.csv", "no such file or folder")
    (tmp_path / "l.txt").write_text("1,x")
    refused_labels(tmp_path / "l.txt", "unknown label file")


def test_a_damaged_label_store_is_one_line(tmp_path):
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(LabelError, match="not a readable label store .*; delete it and import or generate"):
        Labels.load(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"latent": [1], "text": ["x"]}), path)
    with pytest.raises(LabelError, match="not a label store \\(no label column"):
        Labels.load(path)


def test_cli_import_says_what_is_wrong_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    store = write_store(tmp_path / "s.parquet", DocVectors.empty(2), meta=fake_meta(8))
    batch = tmp_path / "batch.jsonl.gz"
    batch.write_bytes(gzip.compress(b'{"index": 1, "description": "x"}\n' * 50)[:-12])
    result = CliRunner().invoke(app, ["labels", "import", str(batch), "--store", str(store)])
    assert result.exit_code == 1 and "Aborted" not in result.output
    assert result.stderr.count("\n") == 1 and "ends early" in result.stderr and str(batch) in result.stderr
    batch.write_bytes(gzip.compress(b'{"index": 1, "description": "x"}\n{"index": 2, "description": null}\n'))
    result = CliRunner().invoke(app, ["labels", "import", str(batch), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "1 entries without a label (null, empty or missing) skipped" in result.stderr
