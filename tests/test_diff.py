"""Dataset diff on stores whose differences are planted, and on splits where there is none."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.errors import SaeEmbedError, StoreError
from saeembed.labels import Labels
from tests.fake_stores import fake_meta, planted_store, vectors_from_columns, write_store

D = 60
NO_LABELS = Labels(D, {}, {}, {})


def rates(**planted: float) -> np.ndarray:
    """0.1 for every latent, except the planted ones (`l3=0.5`)."""
    out = np.full(D, 0.1)
    for key, value in planted.items():
        out[int(key[1:])] = value
    return out


@pytest.fixture
def a_b(tmp_path):
    a = planted_store(tmp_path / "a.parquet", 600, rates(l3=0.5, l7=0.02), seed=1)
    b = planted_store(tmp_path / "b.parquet", 500, rates(l3=0.2, l7=0.25), seed=2)
    return a, b


def test_planted_differences_are_found_with_their_direction_and_nothing_else(a_b):
    result = diff(*a_b, labels=NO_LABELS)
    findings = result.findings
    assert set(findings["latent"]) == {3, 7}
    row3 = findings.filter(pl.col("latent") == 3).row(0, named=True)
    assert row3["diff"] > 0 and row3["ci_low"] <= 0.3 <= row3["ci_high"] and row3["q"] < 1e-10
    assert row3["freq_a"] == pytest.approx(row3["count_a"] / 600)
    assert findings.filter(pl.col("latent") == 7)["diff"][0] < 0
    assert result.n_tested == D and result.sizes == (600, 500)
    assert findings.columns[:11] == ["latent", "label", "freq_a", "freq_b", "diff", "rel_diff", "ci_low", "ci_high",
                                     "p", "q", "significant"]


def test_examples_show_the_latent_on_the_side_that_has_more_of_it(a_b):
    a, b = a_b
    row = diff(a, b, labels=NO_LABELS).findings.filter(pl.col("latent") == 7).row(0, named=True)
    with_row = b.frame["id"].to_list().index(row["example_with_id"])  # latent 7 is more frequent in B
    assert 7 in b.matrix[with_row].indices and "<<" in row["example_with"]
    without_row = a.frame["id"].to_list().index(row["example_without_id"])
    assert 7 not in a.matrix[without_row].indices


def test_a_random_split_of_one_corpus_has_no_finding(tmp_path):
    whole = planted_store(tmp_path / "one.parquet", 2000, np.linspace(0.005, 0.6, D), seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        rows = rng.permutation(2000)
        assert not len(diff(whole.take(rows[:1000]), whole.take(rows[1000:]), labels=NO_LABELS).findings)


def test_take_keeps_peaks_aligned_with_the_rows(a_b):
    a = a_b[0]
    part = a.take([7, 3, 3])
    for k, row in enumerate([7, 3, 3]):
        here, there = slice(a.matrix.indptr[row], a.matrix.indptr[row + 1]), slice(*part.matrix.indptr[k:k + 2])
        assert (a.matrix.indices[here] == part.matrix.indices[there]).all()
        assert (a.peak_start[here] == part.peak_start[there]).all() and (a.peak_end[here] == part.peak_end[there]).all()
    assert part.frame["id"].to_list() == ["7", "3", "3"] and a.take([]).n_docs == 0


def test_paired_diff_uses_mcnemar_and_shows_the_same_items_partner(tmp_path):
    rng = np.random.default_rng(4)
    n = 400
    base = [np.sort(rng.choice(n, 40, replace=False)) for _ in range(D)]
    extra = np.setdiff1d(np.arange(n), base[5])[:60]  # A fires latent 5 on 60 more items than B
    cols_a = [np.union1d(c, extra) if j == 5 else c for j, c in enumerate(base)]
    keys = {"prompt_id": [f"p{i}" for i in range(n)]}
    write_store(tmp_path / "a.parquet", vectors_from_columns(n, cols_a, rng), keys, fake_meta(D))
    order = rng.permutation(n)  # B's rows in another order: pairing must go by the key
    cols_b = [np.sort(np.argsort(order)[c]) for c in base]
    write_store(tmp_path / "b.parquet", vectors_from_columns(n, cols_b, rng),
                {"prompt_id": [f"p{i}" for i in order]}, fake_meta(D))
    from saeembed.store import load_store
    a, b = load_store(tmp_path / "a.parquet"), load_store(tmp_path / "b.parquet")
    result = diff(a, b, DiffConfig(pair_on="prompt_id"), labels=NO_LABELS)
    assert result.findings["latent"].to_list() == [5]
    row = result.findings.row(0, named=True)
    assert row["test"] == "mcnemar" and row["diff"] == pytest.approx(60 / n)
    partner_key = b.frame["prompt_id"][b.frame["id"].to_list().index(row["example_without_id"])]
    assert partner_key == a.frame["prompt_id"][a.frame["id"].to_list().index(row["example_with_id"])]
    unpaired = diff(a, b, labels=NO_LABELS).table.filter(pl.col("latent") == 5)["p"][0]
    assert row["p"] < unpaired, "pairing removes the between-item variance"


def test_holdout_replicates_a_real_difference(a_b):
    result = diff(*a_b, DiffConfig(holdout=0.5), labels=NO_LABELS)
    assert result.discovery_sizes == (300, 250)
    assert result.replication_rate == 1.0
    assert result.findings["replicated"].all() and result.findings["q_holdout"].max() <= 0.05
    assert result.table.filter(~pl.col("significant"))["q_holdout"].null_count() == len(result.table) - 2


def test_vs_many_needs_a_difference_from_every_other_corpus(tmp_path):
    target = planted_store(tmp_path / "t.parquet", 500, rates(l1=0.5, l2=0.5), seed=5)
    m1 = planted_store(tmp_path / "m1.parquet", 500, rates(l1=0.1, l2=0.1), seed=6)
    m2 = planted_store(tmp_path / "m2.parquet", 500, rates(l1=0.2, l2=0.5), seed=7)
    result = diff(target, [m1, m2], labels=NO_LABELS)
    assert result.findings["latent"].to_list() == [1]
    row = result.findings.row(0, named=True)
    assert row["vs"] == "m2" and row["freq_b"] == pytest.approx(row["count_b"] / 500), "compared with the nearest"
    assert result.table.filter(pl.col("latent") == 2)["q"][0] > 0.05, "same rate as m2: not distinctive"


def test_mean_measure_uses_welch(a_b):
    result = diff(*a_b, DiffConfig(measure="mean", min_diff=0.1), labels=NO_LABELS)
    assert {3, 7} <= set(result.findings["latent"]) and set(result.findings["test"]) == {"welch"}


def test_adjust_length_separates_length_from_a_real_difference(tmp_path):
    """Latent 1 fires more in longer documents, whoever wrote them; latent 2 is A's, at any length.
    A's documents are mostly long, so unadjusted both differ; within bands of length only latent 2."""
    rng = np.random.default_rng(8)
    paths = []
    for name, n, long_share, rate2 in (("a", 800, 0.8, 0.4), ("b", 800, 0.2, 0.1)):
        tokens = np.where(rng.random(n) < long_share, rng.integers(200, 400, n), rng.integers(10, 50, n))
        rate1 = np.where(tokens > 100, 0.7, 0.2)
        columns = [np.flatnonzero(rng.random(n) < 0.1) for _ in range(D)]
        columns[1] = np.flatnonzero(rng.random(n) < rate1)
        columns[2] = np.flatnonzero(rng.random(n) < rate2)
        vectors = vectors_from_columns(n, columns, rng)
        vectors.n_tokens = tokens.astype(np.int32)
        paths.append(write_store(tmp_path / f"{name}.parquet", vectors, meta=fake_meta(D)))
    from saeembed.store import load_store
    a, b = (load_store(p) for p in paths)
    assert {1, 2} <= set(diff(a, b, labels=NO_LABELS).findings["latent"])
    adjusted = diff(a, b, DiffConfig(length_bands=10), labels=NO_LABELS)
    assert adjusted.findings["latent"].to_list() == [2] and adjusted.findings["test"][0] == "cmh"
    assert adjusted.findings["ci_low"][0] <= 0.3 <= adjusted.findings["ci_high"][0]
    with pytest.raises(SaeEmbedError, match="--adjust-length"):
        DiffConfig(length_bands=5, pair_on="id")


def test_refuses_stores_from_different_saes(tmp_path):
    a = planted_store(tmp_path / "a.parquet", 50, rates(), seed=1)
    b = planted_store(tmp_path / "b.parquet", 50, rates(), seed=2, sae={"fingerprint": "other"})
    with pytest.raises(StoreError, match="sae.fingerprint"):
        diff(a, b)


def test_pairing_errors_name_the_column_and_the_repeated_key(tmp_path):
    a = planted_store(tmp_path / "a.parquet", 4, rates(), fields={"k": ["x", "y", "y", "z"]})
    b = planted_store(tmp_path / "b.parquet", 4, rates(), fields={"k": ["x", "y", "w", "z"]})
    with pytest.raises(SaeEmbedError, match="no column 'prompt_id'.*fields are: k, id"):
        diff(a, b, DiffConfig(pair_on="prompt_id"))
    with pytest.raises(SaeEmbedError, match="k 'y' appears on 2 rows"):
        diff(a, b, DiffConfig(pair_on="k"))


def test_config_rejects_bad_settings():
    with pytest.raises(SaeEmbedError, match="holdout"):
        DiffConfig(holdout=1.5)
    with pytest.raises(SaeEmbedError, match="frequency or mean"):
        DiffConfig(measure="median")


def test_cli_json_lines_file_output_and_people_output(a_b, tmp_path):
    runner = CliRunner()
    a, b = (str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"))
    out = runner.invoke(app, ["diff", a, b, "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["latent"] for r in rows} == {3, 7}
    assert {"latent", "label", "freq_a", "freq_b", "diff", "ci_low", "ci_high", "p", "q"} <= set(rows[0])
    out = runner.invoke(app, ["diff", a, b, "--holdout", "0.5", "-o", str(tmp_path / "d.csv"), "--all"])
    assert out.exit_code == 0, out.output
    assert "findings replicate" in out.stdout and "more in a" in out.stdout and "more in b" in out.stdout
    table = pl.read_csv(tmp_path / "d.csv")
    assert len(table) == D and "replicated" in table.columns
    out = runner.invoke(app, ["diff", a])
    assert out.exit_code == 1 and "give two corpora" in out.output


def test_cli_diffs_raw_corpora_with_the_offline_default(tmp_path):
    """Corpus files are embedded on the fly (default preset: MiniLM + the shipped SAE) and cached."""
    for name, texts in (("a", ["What a great day, I love it!", "Wow, amazing, thanks so much!"] * 6),
                        ("b", ["The meeting is at 10 am.", "The report is attached below."] * 6)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{t} ({i})"}) + "\n"
                                                        for i, t in enumerate(texts)))
    args = ["diff", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--json", "--min-diff", "0.5",
            "--cache-dir", str(tmp_path / "cache")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(abs(r["diff"]) >= 0.5 and r["q"] <= 0.05 for r in rows)
    assert any(r["label"] for r in rows), "the shipped labels name the latents"
    assert list((tmp_path / "cache").iterdir()), "vectors were cached for the next analysis"
