"""Concept correlations, metadata associations and prompt x response correlations on planted stores."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.associations import associations
from saeembed.analysis.config import CorrelationConfig
from saeembed.analysis.correlations import correlations, cross_correlations
from saeembed.errors import SaeEmbedError
from saeembed.labels import Labels
from saeembed.store import load_store
from tests.fake_stores import fake_meta, random_columns, vectors_from_columns, write_store

D, N = 40, 1500


def planted_columns(rng: np.random.Generator) -> list[np.ndarray]:
    """Independent latents at 5-30%, except: 1 follows 0; 3 follows 2; 5 follows 4; 7 follows 6."""
    columns = random_columns(N, rng.uniform(0.05, 0.3, D), rng)
    for leader, follower in ((0, 1), (2, 3), (4, 5), (6, 7)):
        columns[follower] = np.union1d(columns[follower][: len(columns[follower]) // 4],
                                       columns[leader][: int(len(columns[leader]) * 0.8)])
    return columns


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    vectors = vectors_from_columns(N, planted_columns(rng), rng)
    # latents 2 and 3 peak on the same token wherever they fire together: one token firing both
    rows = np.repeat(np.arange(N), np.diff(vectors.offsets))
    for row in np.unique(rows):
        span = slice(vectors.offsets[row], vectors.offsets[row + 1])
        idx = vectors.indices[span]
        if 2 in idx and 3 in idx:
            at2, at3 = np.searchsorted(idx, 2), np.searchsorted(idx, 3)
            vectors.peak_start[span][at3] = vectors.peak_start[span][at2]
            vectors.peak_end[span][at3] = vectors.peak_end[span][at2]
    topic = np.where(np.isin(np.arange(N), vectors_rows(vectors, 8)), "x", "y")  # latent 8 marks topic x
    values_9 = dict(zip(vectors_rows(vectors, 9), vectors_values(vectors, 9)))  # score follows latent 9
    score = np.array([values_9.get(r, 0.0) * 2 + rng.normal(0, 0.3) for r in range(N)])
    write_store(tmp_path / "s.parquet", vectors, {"topic": topic.tolist(), "score": score.tolist()}, fake_meta(D))
    return load_store(tmp_path / "s.parquet")


def vectors_rows(vectors, latent):
    rows = np.repeat(np.arange(len(vectors)), np.diff(vectors.offsets))
    return rows[vectors.indices == latent]


def vectors_values(vectors, latent):
    return vectors.values[vectors.indices == latent]


LABELS = Labels(D, {4: "python code function", 5: "python code functions", 0: "rain weather", 1: "umbrella"},
                {}, {})


def decoder_with_duplicate() -> np.ndarray:
    rng = np.random.default_rng(1)
    decoder = rng.normal(size=(D, 64))
    decoder[7] = decoder[6] + 0.3 * rng.normal(size=64)  # near-duplicate direction, cosine ~0.95
    return decoder


def test_planted_pairs_are_found_and_trivial_ones_dropped_with_reasons(store):
    result = correlations(store, labels=LABELS, decoder=decoder_with_duplicate())
    pairs = set(zip(result.table["latent_a"], result.table["latent_b"]))
    assert (0, 1) in pairs
    assert not {(2, 3), (4, 5), (6, 7)} & pairs
    assert result.dropped == {"same_or_adjacent_token": 1, "decoder_cosine": 1, "similar_labels": 1}
    assert set(result.dropped_pairs["reason"]) == {"same_or_adjacent_token", "decoder_cosine", "similar_labels"}
    row = result.table.filter((pl.col("latent_a") == 0) & (pl.col("latent_b") == 1)).row(0, named=True)
    assert row["support"] >= 10 and row["q"] <= 0.05 and row["npmi"] > 0.3 and row["label_b"] == "umbrella"
    assert row["support"] > row["expected"]
    independent = result.table.filter((pl.col("latent_a") >= 10) & (pl.col("latent_b") >= 10))
    assert len(independent) <= 1, "independent latents: BH keeps false pairs rare"


def test_blocks_give_the_same_answer_as_one_product(store):
    whole = correlations(store, CorrelationConfig(block=4096), labels=LABELS, decoder=decoder_with_duplicate())
    blocked = correlations(store, CorrelationConfig(block=3), labels=LABELS, decoder=decoder_with_duplicate())
    assert whole.n_tested == blocked.n_tested
    assert whole.table.drop("p", "q").equals(blocked.table.drop("p", "q"))
    assert np.allclose(whole.table["q"], blocked.table["q"])


def test_support_and_band_limit_what_is_tested(store):
    result = correlations(store, CorrelationConfig(min_freq=0.2, min_support=50), labels=LABELS)
    assert result.n_band < D and (result.table["support"] >= 50).all()
    assert (result.table["freq_a"] >= 0.2).all() and (result.table["freq_b"] >= 0.2).all()


def test_without_the_sae_files_the_decoder_filter_is_skipped_with_a_note(store):
    result = correlations(store, labels=LABELS)
    assert any("decoder-direction filter skipped" in note for note in result.notes)
    assert result.dropped["decoder_cosine"] == 0


def test_categorical_column(store):
    result = associations(store, "topic", labels=LABELS)
    assert result.kind == "categorical"
    x = result.table.filter(pl.col("value") == "x")
    assert x["latent"][0] == 8 and x["freq_in_value"][0] == 1.0 and x["freq_elsewhere"][0] == 0.0
    assert result.table.filter(pl.col("latent") == 8)["value"].to_list() == ["x"]


def test_numeric_column_uses_rank_correlation(store):
    from scipy import stats as sstats

    result = associations(store, "score", labels=LABELS)
    assert result.kind == "numeric" and result.table["latent"][0] == 9
    column = store.matrix.getcol(9).toarray().ravel()
    assert result.table["rho"][0] == pytest.approx(sstats.spearmanr(column, store.frame["score"]).statistic)


def test_unknown_column_is_named(store):
    with pytest.raises(SaeEmbedError, match="no column 'nope'.*topic"):
        associations(store, "nope")


def test_prompt_by_response_pairs_and_echoes(tmp_path):
    rng = np.random.default_rng(2)
    prompts = random_columns(N, np.full(D, 0.15), rng)
    responses = random_columns(N, np.full(D, 0.15), rng)
    responses[9] = np.union1d(responses[9][:50], prompts[1][:150])  # prompt latent 1 -> response latent 9
    responses[3] = np.union1d(responses[3][:50], prompts[3][:150])  # the response echoes the prompt's latent 3
    order = rng.permutation(N)
    write_store(tmp_path / "p.parquet", vectors_from_columns(N, prompts, rng), {"pid": [str(i) for i in range(N)]},
                fake_meta(D))
    inverse = np.argsort(order)
    write_store(tmp_path / "r.parquet", vectors_from_columns(N, [np.sort(inverse[c]) for c in responses], rng),
                {"pid": [str(i) for i in order]}, fake_meta(D))
    result = cross_correlations(load_store(tmp_path / "p.parquet"), load_store(tmp_path / "r.parquet"), "pid",
                                labels=Labels(D, {}, {}, {}))
    pairs = set(zip(result.table["latent_a"], result.table["latent_b"]))
    assert (1, 9) in pairs and (3, 3) not in pairs
    assert result.dropped["decoder_cosine"] == 1, "the same latent on both sides is an echo"


def test_cli(store, tmp_path):
    runner = CliRunner()
    path = str(tmp_path / "s.parquet")
    out = runner.invoke(app, ["correlations", path, "--json", "--top", "5"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert 0 < len(rows) <= 5 and {"latent_a", "latent_b", "npmi", "support", "p", "q"} <= set(rows[0])
    out = runner.invoke(app, ["correlations", path, "-o", str(tmp_path / "pairs.parquet")])
    assert out.exit_code == 0 and "pairs tested" in out.stdout and "dropped as trivial" in out.stdout
    assert len(pl.read_parquet(tmp_path / "pairs.parquet")) >= 1
    out = runner.invoke(app, ["correlations", path, "--with", "topic"])
    assert out.exit_code == 0 and "categorical column" in out.stdout
    out = runner.invoke(app, ["correlations", path, "--and", path])
    assert out.exit_code == 1 and "--pair-on" in out.output
