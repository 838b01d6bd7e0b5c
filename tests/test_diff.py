"""Dataset diff on stores whose differences are planted, and on splits where there is none."""

import dataclasses
import html
import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis import stats
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.errors import SaeEmbedError, StoreError
from saeembed.labels import Labels
from saeembed.store import load_store
from saeembed.synthetic import fake_meta, logit_store, planted_store, vectors_from_columns, write_store

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


def test_paired_diff_at_equal_lengths_matches_mcnemar_and_shows_the_same_items_partner(tmp_path):
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
    # every document has 12 tokens: conditioning on the length ratio changes nothing
    assert row["test"] == "conditional logistic" and row["diff"] == pytest.approx(60 / n, rel=0.03)
    plain = diff(a, b, DiffConfig(pair_on="prompt_id", length="ignore"), labels=NO_LABELS).findings.row(0, named=True)
    assert plain["test"] == "mcnemar" and plain["diff"] == pytest.approx(60 / n)
    assert row["p"] == pytest.approx(plain["p"], rel=0.5) and row["ci_low"] == pytest.approx(plain["ci_low"], abs=0.02)
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
    assert result.replication.startswith("discovered on 300, 250 documents; ")
    # each layer is its own family: its own rate; a layer with nothing found is not said to have nothing
    only_form = dataclasses.replace(result, replication_rate=None, form_replication_rate=0.75)
    assert only_form.replication.endswith("75% of the form findings replicate on the 50% held out")
    layers = dataclasses.replace(result, form_replication_rate=0.5, style_replication_rate=0.9)
    assert layers.replication.endswith("held out: form 50%, style 90%, content 100%")
    nothing = dataclasses.replace(result, replication_rate=None, form_replication_rate=None)
    assert nothing.replication.endswith("nothing to replicate")


def test_vs_many_needs_a_difference_from_every_other_corpus(tmp_path):
    target = planted_store(tmp_path / "t.parquet", 500, rates(l1=0.5, l2=0.5), seed=5)
    m1 = planted_store(tmp_path / "m1.parquet", 500, rates(l1=0.1, l2=0.1), seed=6)
    m2 = planted_store(tmp_path / "m2.parquet", 500, rates(l1=0.2, l2=0.5), seed=7)
    result = diff(target, [m1, m2], labels=NO_LABELS)
    assert result.findings["latent"].to_list() == [1]
    row = result.findings.row(0, named=True)
    assert result.themes["more_in"].to_list() == ["t"]
    assert row["vs"] == "m2" and row["freq_b"] == pytest.approx(row["count_b"] / 500), "compared with the nearest"
    assert result.table.filter(pl.col("latent") == 2)["q"][0] > 0.05, "same rate as m2: not distinctive"


def test_mean_measure_uses_welch(a_b):
    result = diff(*a_b, DiffConfig(measure="mean", min_diff=0.1), labels=NO_LABELS)
    assert {3, 7} <= set(result.findings["latent"]) and set(result.findings["test"]) == {"welch, log length"}
    plain = diff(*a_b, DiffConfig(measure="mean", min_diff=0.1, length="ignore"), labels=NO_LABELS)
    assert set(plain.findings["test"]) == {"welch"} and set(plain.findings["latent"]) == set(result.findings["latent"])


def test_length_bands_separate_length_from_a_real_difference(tmp_path):
    """Latent 1 fires more in longer documents, whoever wrote them; latent 2 is A's, at any length.
    A's documents are mostly long, so with length ignored both differ; at equal length only latent 2."""
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
    assert {1, 2} <= set(diff(a, b, DiffConfig(length="ignore"), labels=NO_LABELS).findings["latent"])
    adjusted = diff(a, b, labels=NO_LABELS)
    assert adjusted.findings["latent"].to_list() == [2] and adjusted.findings["test"][0] == "cmh"
    assert adjusted.findings["ci_low"][0] <= 0.3 <= adjusted.findings["ci_high"][0]
    assert "a are" in adjusted.length.sentence and "longer than in b" in adjusted.length.sentence


def test_lengths_that_do_not_overlap_compare_nothing_instead_of_something_degenerate(tmp_path):
    """A's documents are 10-20 tokens, B's 100-200: no band holds both, so no latent can be compared
    at equal length; latent 3 (planted) must not be a finding with a zero-width interval."""
    rng = np.random.default_rng(9)
    logits = np.full((300, D), -2.0)
    a = logit_store(tmp_path / "a.parquet", rng.integers(10, 21, 300), logits + 3.0 * (np.arange(D) == 3), seed=1)
    b = logit_store(tmp_path / "b.parquet", rng.integers(100, 201, 300), logits, seed=2)
    result = diff(a, b, labels=NO_LABELS)
    assert not len(result.findings) and result.length.comparable == 0
    assert (result.table["ci_low"] == -1).all() and (result.table["p"] == 1).all()
    assert 3 in diff(a, b, DiffConfig(length="ignore"), labels=NO_LABELS).findings["latent"].to_list()
    # one band shared by a single document of each corpus: a finite, wide interval, not certainty
    low, high, p, d = stats.mantel_haenszel(np.array([[1], [5]]), np.array([[1], [9]]), np.array([[0], [0]]),
                                            np.array([[1], [0]]))
    assert d[0] == 1 and high[0] - low[0] > 0.5 and p[0] == 1


def _length_driven(n: int, tokens: np.ndarray, rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    """Logits of D latents rising with log length: every latent fires more in a longer document."""
    intercept = rng.uniform(-2.5, 0.0, D) if base is None else base
    slope = np.linspace(0.8, 2.0, D)
    return intercept + slope * (np.log(tokens)[:, None] - np.log(60))


@pytest.fixture
def long_b(tmp_path):
    """Unpaired: B's documents are twice as long; latents depend on length only."""
    rng = np.random.default_rng(10)
    base = rng.uniform(-2.5, 0.0, D)
    ta, tb = (np.maximum(rng.lognormal(np.log(m), 0.5, 700), 3).astype(int) for m in (40, 80))
    a = logit_store(tmp_path / "a.parquet", ta, _length_driven(700, ta, rng, base), seed=11)
    b = logit_store(tmp_path / "b.parquet", tb, _length_driven(700, tb, rng, base), seed=12)
    return a, b


def test_length_alone_is_the_length_gap_not_a_flood_of_findings(long_b):
    adjusted = diff(*long_b, labels=NO_LABELS)
    ignored = diff(*long_b, DiffConfig(length="ignore"), labels=NO_LABELS)
    assert len(adjusted.findings) == 0
    assert len(ignored.findings) >= 30 and (ignored.findings["diff"] < 0).all(), "all 'more in the longer corpus'"
    gap = adjusted.length
    assert gap.ratio == pytest.approx(0.5, abs=0.1) and gap.p < 1e-9 and gap.test == "Mann-Whitney"
    assert gap.sentence.startswith("documents in b are 2") and "longer than in a" in gap.sentence
    mean_adjusted = diff(*long_b, DiffConfig(measure="mean", min_diff=0.1), labels=NO_LABELS)
    mean_ignored = diff(*long_b, DiffConfig(measure="mean", min_diff=0.1, length="ignore"), labels=NO_LABELS)
    assert len(mean_adjusted.findings) == 0 and len(mean_ignored.findings) >= 20


def _pairs(tmp_path, ratio: float, planted: float, seed: int):
    """Paired stores: item i has a base length and an item effect shared by both corpora; B's
    documents are `ratio` times longer (with noise); latent 3 gets `planted` more logit in A."""
    rng = np.random.default_rng(seed)
    n = 700
    length, item = rng.lognormal(np.log(50), 0.6, n), rng.normal(0, 1, n)[:, None]
    ta = np.maximum(length * rng.lognormal(0, 0.3, n), 3).astype(int)
    tb = np.maximum(ratio * length * rng.lognormal(0, 0.3, n), 3).astype(int)
    base = rng.uniform(-2.5, 0.0, D)
    keys = {"prompt_id": [f"p{i}" for i in range(n)]}
    a = logit_store(tmp_path / "a.parquet", ta, _length_driven(n, ta, rng, base) + item + planted * (np.arange(D) == 3),
                    seed=seed + 1, fields=keys)
    b = logit_store(tmp_path / "b.parquet", tb, _length_driven(n, tb, rng, base) + item, seed=seed + 2, fields=keys)
    return a, b


def test_paired_length_alone_gives_no_finding_and_many_when_ignored(tmp_path):
    a, b = _pairs(tmp_path, ratio=2.0, planted=0.0, seed=20)
    adjusted = diff(a, b, DiffConfig(pair_on="prompt_id"), labels=NO_LABELS)
    ignored = diff(a, b, DiffConfig(pair_on="prompt_id", length="ignore"), labels=NO_LABELS)
    assert len(adjusted.findings) == 0
    assert len(ignored.findings) >= 30 and (ignored.findings["diff"] < 0).all()
    assert adjusted.length.test == "Wilcoxon signed-rank" and adjusted.length.ratio == pytest.approx(0.5, abs=0.05)
    assert adjusted.length.sentence.startswith("documents in b are") and "longer than in a" in adjusted.length.sentence
    mean_adjusted = diff(a, b, DiffConfig(pair_on="prompt_id", measure="mean", min_diff=0.1), labels=NO_LABELS)
    assert len(mean_adjusted.findings) == 0


def test_pairs_far_from_equal_length_say_the_comparison_extrapolates(tmp_path):
    """Every B document twice as long: few pairs are of similar length, and the result says so (with
    what to do); pairs of similar lengths do not get the note."""
    far = diff(*_pairs(tmp_path, ratio=2.0, planted=0.0, seed=20), DiffConfig(pair_on="prompt_id"), labels=NO_LABELS)
    ta, tb = far.n_tokens
    assert far.length.comparable == pytest.approx(np.mean(np.maximum(ta, tb) <= 1.25 * np.minimum(ta, tb)))
    assert far.length.comparable < 0.25
    share = f"{far.length.comparable:.0%}"
    assert far.notes[0].startswith(f"only {share} of the pairs are of similar length (within 1.25x)")
    assert "--length ignore" in far.notes[0]
    near = diff(*_pairs(tmp_path, ratio=1.0, planted=0.0, seed=21), DiffConfig(pair_on="prompt_id"), labels=NO_LABELS)
    assert near.length.comparable > 0.25 and not any("pairs are of similar length" in n for n in near.notes)
    ignored = diff(*_pairs(tmp_path, ratio=2.0, planted=0.0, seed=20), DiffConfig(pair_on="prompt_id", length="ignore"),
                   labels=NO_LABELS)
    assert ignored.notes[0].startswith("length ignored: with max pooling")


def test_the_length_ignored_note_fits_a_document_level_sae(tmp_path):
    rng = np.random.default_rng(3)
    meta = fake_meta(D, sae={"reads": "document"})
    stores = []
    for name, tokens in (("a", rng.integers(10, 30, 300)), ("b", rng.integers(60, 90, 300))):
        vectors = vectors_from_columns(300, [np.sort(rng.choice(300, 30, replace=False)) for _ in range(D)], rng)
        vectors.n_tokens = tokens.astype(np.int32)
        stores.append(load_store(write_store(tmp_path / f"{name}.parquet", vectors, meta=meta)))
    result = diff(*stores, DiffConfig(length="ignore"), labels=NO_LABELS)
    assert result.document_sae and result.notes[0].startswith("length ignored: the documents are compared as they are")
    assert "max pooling" not in result.notes[0]


@pytest.mark.parametrize("pair_on", [None, "prompt_id"])
def test_a_real_difference_at_equal_length_is_found_either_way_and_nearly_the_same(tmp_path, pair_on):
    a, b = _pairs(tmp_path, ratio=1.0, planted=1.5, seed=30)
    adjusted = diff(a, b, DiffConfig(pair_on=pair_on), labels=NO_LABELS)
    ignored = diff(a, b, DiffConfig(pair_on=pair_on, length="ignore"), labels=NO_LABELS)
    assert adjusted.findings["latent"].to_list() == ignored.findings["latent"].to_list() == [3]
    assert adjusted.findings["diff"][0] == pytest.approx(ignored.findings["diff"][0], abs=0.03)
    assert not adjusted.length.differs and "similar length" in adjusted.length.sentence


@pytest.mark.parametrize("pair_on", [None, "prompt_id"])
def test_a_real_difference_survives_the_length_adjustment(tmp_path, pair_on):
    a, b = _pairs(tmp_path, ratio=2.0, planted=1.5, seed=40)
    adjusted = diff(a, b, DiffConfig(pair_on=pair_on), labels=NO_LABELS)
    assert adjusted.findings["latent"].to_list() == [3] and adjusted.findings["diff"][0] > 0.1
    assert len(diff(a, b, DiffConfig(pair_on=pair_on, length="ignore"), labels=NO_LABELS).findings) > 10


def test_holdout_replicates_with_the_same_length_adjusted_test(tmp_path):
    a, b = _pairs(tmp_path, ratio=2.0, planted=1.5, seed=50)
    result = diff(a, b, DiffConfig(pair_on="prompt_id", holdout=0.5), labels=NO_LABELS)
    assert result.findings["latent"].to_list() == [3] and result.replication_rate == 1.0


def test_conditional_logistic_is_mcnemar_when_every_pair_has_the_same_length():
    from scipy import stats as sps

    ones, total = np.array([[22.0], [12.0]]), np.array([[30.0], [12.0]])  # latent 1: every discordant pair is A's
    b0, se, p = stats.conditional_logistic(ones, total, np.zeros(1))
    assert p[0] == pytest.approx(sps.chi2.sf((abs(22 - 8) - 1) ** 2 / 30, 1))
    assert np.isfinite(b0).all() and np.isfinite(se).all() and b0[0] == pytest.approx(np.log(22.5 / 8.5), rel=1e-3)


def test_themes_group_latents_that_fire_together(tmp_path):
    """Latents 3 and 4 fire on the same documents (one concept split over two latents), more in A;
    latent 7 is more in B on its own: two themes, the first holding both of A's latents."""
    rng = np.random.default_rng(12)
    paths = []
    for name, n, shared_rate, rate7 in (("a", 600, 0.5, 0.05), ("b", 600, 0.1, 0.3)):
        columns = [np.flatnonzero(rng.random(n) < 0.1) for _ in range(D)]
        columns[3] = np.flatnonzero(rng.random(n) < shared_rate)
        columns[4] = np.union1d(columns[3][: int(0.9 * len(columns[3]))], columns[4][:5])
        columns[7] = np.flatnonzero(rng.random(n) < rate7)
        paths.append(write_store(tmp_path / f"{name}.parquet", vectors_from_columns(n, columns, rng),
                                 meta=fake_meta(D)))
    from saeembed.store import load_store
    result = diff(*(load_store(p) for p in paths), labels=NO_LABELS)
    assert set(result.findings["latent"]) == {3, 4, 7}
    theme = dict(zip(result.findings["latent"], result.findings["theme"]))
    assert theme[3] == theme[4] != theme[7]
    assert len(result.themes) == 2 and sorted(result.themes["n_latents"]) == [1, 2]
    both = result.themes.filter(pl.col("n_latents") == 2).row(0, named=True)
    assert both["more_in"] == "a" and both["lead"] in (3, 4) and sorted(both["latents"]) == [3, 4]
    assert result.table.filter(~pl.col("significant"))["theme"].null_count() == D - 3


def test_themes_group_latents_with_near_decoder_directions(a_b):
    """Latents 3 (more in A) and 7 (more in B) fire independently; with the same decoder direction
    they still are one concept, but a theme only holds one direction."""
    decoder = np.eye(D, 8, dtype=np.float32)
    decoder[7] = decoder[3]
    assert len(diff(*a_b, labels=NO_LABELS, decoder=decoder).themes) == 2, "opposite directions stay apart"
    a = planted_store(a_b[0].path.with_name("a2.parquet"), 600, rates(l3=0.5, l7=0.5), seed=1)
    b = planted_store(a_b[0].path.with_name("b2.parquet"), 500, rates(l3=0.2, l7=0.2), seed=2)
    assert len(diff(a, b, labels=NO_LABELS, decoder=None).themes) == 2
    together = diff(a, b, labels=NO_LABELS, decoder=decoder).themes
    assert len(together) == 1 and sorted(together["latents"][0]) == [3, 7]


def test_each_finding_gets_its_own_document_without_the_latent_near_its_length(tmp_path):
    rng = np.random.default_rng(13)
    planted = [2, 5, 9, 14, 21, 33]
    logits = np.full((500, D), -2.2)
    tokens_a, tokens_b = rng.integers(5, 200, 500), rng.integers(5, 200, 500)
    a = logit_store(tmp_path / "a.parquet", tokens_a, logits + 2.5 * np.isin(np.arange(D), planted), seed=1)
    b = logit_store(tmp_path / "b.parquet", tokens_b, logits, seed=2)
    findings = diff(a, b, labels=NO_LABELS).findings
    assert set(findings["latent"]) == set(planted)
    without = findings["example_without_id"].to_list()
    assert len(set(without)) == len(planted), "not the same document for every finding"
    b_ids = b.frame["id"].to_list()
    for row in findings.iter_rows(named=True):
        target = tokens_a[a.frame["id"].to_list().index(row["example_with_id"])]
        other = b_ids.index(row["example_without_id"])
        assert row["latent"] not in b.matrix[other].indices
        lacking = [i for i in range(500) if row["latent"] not in b.matrix[i].indices]
        assert abs(tokens_b[other] - target) == min(abs(tokens_b[lacking] - target))


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
    with pytest.raises(SaeEmbedError, match="'frequency', 'mean'"):
        DiffConfig(measure="median")
    with pytest.raises(SaeEmbedError, match="'adjust', 'ignore'"):
        DiffConfig(length="sometimes")
    with pytest.raises(SaeEmbedError, match="length-bands"):
        DiffConfig(length_bands=1)


def test_cli_json_lines_file_output_and_people_output(a_b, tmp_path):
    runner = CliRunner()
    a, b = (str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"))
    out = runner.invoke(app, ["diff", a, b, "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    summary, themes = rows[0], [r for r in rows[1:] if r["type"] != "form"]
    assert all(r["layer"] == "form" for r in rows[1:] if r["type"] == "form")
    assert summary["type"] == "summary" and summary["names"] == ["a", "b"] and summary["sizes"] == [600, 500]
    assert "similar length" in summary["length"] and summary["n_tested"] == D
    assert summary["n_findings"] == 2 and summary["n_themes"] == 2 and summary["replication"] is None
    assert {r["type"] for r in themes} == {"theme"} and {r["lead"] for r in themes} == {3, 7}
    assert {"theme", "more_in", "n_latents", "lead", "label", "diff", "ci_low", "ci_high", "q",
            "example_with", "example_without"} <= set(themes[0])
    out = runner.invoke(app, ["diff", a, b, "--json", "--top", "1"])
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    rows = [r for r in rows if r["type"] != "form"]
    assert [r["type"] for r in rows] == ["summary", "theme"] and rows[0]["themes_shown"] == 1
    assert rows[1]["lead"] == 3 and rows[1]["layer"] == "content", "the strongest theme first"
    out = runner.invoke(app, ["diff", a, b, "--json", "--all", "--top", "1"])
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    n_form = rows[0]["n_form_tested"]
    assert rows[0]["type"] == "summary" and [r["type"] for r in rows[1:]] == ["form"] * n_form + ["latent"] * D
    out = runner.invoke(app, ["diff", a, b, "--holdout", "0.5", "-o", str(tmp_path / "d.csv"), "--all"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("length: a and b are of similar length")
    assert "findings replicate" in out.stdout and "more in a" in out.stdout and "more in b" in out.stdout
    table = pl.read_csv(tmp_path / "d.csv")
    assert len(table) == D + n_form and "replicated" in table.columns and "theme" in table.columns
    assert table.filter(pl.col("layer") == "content").height == D
    out = runner.invoke(app, ["diff", a, b, "--top", "1"])
    assert "The 1 strongest of 2 themes" in out.stdout and "\nmore in b\n" not in out.stdout
    # one record, three views: the terminal's headline, --json's summary and the page's headline all read it
    result = diff(load_store(a), load_store(b), DiffConfig(), names=["a", "b"])
    record = result.summary()
    same = {k: v for k, v in json.loads(json.dumps(record.as_dict())).items() if k != "notes"}
    assert {k: v for k, v in rows[0].items() if k != "notes"} == {**same, "themes_shown": record.n_themes}
    assert rows[0]["notes"][-1].startswith("how it is written: not read")  # the CLI read stores: said why
    assert all(line in " ".join(out.stdout.split()) for line in record.lines())
    page = tmp_path / "page.html"
    assert runner.invoke(app, ["diff", a, b, "--html", str(page), "-q"]).exit_code == 0
    assert all(html.escape(line) in page.read_text(encoding="utf-8") for line in record.lines("≤", "≥"))
    out = runner.invoke(app, ["diff", a, b, "--length", "sideways"])
    assert out.exit_code == 1 and "(--length) = 'sideways' is not allowed; choose one of 'adjust'" in out.output
    out = runner.invoke(app, ["diff", a])
    assert out.exit_code == 1 and "give two corpora" in out.output


def test_cli_diffs_raw_corpora_with_the_offline_default(tmp_path):
    """Corpus files are embedded on the fly (default preset: MiniLM + the shipped SAE for what they are
    about, SmolLM2 + the style SAE for how they are written) and cached."""
    for name, texts in (("a", ["What a great day, I love it!", "Wow, amazing, thanks so much!"] * 6),
                        ("b", ["The meeting is at 10 am.", "The report is attached below."] * 6)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{t} ({i})"}) + "\n"
                                                        for i, t in enumerate(texts)))
    # the two toy corpora do not overlap in length (11-12 vs 9-10 tokens): compared as they are
    args = ["diff", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--json", "--min-diff", "0.5",
            "--cache-dir", str(tmp_path / "cache"), "--length", "ignore"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    summary, *rows = [json.loads(line) for line in out.stdout.splitlines()]
    rows = [r for r in rows if r["layer"] == "content"]
    assert summary["type"] == "summary" and summary["n_findings"] >= len(rows)
    assert summary["n_style_tested"] > 100, "the LLM reader's token latents were compared too"
    assert rows and all(abs(r["diff"]) >= 0.5 and r["q"] <= 0.05 for r in rows)
    assert any(r["label"] for r in rows), "the shipped labels name the latents"
    assert list((tmp_path / "cache").iterdir()), "vectors were cached for the next analysis"


def test_stores_of_the_same_name_are_called_a_and_b(a_b):
    """Stores made in memory are all `<in memory>`: a diff of two said "more in <in memory>" for both."""
    from pathlib import Path

    a, b = a_b
    a.path = b.path = Path("<in memory>")
    assert diff(a, b, labels=NO_LABELS).names == ("A", "B")


def test_a_corpus_with_no_pooled_token_is_one_line(tmp_path):
    """`--pool-roles assistant` on chats without an assistant turn pools nothing: n_tokens is 0 everywhere
    (diff raised ZeroDivisionError); it says so instead."""
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        vectors = vectors_from_columns(50, [np.arange(0, 50, 3)] * 3, rng)
        vectors.n_tokens = np.zeros(50, np.int32) if name == "a" else vectors.n_tokens
        paths.append(str(write_store(tmp_path / f"{name}.parquet", vectors, d_sae=3)))
    out = CliRunner().invoke(app, ["diff", *paths])
    assert out.exit_code == 1 and "no document of a has a pooled token" in out.output, out.output
