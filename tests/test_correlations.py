"""Concept correlations, metadata associations and prompt x response correlations on planted stores."""


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
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store
from tests.conftest import summary_and_rows

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
    summary, rows = summary_and_rows(out.stdout)
    assert 0 < len(rows) <= 5 and {"latent_a", "latent_b", "npmi", "support", "p", "q"} <= set(rows[0])
    assert summary == correlations(store).summary().as_dict(), "--json's summary is the library's record"
    out = runner.invoke(app, ["correlations", path, "-o", str(tmp_path / "pairs.parquet")])
    assert out.exit_code == 0 and "pairs tested" in out.stdout and "dropped as trivial" in out.stdout
    assert len(pl.read_parquet(tmp_path / "pairs.parquet")) >= 1
    out = runner.invoke(app, ["correlations", path, "--with", "topic"])
    assert out.exit_code == 0 and "categorical column" in out.stdout
    out = runner.invoke(app, ["correlations", path, "--and", path])
    assert out.exit_code == 1 and "--pair-on" in out.output


# ---- conditioning on length ------------------------------------------------------------------------
# With max pooling a longer document fires more latents: latents that each fire more often in long
# documents, and otherwise independently, co-occur under a length-blind null but not at equal length.

NL = 3000


def length_store(path, lengths, columns, rng, fields=None):
    """A store whose latent j fires on rows columns[j], with these document lengths (n_tokens)."""
    vectors = vectors_from_columns(len(lengths), columns, rng)
    vectors.n_tokens = np.asarray(lengths, np.int32)
    write_store(path, vectors, fields, fake_meta(len(columns)))
    return load_store(path)


def rising_with(rank, rng, low=0.03, high=0.5):
    """Rows where a latent fires with probability rising linearly from `low` (shortest) to `high`."""
    return np.flatnonzero(rng.random(len(rank)) < low + (high - low) * rank)


def follow(follower, leader, share, rng):
    """The follower also fires on `share` of the leader's documents: a genuine co-occurrence."""
    return np.union1d(follower, rng.choice(leader, int(share * len(leader)), replace=False))


@pytest.fixture
def length_confounded(tmp_path):
    """Latents 0-11 rise with length, 12-19 do not; 11 follows 10 and 21 follows 20 (genuine pairs).
    A column `source` is "a" more often for long documents; latent 22 fires on 40% of "a" documents."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(5, 400, NL)
    rank = np.argsort(np.argsort(lengths)) / (NL - 1)
    columns = [rising_with(rank, rng) for _ in range(12)] + random_columns(NL, np.full(11, 0.15), rng)
    columns[11] = follow(columns[11], columns[10], 0.4, rng)
    columns[21] = follow(columns[21], columns[20], 0.4, rng)
    source = np.where(rng.random(NL) < rank, "a", "b")
    columns[22] = follow(columns[22], np.flatnonzero(source == "a"), 0.4, rng)
    return length_store(tmp_path / "len.parquet", lengths, columns, rng, {"source": source.tolist()})


NO_LABELS = Labels(23, {}, {}, {})


def test_length_alone_makes_no_pair_while_the_length_blind_null_finds_many(length_confounded):
    blind = correlations(length_confounded, CorrelationConfig(length_bands=1), labels=NO_LABELS)
    blind_pairs = set(zip(blind.table["latent_a"], blind.table["latent_b"]))
    spurious = {(a, b) for a, b in blind_pairs if b < 12 and (a, b) != (10, 11)}
    assert len(spurious) >= 30, "the length-blind null calls most pairs of length-driven latents significant"
    assert blind.length_bands == 1 and blind.n_length_explained == 0

    result = correlations(length_confounded, labels=NO_LABELS)
    assert result.length_bands == 10
    assert set(zip(result.table["latent_a"], result.table["latent_b"])) == {(10, 11), (20, 21)}
    assert result.n_length_explained >= len(spurious)
    row = result.table.filter(pl.col("latent_a") == 10).row(0, named=True)
    assert row["expected"] > blind.table.filter(pl.col("latent_a") == 10)["expected"][0], \
        "long documents fire both: the length-adjusted expectation is higher"
    assert row["lift"] == pytest.approx(row["support"] / row["expected"])


def test_equal_lengths_give_the_exact_hypergeometric_test(store):
    from scipy import stats as sstats

    banded = correlations(store, CorrelationConfig(length_bands=10), labels=LABELS, decoder=decoder_with_duplicate())
    single = correlations(store, CorrelationConfig(length_bands=1), labels=LABELS, decoder=decoder_with_duplicate())
    assert banded.length_bands == single.length_bands == 1 and banded.n_length_explained == 0
    assert banded.table.equals(single.table)
    assert any("1 length band instead of 10" in note for note in banded.notes)
    n = store.n_docs
    exact = sstats.hypergeom.sf(banded.table["support"].to_numpy() - 1, n,
                                np.rint(banded.table["freq_a"].to_numpy() * n),
                                np.rint(banded.table["freq_b"].to_numpy() * n))
    assert np.allclose(banded.table["p"], exact, rtol=1e-6)
    assert np.allclose(banded.table["expected"], banded.table["freq_a"] * banded.table["freq_b"] * n)


def skew_corrected_upper(observed, expected, variance, third):
    """One-sided p: w = (O - E - 0.5) / sd, corrected for a right skew (Cornish-Fisher: w = z + g (z^2 - 1),
    g = skewness / 6, solved for z), then the normal upper tail."""
    import math

    w = (observed - expected - 0.5) / math.sqrt(variance)
    g = max(third / variance**1.5 / 6, 0.0)
    z = (-1 + math.sqrt(1 + 4 * g * (w + g))) / (2 * g) if g > 0 else w
    return 0.5 * math.erfc(z / math.sqrt(2))


def reference_cmh(columns, band_of_doc):
    """The one-sided CMH p and expected count of every pair, one pair and one band at a time."""
    sets = [set(c.tolist()) for c in columns]
    bands = sorted(set(band_of_doc.tolist()))
    docs = {b: set(np.flatnonzero(band_of_doc == b).tolist()) for b in bands}
    out = {}
    for a in range(len(columns)):
        for b in range(a + 1, len(columns)):
            observed = expected = variance = third = 0.0
            for band in bands:
                n = len(docs[band])
                ka, kb = len(sets[a] & docs[band]), len(sets[b] & docs[band])
                observed += len(sets[a] & sets[b] & docs[band])
                expected += ka * kb / n
                var = ka * kb * (n - ka) * (n - kb) / (n**2 * (n - 1))  # hypergeometric variance and third moment
                variance += var
                third += var * (n - 2 * ka) * (n - 2 * kb) / (n * (n - 2))
            out[(a, b)] = (int(observed), expected, skew_corrected_upper(observed, expected, variance, third))
    return out


def reference_bh(p_values, alpha):
    """The pairs Benjamini-Hochberg rejects: all up to the largest rank k with p_(k) <= alpha k / m."""
    ranked = sorted(p_values.items(), key=lambda item: item[1])
    m = len(ranked)
    last = max((k for k, (_, p) in enumerate(ranked, 1) if p <= alpha * k / m), default=0)
    return {pair for pair, _ in ranked[:last]}


def test_vectorised_cmh_matches_a_pair_by_pair_computation(tmp_path):
    rng = np.random.default_rng(7)
    sizes = {10: 80, 20: 120, 40: 100, 80: 100}  # four lengths: the four quantile bands are these lengths
    lengths = rng.permutation(np.repeat(list(sizes), list(sizes.values())))
    rank = np.argsort(np.argsort(lengths, kind="stable")) / (len(lengths) - 1)
    columns = [rising_with(rank, rng, 0.05, 0.6) for _ in range(5)] + random_columns(len(lengths), np.full(3, 0.2), rng)
    columns[6] = follow(columns[6], columns[1], 0.3, rng)
    s = length_store(tmp_path / "ref.parquet", lengths, columns, rng)
    config = CorrelationConfig(length_bands=4, min_support=1, min_freq=0, max_freq=1, alpha=0.5, max_near_token=1.0)
    result = correlations(s, config, labels=Labels(8, {}, {}, {}))
    assert result.length_bands == 4 and result.n_tested == 28
    reference = reference_cmh(columns, np.searchsorted(sorted(sizes), lengths))
    assert set(zip(result.table["latent_a"], result.table["latent_b"])) == \
        reference_bh({pair: p for pair, (_, _, p) in reference.items()}, 0.5)
    for row in result.table.iter_rows(named=True):
        observed, expected, p = reference[(row["latent_a"], row["latent_b"])]
        assert row["support"] == observed
        assert row["expected"] == pytest.approx(expected, rel=1e-9)
        assert row["p"] == pytest.approx(p, rel=1e-9, abs=1e-15)


def exact_tail(observed, strata):
    """P(sum of independent hypergeometric overlaps >= observed), strata = [(n, a, c)]: their convolution."""
    from math import comb

    pmf = [1.0]
    for n, a, c in strata:
        band = [comb(a, k) * comb(n - a, c - k) / comb(n, c) for k in range(min(a, c) + 1)]
        pmf = [sum(pmf[i] * band[k - i] for i in range(len(pmf)) if 0 <= k - i < len(band))
               for k in range(len(pmf) + len(band) - 1)]
    return sum(pmf[observed:])


def test_the_skew_correction_keeps_rare_pairs_from_looking_significant():
    from saeembed.analysis.stats import cmh_moments, cmh_upper

    strata = [(300, 6, 9), (300, 8, 7), (300, 12, 10)]  # rare latents: about 0.8 shared documents expected
    n, a, c = (np.array([[s[k]] for s in strata]) for k in range(3))
    expected, variance, third = cmh_moments(a, c, n[:, 0])
    exact = exact_tail(8, strata)
    corrected = cmh_upper([8], expected, variance, third)[0]
    assert exact < 1e-4 and exact * 0.85 <= corrected <= exact * 20
    assert cmh_upper([8], expected, variance)[0] < exact / 1000, "the plain normal tail is far too small here"


def test_length_bands_are_quantiles_merged_until_large_enough():
    from saeembed.analysis.lengths import length_bands

    assert (length_bands(np.arange(1000), 10) == np.arange(1000) // 100).all()
    assert (length_bands(np.arange(1000), 1) == 0).all() and (length_bands(np.arange(1000), None) == 0).all()
    assert (length_bands(np.full(500, 7), 10) == 0).all(), "equal lengths: one band"
    ties = np.r_[np.full(900, 12), np.arange(13, 113)]  # 900 tied documents, then 100 longer ones
    assert np.bincount(length_bands(ties, 10)).tolist() == [900, 100]
    small = np.r_[np.arange(200), np.full(20, 1000)]  # a last band of 20 documents joins the one before
    bands = length_bands(small, 11, min_docs=50)
    assert np.bincount(bands).min() >= 50 and bands[-1] == bands[199]


def test_cross_correlations_condition_on_the_response_length(tmp_path):
    rng = np.random.default_rng(8)
    prompt_len = rng.integers(5, 300, NL)
    response_len = prompt_len + rng.integers(0, 60, NL)  # long prompts, long answers
    p_rank = np.argsort(np.argsort(prompt_len)) / (NL - 1)
    r_rank = np.argsort(np.argsort(response_len)) / (NL - 1)
    prompts = [rising_with(p_rank, rng) for _ in range(8)] + random_columns(NL, np.full(4, 0.15), rng)
    responses = [rising_with(r_rank, rng) for _ in range(8)] + random_columns(NL, np.full(4, 0.15), rng)
    responses[10] = follow(responses[10], prompts[9], 0.4, rng)  # prompt latent 9 -> response latent 10
    pid = {"pid": [str(i) for i in range(NL)]}
    a = length_store(tmp_path / "p.parquet", prompt_len, prompts, rng, pid)
    b = length_store(tmp_path / "r.parquet", response_len, responses, rng, pid)
    labels = Labels(12, {}, {}, {})
    blind = cross_correlations(a, b, "pid", CorrelationConfig(length_bands=1), labels=labels)
    spurious = [(x, y) for x, y in zip(blind.table["latent_a"], blind.table["latent_b"]) if x < 8 and y < 8]
    assert len(spurious) >= 20
    result = cross_correlations(a, b, "pid", labels=labels)
    assert set(zip(result.table["latent_a"], result.table["latent_b"])) == {(9, 10)}
    assert result.length_bands == 10 and result.n_length_explained >= len(spurious)


def test_associations_condition_on_length(length_confounded):
    blind = associations(length_confounded, "source", CorrelationConfig(length_bands=1), labels=NO_LABELS)
    blind_a = set(blind.table.filter(pl.col("value") == "a")["latent"].to_list())
    assert {22} | set(range(10)) <= blind_a, "long documents are mostly 'a': every length-driven latent looks enriched"
    result = associations(length_confounded, "source", labels=NO_LABELS)
    assert result.length_bands == 10
    assert set(result.table.filter(pl.col("value") == "a")["latent"].to_list()) == {22}
    assert result.n_length_explained >= 10
    row = result.table.filter((pl.col("value") == "a") & (pl.col("latent") == 22)).row(0, named=True)
    assert row["support"] > row["expected"]


def test_length_bands_is_validated():
    with pytest.raises(SaeEmbedError, match="length_bands"):
        CorrelationConfig(length_bands=0)
    assert CorrelationConfig(length_bands=None).length_bands is None


def test_cli_reports_what_length_explained(length_confounded):
    runner = CliRunner()
    path = str(length_confounded.path)
    out = runner.invoke(app, ["correlations", path])
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "pairs co-occur only through length (longer documents fire more latents); not reported" in text
    out = runner.invoke(app, ["correlations", path, "--length-bands", "1"])
    assert out.exit_code == 0 and "only through length" not in out.stdout
    out = runner.invoke(app, ["correlations", path, "--with", "source"])
    assert out.exit_code == 0 and "enrichments come only from the value's documents" in out.stdout
    out = runner.invoke(app, ["correlations", path, "--length-bands", "0"])
    assert out.exit_code == 1 and "length_bands" in out.output


@pytest.mark.parametrize("values, says", [([None] * 60, "is null in every row"),
                                          (["x"] * 60, "one value in every row")])
def test_a_column_with_nothing_to_associate_is_one_line(tmp_path, values, says):
    """`correlations --with FIELD` on a field null in every row raised IndexError."""
    from saeembed.analysis.associations import associations
    from saeembed.synthetic import random_columns, vectors_from_columns, write_store

    rng = np.random.default_rng(0)
    vectors = vectors_from_columns(60, random_columns(60, np.full(10, 0.3), rng), rng)
    store = load_store(write_store(tmp_path / "s.parquet", vectors, {"field": values}, d_sae=10))
    with pytest.raises(SaeEmbedError, match=says):
        associations(store, "field")
