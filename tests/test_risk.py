"""Risk probes on planted stores: a latent and the concept counts carry the label; probes round-trip;
length and surface-form baselines catch a label that answer shape gives away."""

import json
import random

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import RiskConfig
from saeembed.analysis.evaluation import _auroc, _average_precision
from saeembed.analysis.risk import Baseline, Probe, _folds, fit_risk, labels_of, score_risk
from saeembed.analysis.scramble import scramble_text
from saeembed.analysis.surface import SURFACE_FEATURES, surface_frame
from saeembed.errors import ProbeError, SaeEmbedError, StoreError
from saeembed.labels import Labels
from saeembed.store import COUNT_STATS, load_store
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store
from tests.conftest import summary_and_rows

D, N = 40, 400
LABELS = Labels(D, {3: "made-up facts", 7: "citations"}, {}, {})


def risky_store(path, seed=0, signal=True, hallucinated=None, **meta):
    """Half the documents are hallucinated: latent 3 fires mostly there, latent 7 mostly elsewhere, and
    their tokens carry more active latents (the concept counts)."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 2 == 0
    columns = random_columns(N, np.full(D, 0.2), rng)
    if signal:
        columns[3] = np.flatnonzero(rng.random(N) < np.where(y, 0.7, 0.1))
        columns[7] = np.flatnonzero(rng.random(N) < np.where(y, 0.1, 0.6))
    vectors = vectors_from_columns(N, columns, rng)
    mean = rng.normal(20, 2, N) + (4 * y if signal else 0)
    vectors.concept_counts = np.column_stack([mean, mean + 10, mean - 5, mean, mean + 5]).astype(np.float32)
    fields = {"hallucinated": hallucinated if hallucinated is not None else ["yes" if v else "no" for v in y],
              "question_id": [str(i // 2) for i in range(N)]}
    write_store(path, vectors, fields, fake_meta(D, **meta))
    return load_store(path)


WORDS = "river city report found the old new blue council said market three".split()


def shaped_store(path, shape_gives_it_away, seed=0):
    """Half the documents are hallucinated. With `shape_gives_it_away` exactly those end with '.' (as
    HaluEval's hallucinated answers tend to) and no latent knows; otherwise latent 3 fires mostly on them
    and endings and lengths are drawn independently of the label."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 2 == 0
    columns = random_columns(N, np.full(D, 0.2), rng)
    if not shape_gives_it_away:
        columns[3] = np.flatnonzero(rng.random(N) < np.where(y, 0.9, 0.05))
    ends = np.where(y, ".", "") if shape_gives_it_away else rng.choice([".", "", "?"], N)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 15))).capitalize() + end for end in ends]
    vectors = vectors_from_columns(N, columns, rng, text_length=min(len(t) for t in texts))  # peaks in the text
    mean = rng.normal(20, 2, N)
    vectors.concept_counts = np.column_stack([mean, mean + 10, mean - 5, mean, mean + 5]).astype(np.float32)
    fields = {"hallucinated": ["yes" if v else "no" for v in y], "question_id": [str(i // 2) for i in range(N)],
              "text": texts}
    write_store(path, vectors, fields, fake_meta(D))
    return load_store(path)


def test_surface_baseline_catches_a_label_given_away_by_the_final_punctuation(tmp_path):
    store = shaped_store(tmp_path / "s.parquet", shape_gives_it_away=True)
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=200), group="question_id", labels=LABELS)
    scores = {row.features: row for row in report.baselines}
    assert scores["surface form"].auroc > 0.98 and abs(report.probe_score.auroc - 0.5) < 0.15
    assert report.verdict.baseline == "surface form" and not report.verdict.beaten
    assert report.verdict.gain_high < 0, "the probe is worse than the answer's shape"
    chance, shape = report.warnings[:2]
    assert chance.startswith("the probe does no better than chance") and report.table["warning"][0] == chance
    assert shape == report.verdict.warning and "surface form baseline" in shape and "answer shape, not truth" in shape
    row = report.table.filter(pl.col("features") == "surface form").row(0, named=True)
    assert row["role"] == "baseline" and row["beaten"] is False and row["warning"] == shape
    assert not any("length only" in w for w in report.warnings), "a baseline at chance is no reason to warn"


def test_probe_reading_a_latent_beats_every_baseline_without_warning(tmp_path):
    store = shaped_store(tmp_path / "s.parquet", shape_gives_it_away=False)
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=200), group="question_id", labels=LABELS)
    names = [row.features for row in report.baselines]
    assert names == ["length only", "surface form", "concept counts only"]
    assert report.probe_score.auroc > 0.8 and all(row.auroc < 0.65 for row in report.baselines)
    assert all(c.beaten and c.gain_low > 0 and c.warning is None for c in report.comparisons)
    assert report.warnings == [] and report.verdict.beaten
    assert report.verdict.baseline_auroc == max(row.auroc for row in report.baselines)
    assert report.table["features"].to_list() == ["sae probe (l1)", *names]
    assert report.table["warning"].null_count() == len(report.table)


def test_surface_features_read_the_shape_of_the_text():
    texts = pl.Series(["Hello world.", "  ", "Why? ", "- a\n- b\n1. c", "ÉCOLE 12!", "x)", None])
    frame = surface_frame(texts, np.arange(7))
    assert tuple(frame.columns) == SURFACE_FEATURES and frame.shape == (7, len(SURFACE_FEATURES))
    endings = ["end_period", "end_question", "end_exclamation", "end_other_punct", "end_alnum", "end_none"]
    assert [endings[i] for i in frame.select(endings).to_numpy().argmax(1)] == [
        "end_period", "end_none", "end_question", "end_alnum", "end_exclamation", "end_other_punct", "end_none"]
    assert frame.select(endings).to_numpy().sum(1).tolist() == [1] * 7
    row = {name: frame[name].to_list() for name in frame.columns}
    assert row["log_list_markers"][3] == pytest.approx(np.log(4)) and row["log_newlines"][3] == pytest.approx(np.log(3))
    assert row["upper_share"][4] == 1.0 and row["has_digits"][4] == 1.0 and row["starts_upper"][:3] == [1, 0, 1]
    assert row["log_words"][0] == pytest.approx(np.log(3)) and row["mean_word_length"][0] == 5.5
    assert row["log_sentences"][3] == pytest.approx(np.log1p(2)), "'1. ' ends one, the unterminated tail is one"


def test_fast_auroc_and_average_precision_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    scores = np.column_stack([rng.normal(size=300), rng.integers(0, 4, 300)])  # the second has many ties
    for j in range(2):
        assert _auroc(y, scores)[j] == pytest.approx(roc_auc_score(y, scores[:, j]))
        assert _average_precision(y, scores[:, j]) == pytest.approx(average_precision_score(y, scores[:, j]))


def test_probe_finds_the_planted_concepts_and_beats_the_counts(tmp_path):
    store = risky_store(tmp_path / "s.parquet")
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=100), group="question_id", labels=LABELS)
    table = {row["features"]: row for row in report.table.iter_rows(named=True)}
    sae, counts = table["sae probe (l1)"], table["concept counts only"]
    assert sae["auroc"] > 0.85 and counts["auroc"] > 0.75, "both signals are planted"
    assert sae["auroc_low"] < sae["auroc"] < sae["auroc_high"] and sae["base_rate"] == 0.5
    top = report.top_concepts.head(2)
    assert set(top["latent"]) == {3, 7} and top.filter(pl.col("latent") == 3)["weight"][0] > 0
    assert top.filter(pl.col("latent") == 3)["label"][0] == "made-up facts"
    assert any("dense baseline is left out" in note for note in report.notes)


def test_null_labels_give_chance_auroc(tmp_path):
    store = risky_store(tmp_path / "s.parquet", signal=False)
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=100), labels=LABELS)
    sae = report.table.row(0, named=True)
    assert sae["auroc_low"] < 0.5 < sae["auroc_high"] or abs(sae["auroc"] - 0.5) < 0.08
    if sae["auroc_low"] <= 0.5:
        assert report.warnings[0].startswith("the probe does no better than chance") and sae["warning"]


def test_grouped_folds_never_split_a_question(tmp_path):
    store = risky_store(tmp_path / "s.parquet")
    y = labels_of(store, "hallucinated")
    groups = store.frame["question_id"].to_numpy()
    for train, test in _folds(y, groups, RiskConfig()):
        assert not set(groups[train]) & set(groups[test])


@pytest.mark.parametrize("model", ["l1", "pls"])
def test_saved_probe_scores_like_the_fitted_one_and_refuses_other_stores(tmp_path, model):
    store = risky_store(tmp_path / "s.parquet")
    report = fit_risk(store, "hallucinated", RiskConfig(model=model, bootstrap=20), labels=LABELS)
    folder = report.probe.save(tmp_path / "probe")
    assert sorted(p.name for p in folder.iterdir()) == ["probe.json", "probe.safetensors"]
    loaded = Probe.load(folder)
    risk = loaded.predict(store)
    assert np.allclose(risk, report.probe.predict(store)) and ((risk >= 0) & (risk <= 1)).all()
    y = labels_of(store, "hallucinated")
    assert risk[y].mean() > risk[~y].mean() + 0.2
    if model == "l1":  # the saved linear form is exactly sklearn's logistic regression
        from saeembed.analysis.risk import _fit

        fitted = _fit("l1", loaded.features(store), y, RiskConfig())
        # a refit of the iterative solver stops within its tolerance: two fits differ by up to ~1e-3 (seen on a
        # loaded machine); a wrong linear form would differ by far more
        assert np.allclose(risk, fitted.predict_proba(loaded.features(store))[:, 1], atol=1e-2)
    other = risky_store(tmp_path / "o.parquet", sae={"fingerprint": "another-sae"})
    with pytest.raises(StoreError, match="sae.fingerprint"):
        loaded.predict(other)


def _saved_probe(folder, **changes):
    """A probe over latents 3 and 7 of a D-wide SAE, saved to `folder` (fields replaced by `changes`)."""
    meta = {"store": {key: fake_meta(D)[key] for key in ("model", "sae", "pooling", "pool_roles")}}
    fields = dict(kind="l1", latents=np.array([3, 7]), weights=np.linspace(-1, 1, 8), intercept=0.1,
                  count_mean=np.full(6, 20.0), count_std=np.ones(6), link=(1.0, 0.0), meta=meta)
    return Probe(**{**fields, **changes}).save(folder)


def _probe_refusal(folder) -> str:
    with pytest.raises(ProbeError) as caught:
        Probe.load(folder)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_saved_probe_round_trips(tmp_path):
    folder = _saved_probe(tmp_path / "probe")
    loaded = Probe.load(folder)
    assert loaded.latents.tolist() == [3, 7] and np.allclose(loaded.weights, np.linspace(-1, 1, 8))
    assert loaded.link == (1.0, 0.0) and loaded.kind == "l1" and loaded.meta["store"]["sae"]["d_sae"] == D


@pytest.mark.parametrize("array,value,expected", [
    ("weights", np.ones(5), "weights has shape [5]; expected [8] (2 latents + 6 count features)"),
    ("weights", np.ones((8, 1)), "weights has shape [8, 1]; expected [8]"),
    ("count_mean", np.ones(5), "count_mean has shape [5]; expected [6]"),
    ("latents", np.array([3.0, 7.0]), "latents has dtype float64; expected integers"),
    ("latents", np.array([3, D]), f"latents holds 3..{D}, outside 0..{D - 1} (meta.store.sae.d_sae = {D}"),
    ("weights", np.array([np.nan] * 8), "weights holds 8 non-finite values (NaN or inf); a probe with them "
                                        "scores every document NaN"),
    ("count_std", np.array([1, 1, 0, 1, 1, 1.0]), "count_std holds a value below 1e-12"),
    ("weights", np.full(8, 1e300), "weights holds values beyond ±1e+12"),
])
def test_probe_weights_of_the_wrong_shape_dtype_or_value_are_refused(tmp_path, array, value, expected):
    """A probe of the wrong shape used to fail with a traceback when scoring; NaN weights scored every document
    NaN."""
    folder = _saved_probe(tmp_path / "probe")
    weights = folder / "probe.safetensors"
    from safetensors.numpy import load_file, save_file

    save_file({**load_file(str(weights)), array: value}, str(weights))
    message = _probe_refusal(folder)
    assert message.startswith(f"{weights}: {expected}") and "saeembed risk fit" in message, message


@pytest.mark.parametrize("content,expected", [
    (b"{not json", "probe.json is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    (b"[]", "probe.json holds a JSON list, not an object"),
    (b"\xff\xfe", "probe.json is not UTF-8 text"),
    (b'{"kind": "l1"}', "probe.json: intercept is missing; expected a number"),
    (b'{"kind": "svm"}', "probe.json: kind is 'svm'; expected one of l1, pls"),
    (b'{"kind": "l1", "intercept": NaN}', "probe.json: intercept is nan; expected a number between"),
    (b'{"kind": "l1", "intercept": 0, "link": [1]}', "probe.json: link is [1]; expected a list of 2 numbers"),
    (b'{"kind": "l1", "intercept": 0, "link": [1, 0], "meta": {"store": {}}}',
     "probe.json: meta.store.sae.d_sae is missing; expected the width of the SAE it was fitted on"),
])
def test_a_corrupt_probe_json_is_refused_naming_the_field(tmp_path, content, expected):
    folder = _saved_probe(tmp_path / "probe")
    (folder / "probe.json").write_bytes(content)
    message = _probe_refusal(folder)
    assert message.startswith(f"{folder}/{expected}") and "saeembed risk fit" in message, message


def test_a_truncated_probe_weights_file_is_refused(tmp_path):
    folder = _saved_probe(tmp_path / "probe")
    weights = folder / "probe.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    message = _probe_refusal(folder)
    assert message.startswith(f"cannot read {weights} (") and "truncated or damaged" in message, message
    (folder / "probe.json").unlink()
    assert "is not a probe folder (needs probe.json and probe.safetensors)" in _probe_refusal(folder)


def test_probe_files_of_two_saves_are_not_read_as_one_probe(tmp_path):
    """probe.json names the SHA-256 of the weights it was saved with: a save stopped between its two files,
    or files of two saves put together, is refused; a probe saved before the checksum still loads."""
    first, second = _saved_probe(tmp_path / "a"), _saved_probe(tmp_path / "b")
    head = json.loads((second / "probe.json").read_text())
    assert len(head["weights_sha256"]) == 64
    (second / "probe.json").write_text(json.dumps({**head, "intercept": 5.0}))  # same weights: still one probe
    assert Probe.load(second).intercept == 5.0
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(first / "probe.safetensors"))
    save_file({**arrays, "weights": arrays["weights"] * 2}, str(first / "probe.safetensors"))  # same shapes
    message = _probe_refusal(first)
    assert message.startswith(f"{first / 'probe.safetensors'} is not the file probe.json was saved with") \
        and "saeembed risk fit" in message, message
    (first / "probe.json").write_text(json.dumps({**head, "weights_sha256": "x"}))
    assert "weights_sha256 is 'x'; expected the SHA-256" in _probe_refusal(first)
    del head["weights_sha256"]
    (first / "probe.json").write_text(json.dumps(head))
    assert np.allclose(Probe.load(first).weights, arrays["weights"] * 2), "older probes have no checksum"


@pytest.mark.parametrize("field,value,expected", [
    ("mean", [1, 2], "mean is [1, 2]; expected a list of 6 numbers"),
    ("std", [1, 1, 1, 1, 1, 0], "std is [1, 1, 1, 1, ...]; expected standard deviations >= 1e-12"),
    ("names", ["a"], "names is ['a']; expected the count features concepts_mean"),
    ("meta", {}, "meta.store is missing; expected a JSON object"),
])
def test_a_corrupt_baseline_is_refused_naming_the_field(tmp_path, field, value, expected):
    store = risky_store(tmp_path / "s.parquet")
    folder = Baseline.fit(store).save(tmp_path / "baseline")
    head = json.loads((folder / "baseline.json").read_text())
    (folder / "baseline.json").write_text(json.dumps({**head, field: value}))
    with pytest.raises(ProbeError) as caught:
        Baseline.load(folder)
    assert str(caught.value).startswith(f"{folder / 'baseline.json'}: {expected}"), str(caught.value)


def test_scores_name_the_concepts_that_pushed_risk_up_and_baseline_z_scores(tmp_path):
    store = risky_store(tmp_path / "s.parquet")
    probe = fit_risk(store, "hallucinated", RiskConfig(bootstrap=20), labels=LABELS).probe
    trusted = risky_store(tmp_path / "t.parquet", seed=1, signal=False)
    baseline = Baseline.fit(trusted)
    baseline = Baseline.load(baseline.save(tmp_path / "baseline"))
    scored = score_risk(store, probe, baseline, labels=LABELS)
    riskiest = scored.sort("risk", descending=True).row(0, named=True)
    assert riskiest["pushed_up_by"].startswith("3 made-up facts")
    y = labels_of(store, "hallucinated")
    z = scored["z_risk"].to_numpy()
    assert z[y].mean() > z[~y].mean() + 0.5, "hallucinated documents carry more concepts per token"
    assert {f"z_{name}" for name in COUNT_STATS} <= set(scored.columns)


def test_a_baseline_of_documents_with_the_same_counts_is_refused(tmp_path):
    """A document-level SAE (the offline default) gives every document k latents and no per-token codes:
    every z-score was 0.000. The baseline says why instead."""
    from saeembed.synthetic import fake_meta, vectors_from_columns, write_store

    n = 50
    vectors = vectors_from_columns(n, [np.arange(n)] * 3 + [np.zeros(0, np.int64)] * 5, np.random.default_rng(0))
    store = load_store(write_store(tmp_path / "doc.parquet", vectors, meta=fake_meta(8, sae={"reads": "document"})))
    with pytest.raises(ProbeError, match="every document has the same concept counts"):
        Baseline.fit(store)


def test_too_few_examples_for_the_folds_is_a_sentence_not_a_traceback(tmp_path):
    store = risky_store(tmp_path / "s.parquet")
    y = labels_of(store, "hallucinated")
    with pytest.raises(SaeEmbedError, match="lower --folds"):
        _folds(y, np.array(["q1", "q2"] * (N // 2)), RiskConfig(folds=5))


def test_label_errors():
    class Fake:
        path = "s.parquet"
        frame = pl.DataFrame({"single": ["yes", "yes"], "correct": [True, False], "text": ["a", "b"]})

    with pytest.raises(SaeEmbedError, match="no column 'missing'"):
        labels_of(Fake(), "missing")
    with pytest.raises(SaeEmbedError, match="single class.*--positive"):
        labels_of(Fake(), "single")
    assert labels_of(Fake(), "correct", positive="false").tolist() == [False, True]


def test_scramble_keeps_the_words_and_moves_the_requested_share():
    text = " ".join(f"w{i}" for i in range(60))
    assert scramble_text(text, 0.0) == text
    for level in (0.25, 0.5, 1.0):
        out = scramble_text(text, level, n=3, rng=random.Random(1))
        assert sorted(out.split()) == sorted(text.split())
        moved = sum(a != b for a, b in zip(out.split()[::3], text.split()[::3]))
        assert moved <= round(level * 20) and (moved > 0)


def test_cli_fit_score_baseline(tmp_path):
    risky_store(tmp_path / "s.parquet")
    runner = CliRunner()
    out = runner.invoke(app, ["risk", "fit", str(tmp_path / "s.parquet"), "--label", "hallucinated",
                              "--group", "question_id", "-o", str(tmp_path / "probe"), "--bootstrap", "20"])
    assert out.exit_code == 0, out.output
    assert "AUROC" in out.stdout and "concept counts only" in out.stdout
    assert "length only" in out.stdout and "surface form" in out.stdout and "probe gain" in out.stdout
    printed = " ".join(out.stdout.split())  # rich wraps at 80 columns
    assert "beats the best baseline" in printed and "warning:" not in printed
    report = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert [r["features"] for r in report["rows"]][1:3] == ["length only", "surface form"]
    assert report["verdict"]["beaten"] and report["warnings"] == []
    out = runner.invoke(app, ["risk", "score", str(tmp_path / "s.parquet"), "--probe", str(tmp_path / "probe"),
                              "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == N and all(0 <= r["risk"] <= 1 for r in rows)
    out = runner.invoke(app, ["risk", "score", str(tmp_path / "s.parquet")])
    assert out.exit_code == 1 and "--probe" in out.output
    out = runner.invoke(app, ["risk", "score", str(tmp_path / "s.parquet"), "--probe", str(tmp_path)])
    assert out.exit_code == 1 and "not a probe folder" in out.output


def test_cli_fit_warns_when_the_probe_does_not_beat_the_surface_form(tmp_path):
    shaped_store(tmp_path / "s.parquet", shape_gives_it_away=True)
    args = ["risk", "fit", str(tmp_path / "s.parquet"), "--label", "hallucinated", "--group", "question_id",
            "-o", str(tmp_path / "probe"), "--bootstrap", "50"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    printed = " ".join(out.stdout.split())  # rich wraps at 80 columns
    assert "warning: the probe does no better than chance" in printed
    assert "warning: the probe is worse than the surface form baseline (AUROC 1.000" in printed
    assert "answer shape, not truth" in printed and "[-" in printed, "intervals survive the markup"
    out = CliRunner().invoke(app, [*args, "--json"])
    summary, rows = summary_and_rows(out.stdout)
    assert summary["beaten"] is False and summary["warnings"][1] == rows[2]["warning"]
    surface = next(r for r in rows if r["features"] == "surface form")
    assert surface["beaten"] is False and "answer shape" in surface["warning"] and rows[0]["role"] == "probe"
    saved = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert saved["warnings"][1] == surface["warning"] == saved["verdict"]["warning"]


def test_cli_scramble_with_the_offline_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    texts = ["The council approved the new budget for schools and roads after a long debate on Monday.",
             "Researchers found that the new battery design doubles the range of small electric cars."]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = CliRunner().invoke(app, ["risk", "scramble", str(tmp_path / "c.jsonl"), "--levels", "0,1", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["level"] for r in rows] == [0.0, 1.0] and all(r["docs"] == 2 and r["active_latents"] > 0 for r in rows)
    assert rows[0]["overlap"] == 1.0 and rows[1]["overlap"] < 1.0, "scrambling changes which concepts fire"
    out = CliRunner().invoke(app, ["risk", "scramble", str(tmp_path / "c.jsonl"), "--levels", "0,1",
                                   "--plot", str(tmp_path / "s.png"), "-q"])
    assert out.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0


def test_missing_labels_are_refused_or_left_out_with_a_count(tmp_path):
    """35 of 240 null labels were counted as 'no' ("240 documents, 103 positive"): refused, naming the first;
    skip_unlabelled / --skip-invalid leaves them out and says how many."""
    labels = ["yes" if row % 2 == 0 else "no" for row in range(N)]
    for row in range(5, N, 7):
        labels[row] = None
    nulls = risky_store(tmp_path / "nulls.parquet", hallucinated=labels)
    missing = sum(v is None for v in labels)
    with pytest.raises(SaeEmbedError, match=rf"{missing} of {N} documents have no 'hallucinated' \(the first: row 5"):
        fit_risk(nulls, "hallucinated", RiskConfig(bootstrap=20), labels=LABELS)
    report = fit_risk(nulls, "hallucinated", RiskConfig(bootstrap=20), labels=LABELS, skip_unlabelled=True)
    assert report.n_docs == N - missing and len(report.rows) == N - missing
    assert any(f"{missing} of {N} documents have no 'hallucinated': left out" in note for note in report.notes)
    out = CliRunner().invoke(app, ["risk", "fit", str(nulls.path), "--label", "hallucinated", "-o",
                                   str(tmp_path / "p"), "--bootstrap", "20"])
    assert out.exit_code == 1 and "a missing label is not a 'no'" in out.output
    out = CliRunner().invoke(app, ["risk", "fit", str(nulls.path), "--label", "hallucinated", "-o",
                                   str(tmp_path / "p"), "--bootstrap", "20", "--skip-invalid"])
    assert out.exit_code == 0 and "left out" in out.output, out.output
