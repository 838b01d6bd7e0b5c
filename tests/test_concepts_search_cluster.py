"""Concept selection, search and clustering: planted stores for the arithmetic, the offline default
(real MiniLM + the shipped SAE) for examples, dense vectors and the CLI."""

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.cluster import NO_CONCEPT, NOISE, cluster, jaccard_knn
from saeembed.analysis.concepts import ConceptError, Concepts, rank_weights, select_concepts
from saeembed.analysis.config import ClusterConfig, SearchConfig
from saeembed.analysis.search import (
    FEEDBACK_DOCS,
    FEEDBACK_WEIGHT,
    concept_scores,
    reciprocal_rank_fusion,
    sae_scores,
    search,
)
from saeembed.errors import SaeEmbedError
from saeembed.labels import Labels
from saeembed.spans import peak_span
from saeembed.store import load_store
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store
from tests.conftest import summary_and_rows

D, N = 30, 600
LABELS = Labels(D, {0: "football · goal · league · match", 1: "soccer · striker · team", 2: "stock · market · shares",
                    3: "bank · interest · rates", 4: "rain · weather · forecast", 5: "cat · dog · pet"}, {}, {})
GROUP = np.repeat([0, 1, 2], N // 3)  # sport, finance, weather documents


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Latents 0-1 fire in sport documents, 2-3 in finance, 4 in weather; 5-29 everywhere at random."""
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    columns = random_columns(N, np.full(D, 0.15), rng)
    for latent, group in ((0, 0), (1, 0), (2, 1), (3, 1), (4, 2)):
        members = np.flatnonzero(GROUP == group)
        columns[latent] = np.sort(rng.choice(members, int(0.8 * len(members)), replace=False))
    texts = [f"{['sport', 'finance', 'weather'][g]} document {i}: some filler words here" for i, g in enumerate(GROUP)]
    write_store(tmp_path / "s.parquet", vectors_from_columns(N, columns, rng),
                {"text": texts, "kind": [["sport", "finance", "weather"][g] for g in GROUP]}, fake_meta(D))
    return load_store(tmp_path / "s.parquet")


def test_words_select_latents_by_label_meaning_and_minus_excludes(store):
    selected = select_concepts("football", store, labels=LABELS, top=2)
    assert set(selected.latents) == {0, 1}, "soccer · striker is close to football in meaning"
    assert selected.latents[0] == 0 and "football" in selected.why[0]
    assert selected.weights[0] == 1.0 and selected.weights[1] < 1.0
    assert selected.matched == [["football"], ["soccer"]] and selected.notes == []
    assert selected.frame()["matched"].to_list() == [["football"], ["soccer"]]
    assert set(select_concepts("football", store, labels=LABELS).latents) == {0, 1}, \
        "top is a cap: labels far below the best match are left out"
    mixed = select_concepts("football, finance, 4, -soccer", store, labels=LABELS, top=2)
    assert 4 in mixed.latents and 1 not in mixed.latents and {2, 3} & set(mixed.latents)
    assert mixed.why[list(mixed.latents).index(4)] == "id"


def test_queries_that_select_nothing_say_so(store):
    with pytest.raises(ConceptError, match="selects no latent"):
        select_concepts("football, -football", store, labels=LABELS, top=2)
    with pytest.raises(ConceptError, match="does not exist"):
        select_concepts("999", store, labels=LABELS)


def test_weak_and_nonsense_phrases_are_flagged(store):
    mixed = select_concepts("football, xqzv blorf", store, labels=LABELS)
    assert set(mixed.latents) == {0, 1}, "the nonsense phrase adds nothing"
    assert len(mixed.notes) == 1 and mixed.notes[0].startswith("nothing selected for 'xqzv blorf'")
    with pytest.raises(ConceptError, match="nothing selected for 'xqzv blorf': no label is about it"):
        select_concepts("xqzv blorf", store, labels=LABELS)
    weak = select_concepts("umbrella", store, labels=LABELS)  # closest: rain · weather · forecast, 0.37
    assert list(weak.latents) == [4] and weak.notes[0].startswith("weak matches for 'umbrella'")
    assert select_concepts("4", store, labels=LABELS).matched == [[]], "an id matches no words"


def test_rank_weights_follow_the_paper():
    weights = rank_weights(100)
    assert weights[0] == 1.0 and weights[50] == pytest.approx(np.exp(-2.5))


def test_sae_scores_are_weighted_sums_of_p90_scaled_activations(store):
    concepts = Concepts(np.array([0, 2]), np.array([1.0, 0.5]), [None, None], ["id", "id"], "0,2")
    scores, weights = sae_scores(store, concepts)
    column0, column2 = store.matrix.getcol(0).toarray().ravel(), store.matrix.getcol(2).toarray().ravel()
    p90 = [np.quantile(c[c > 0], 0.9) for c in (column0, column2)]
    assert np.allclose(scores, column0 / p90[0] + 0.5 * column2 / p90[1], atol=1e-5)
    assert np.allclose(weights, [1 / p90[0], 0.5 / p90[1]])


def test_search_ranks_the_documents_that_carry_the_concept_first(store):
    result = search(store, "football", SearchConfig(top=20, k=2), labels=LABELS)
    top_rows = [int(i) for i in result.table["id"]]
    assert (GROUP[top_rows] == 0).all()
    first = result.table.row(0, named=True)
    assert first["top_latents"][0] in (0, 1) and first["top_labels"][0] == LABELS.get(first["top_latents"][0])
    # the result carries the peak's span, not marks: the text is the document's own
    row = int(first["id"])
    assert first["text"] == store.frame["text"][row] and "<<" not in first["text"]
    assert (first["peak_start"], first["peak_end"]) == peak_span(store, row, first["top_latents"][0])
    only_weather = search(store, "rain", SearchConfig(top=5, k=1), labels=LABELS, where="kind == 'weather'")
    assert only_weather.n_candidates == N // 3 and set(only_weather.table["kind"]) == {"weather"}
    with pytest.raises(SaeEmbedError, match="no field 'nope'"):
        search(store, "football", labels=LABELS, where="nope == 1")
    everything = search(store, "football", SearchConfig(top=5, k=2), labels=LABELS, where="1 = 1")
    assert everything.n_candidates == N, "a constant filter holds for every document, not the first"


def test_search_with_words_no_label_is_about_finds_nothing_unless_asked(store):
    """`umbrella` matches no label well: search says so and returns nothing (it listed 20 documents scoring
    higher than a real query); weak=True searches with the weak matches anyway."""
    with pytest.raises(ConceptError, match="'umbrella' matches no label well .* selects nothing"):
        search(store, "umbrella", labels=LABELS)
    assert search(store, "umbrella", SearchConfig(weak=True), labels=LABELS).n_matched > 0
    assert select_concepts("umbrella", store, labels=LABELS).notes, "concepts still shows weak matches, warned"


def test_cli_where_reads_nothing_but_the_store(store, tmp_path):
    """A filter is a condition on the store's own fields: a table function reading a file is refused in
    one line that does not show the file, and so is a filter that is not a condition."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:secret-first-line\n")
    path = str(tmp_path / "s.parquet")
    runner = CliRunner()
    for where in (f"id IN (SELECT column_1 FROM read_csv('{secret}'))", "n_tokens"):
        out = runner.invoke(app, ["search", path, "football", "--where", where])
        assert out.exit_code == 1, out.output
        assert "secret-first-line" not in out.output and out.output.count("\n") == 1, out.output


def test_feedback_adds_the_latents_of_the_first_results_rocchio_style(store):
    """Latent 0 alone is the query; its first results (sport documents) also carry latent 1, which joins
    with Rocchio's weight; documents latent 0 does not fire in stay at 0."""
    concepts = select_concepts("football", store, labels=LABELS, top=1)
    assert list(concepts.latents) == [0]
    plain, _ = sae_scores(store, concepts)
    ranked = concept_scores(store, concepts, feedback=20, labels=LABELS)
    first = np.argsort(-plain, kind="stable")[:20]
    code = store.matrix[np.sort(first)].toarray()
    scale = {j: np.quantile(store.matrix.getcol(j).data, 0.9) for j in range(D)}
    support = (code > 0).sum(0)
    mean = np.array([code[:, j].sum() / scale[j] / 20 if support[j] >= 2 else 0.0 for j in range(D)])
    want = FEEDBACK_WEIGHT * mean / mean.max()
    want[0] += 1.0
    got = dict(zip(ranked.concepts.latents.tolist(), ranked.concepts.weights.tolist()))
    assert set(got) == set(np.flatnonzero(want > 0))
    assert np.allclose([got[j] for j in sorted(got)], want[sorted(got)] / want.max(), atol=1e-5)
    assert ranked.concepts.latents[0] == 0 and ranked.concepts.latents[1] == 1, "latent 1 co-fires with 0"
    why = dict(zip(ranked.concepts.latents.tolist(), ranked.concepts.why))
    assert why[0].startswith("label ~ 'football'")
    assert why[1] == f"feedback: fires in {support[1]} of the first 20 results"
    assert ranked.concepts.labels[1] == LABELS.get(1)
    assert ((ranked.scores > 0) == (plain > 0)).all(), "feedback re-ranks, it brings in no document"
    assert np.allclose(concept_scores(store, concepts, feedback=0).scores, plain)
    result = search(store, "football", SearchConfig(top=N, k=1), labels=LABELS)
    assert result.n_matched == (plain > 0).sum() and len(result.concepts) == len(got)


def test_feedback_keeps_exclusions_and_leaves_latent_ids_as_given(store):
    excluding = concept_scores(store, select_concepts("football, -1", store, labels=LABELS, top=2), labels=LABELS)
    assert 1 not in excluding.concepts.latents and 0 in excluding.concepts.latents
    ids = select_concepts("0", store, labels=LABELS)
    assert concept_scores(store, ids).concepts is ids, "a query of latent ids is taken as given"
    everywhere = Concepts(np.array([5]), np.array([1.0]), [None], ["label ~ 'filler' 0.50"], "filler")
    for group, planted in ((0, [0, 1]), (1, [2, 3])):
        ranked = concept_scores(store, everywhere, candidates=np.flatnonzero(GROUP == group), labels=LABELS)
        assert set(ranked.concepts.latents[1:3]) == set(planted), \
            "feedback reads the first results among the candidates (--where), not the whole store"
    for bad in (-1, 1):
        with pytest.raises(SaeEmbedError, match=rf"SearchConfig.feedback \(--feedback\) = {bad} is not allowed"):
            search(store, "football", SearchConfig(feedback=bad), labels=LABELS)
        with pytest.raises(SaeEmbedError, match=rf"concept_scores.feedback \(--feedback\) = {bad} is not allowed"):
            concept_scores(store, excluding.concepts, feedback=bad)


def test_reciprocal_rank_fusion_prefers_documents_both_rankings_like():
    fused = reciprocal_rank_fusion([np.array([3.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0])], np.arange(3))
    assert np.argmax(fused) == 1


def test_concept_clustering_follows_the_chosen_axis(store):
    sport_finance = select_concepts("0,1,2,3", store, labels=LABELS)
    for method in ("spectral", "kmeans"):
        result = cluster(store, sport_finance, ClusterConfig(method=method, k=2), labels=LABELS)
        assigned = result.assignments["cluster"].to_numpy()
        has = assigned != NO_CONCEPT
        assert adjusted_rand_score(GROUP[has], assigned[has]) > 0.6, method
        assert (assigned[GROUP == 2] == NO_CONCEPT).mean() > 0.5, "weather documents lack both concepts"
    top = result.distinctive.filter(pl.col("cluster") == result.description["cluster"][0])["latent"].to_list()[:2]
    assert set(top) in ({0, 1}, {2, 3})
    assert result.description["size"].sum() == (assigned != NO_CONCEPT).sum()
    assert any("none of the selected concepts" in note for note in result.notes)
    assert result.n_no_concept == (assigned == NO_CONCEPT).sum() == result.n_unassigned and result.n_noise == 0
    outside = result.assignments.filter(pl.col("cluster") == NO_CONCEPT)
    assert (outside["membership"] == 0).all() and (outside["outlier_score"] == 1).all()
    inside = result.assignments.filter(pl.col("cluster") != NO_CONCEPT)
    assert inside["membership"].is_between(0, 1).all() and inside["membership"].mean() > 0.7
    assert inside["outlier_score"].is_between(0, 1).all()


@pytest.mark.parametrize("method", ["spectral", "kmeans"])
def test_without_a_number_of_clusters_it_is_chosen(store, method):
    """Sport, finance and weather documents along their five latents: the eigengap (spectral) or the
    silhouette (k-means) finds the three groups, and the note says how the number was chosen."""
    result = cluster(store, select_concepts("0,1,2,3,4", store, labels=LABELS), ClusterConfig(method=method),
                     labels=LABELS)
    assigned = result.assignments["cluster"].to_numpy()
    has = assigned != NO_CONCEPT
    assert len(result.description) == 3, result.notes
    assert adjusted_rand_score(GROUP[has], assigned[has]) > 0.6
    assert any("clusters chosen by" in note and "--clusters N" in note for note in result.notes)


@pytest.mark.parametrize("method", ["spectral", "hdbscan"])
def test_past_fit_on_documents_it_fits_a_seeded_sample_and_places_the_rest(store, method):
    """Spectral and HDBSCAN on more documents than `fit_on`: fitted on a seeded sample, the others placed
    as `assign` places new documents (the same clusters a saved clustering gives them), said in a note;
    the planted groups are found all the same. k-means fits every document."""
    from saeembed.analysis.assign import ClusteringModel

    chosen = select_concepts("0,1,2,3,4", store, labels=LABELS)
    config = ClusterConfig(method=method, k=3 if method == "spectral" else None, fit_on=150, min_cluster_size=15)
    result = cluster(store, chosen, config, labels=LABELS)
    assigned = result.assignments["cluster"].to_numpy()
    fitted = result.fitted
    assert fitted is not None and len(fitted.labels) == 150, "fitted on the sample alone"
    has = assigned != NO_CONCEPT
    assert any("random sample of 150 of the" in note and "seed 0" in note for note in result.notes)
    assert adjusted_rand_score(GROUP[has], assigned[has]) > 0.6
    again = cluster(store, chosen, config, labels=LABELS)
    assert again.assignments["cluster"].to_list() == assigned.tolist(), "the sample is seeded"
    assert result.fit_rows is not None and len(result.fit_rows) == 150 and has[result.fit_rows].all()
    placed = ClusteringModel.from_result(result, store).assign(store).assignments["cluster"].to_numpy()
    rest = np.setdiff1d(np.flatnonzero(has), result.fit_rows)
    np.testing.assert_array_equal(assigned[rest], placed[rest])
    full = cluster(store, chosen, ClusterConfig(method="kmeans", k=3, fit_on=150), labels=LABELS)
    assert full.fitted is not None and len(full.fitted.labels) == has.sum(), "k-means fits every document"
    assert full.fit_rows is None and not any("random sample" in note for note in full.notes)
    with pytest.raises(SaeEmbedError, match="--clusters 20 is more than the 15 documents"):
        cluster(store, chosen, ClusterConfig(k=20, fit_on=15), labels=LABELS)


def test_hdbscan_and_all_concepts(store):
    result = cluster(store, None, ClusterConfig(method="hdbscan", min_cluster_size=30), labels=LABELS)
    assert len(result.description) >= 2
    noise = int((result.assignments["cluster"] == NOISE).sum())
    assert any(f"left {noise:,} of" in note for note in result.notes) == (noise > 0)
    assert result.n_noise == noise and result.n_unassigned == noise + result.n_no_concept
    assert result.share_unassigned == pytest.approx(result.n_unassigned / N)
    frame = result.assignments
    assert frame.columns == ["id", "cluster", "membership", "outlier_score"]
    assert frame["membership"].is_between(0, 1).all() and frame["outlier_score"].is_between(0, 1).all()
    assert (frame.filter(pl.col("cluster") == NOISE)["membership"] == 0).all()
    # HDBSCAN's own scores (the hdbscan package): members of a cluster belong to it more than noise does
    inside = frame.filter(pl.col("cluster") >= 0)
    assert inside["membership"].mean() > 0.5 and inside["outlier_score"].mean() < 0.5


def test_sparse_jaccard_graph_matches_the_dense_matrix(store):
    rows = store.matrix.copy()
    rows.data[:] = 1.0
    graph = jaccard_knn(rows, neighbors=N, block=97).toarray()
    inter = (rows @ rows.T).toarray()
    size = np.diag(inter)
    union = size[:, None] + size[None, :] - inter
    dense = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(dense, 0)
    assert np.allclose(graph, dense, atol=1e-6)
    axis = ",".join(str(i) for i in range(15))  # the three groups' latents and ten that fire at random
    knn = cluster(store, select_concepts(axis, store, labels=LABELS),
                  ClusterConfig(k=3, dense_limit=100), labels=LABELS)
    assert "sparse 30-nearest-neighbour" in knn.notes[-1]
    assert adjusted_rand_score(GROUP, knn.assignments["cluster"]) > 0.6


def test_examples_and_dense_vectors_with_the_offline_default(tmp_path, monkeypatch):
    """--like reads the example with the store's own reader + SAE; embed --dense stores MiniLM vectors."""
    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path / "cache"))
    texts = [f"It is raining again in the city, cold rain all day {i}" for i in range(8)] + \
            [f"The quarterly profits of the bank rose sharply {i}" for i in range(8)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = CliRunner().invoke(app, ["embed", str(tmp_path / "c.jsonl"), "-o", str(tmp_path / "c.parquet"), "--dense",
                                   "-q"])
    assert out.exit_code == 0, out.output
    store = load_store(tmp_path / "c.parquet")
    assert store.frame["dense"].to_numpy().shape == (16, 384) and store.meta["dense"]["model"] == "all-MiniLM-L6-v2"
    selected = select_concepts(None, store, like=["Heavy rain and storms are expected tonight"], top=10)
    assert 3 <= len(selected) <= 10 and all(why.startswith("example") for why in selected.why)
    present = store.matrix[:, selected.latents].toarray() > 0
    assert present[:8].sum() > 2 * present[8:].sum(), "the example's concepts are those of the rain documents"
    phrase = select_concepts("rain storms", store)
    own = [i for i, why in enumerate(phrase.why) if why.startswith("phrase")]
    assert own and min(own) > max(i for i, why in enumerate(phrase.why) if why.startswith("label")), \
        "a document SAE also selects the phrase's own latents, after the label matches"
    assert not any(why.startswith("phrase") for why in select_concepts("rain storms", store, phrase_code=False).why)
    for mode in ("sae", "dense", "hybrid"):
        result = search(store, "rain weather", SearchConfig(top=4, mode=mode), like=None)
        assert all("rain" in t for t in result.table["text"]), mode


def test_cli_concepts_search_cluster(store, tmp_path):
    from saeembed.labels import save_labels

    save_labels(LABELS, store.meta["sae"]["fingerprint"])  # the user's own labels for this SAE
    runner = CliRunner()
    path = str(tmp_path / "s.parquet")
    out = runner.invoke(app, ["concepts", path, "football", "--concept-latents", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert {json.loads(line)["latent"] for line in out.stdout.splitlines()} == {0, 1}
    out = runner.invoke(app, ["concepts", path, "football"])
    assert out.exit_code == 0 and "matched: football" in out.stdout and "matched: soccer" in out.stdout
    out = runner.invoke(app, ["concepts", path, "umbrella"])
    assert out.exit_code == 0 and "warning: weak matches for 'umbrella'" in out.stderr
    out = runner.invoke(app, ["concepts", path, "xqzv blorf"])
    assert out.exit_code == 1 and "nothing selected for 'xqzv blorf'" in out.stderr
    out = runner.invoke(app, ["search", path, "football", "--concept-latents", "2", "--top", "3", "--json"])
    assert out.exit_code == 0, out.output
    summary, rows = summary_and_rows(out.stdout)
    assert rows and all(row["kind"] == "sport" for row in rows)
    assert summary["n_listed"] == len(rows) and summary["query"] == "football" and summary["mode"] == "sae"
    out = runner.invoke(app, ["cluster", path, "--concepts", "0,1,2,3", "--clusters", "2",
                              "-o", str(tmp_path / "a.csv")])
    assert out.exit_code == 0, out.output
    assert "600 documents in 2 clusters (spectral on 4 selected latents)" in out.stdout
    assert len(pl.read_csv(tmp_path / "a.csv")) == N and (tmp_path / "a.clusters.csv").exists()
    out = runner.invoke(app, ["cluster", path, "--clusters", "2"])
    assert out.exit_code == 1 and "--all-concepts" in out.output
    out = runner.invoke(app, ["cluster", path, "--concepts", "0,1,2,3,4", "--by", "kind"])
    assert out.exit_code == 0 and "3 clusters chosen by the eigengap" in " ".join(out.output.split()), out.output
    assert "clusters x kind (adjusted Rand index" in out.stdout, "--by without --html shows the cross-tab"
    out = runner.invoke(app, ["cluster", path, "--concepts", "0,1", "--by", "nope"])
    assert out.exit_code == 1 and "no such field" in out.output
    out = runner.invoke(app, ["concepts", path, "football", "--top", "1", "-o", str(tmp_path / "c.jsonl")])
    assert out.exit_code == 0 and len((tmp_path / "c.jsonl").read_text().splitlines()) == 2  # the file keeps all


def test_weighted_jaccard_levels_are_exact_on_the_level_grid(tmp_path):
    """The expanded rows' binary Jaccard is sum(min) / sum(max) of the activations, rounded up to the
    level grid (in units of their 90th percentile)."""
    from saeembed.analysis.cluster import LEVEL_CAP, LEVELS, _levels

    rng = np.random.default_rng(3)
    columns = random_columns(40, np.full(6, 0.5), rng)
    store = load_store(write_store(tmp_path / "w.parquet", vectors_from_columns(40, columns, rng), d_sae=6))
    expanded = _levels(store, np.arange(6), np.arange(40)).toarray()
    inter = expanded @ expanded.T
    size = expanded.sum(1)
    got = inter / np.maximum(size[:, None] + size[None] - inter, 1)
    step = LEVEL_CAP / LEVELS
    scaled = store.matrix.toarray() / np.quantile(store.matrix.data, 0.9)
    graded = np.where(scaled > 0, np.maximum(np.ceil(np.clip(scaled, 0, LEVEL_CAP) / step), 1) * step, 0)
    low, high = np.minimum(graded[:, None], graded[None]).sum(-1), np.maximum(graded[:, None], graded[None]).sum(-1)
    np.testing.assert_allclose(got, np.divide(low, high, out=np.zeros_like(low), where=high > 0), atol=1e-6)


def test_weighted_similarity_separates_groups_that_differ_only_in_strength(tmp_path):
    """Every document has the same latents; one group carries them strongly, the other weakly: the binary
    Jaccard sees no structure, the weighted one finds the groups."""
    n, d = 120, 6
    rng = np.random.default_rng(0)
    columns = [np.arange(n)] * d
    vectors = vectors_from_columns(n, columns, rng)
    strong = np.repeat([1.0, 0.0], n // 2)
    vectors.values = np.where(np.repeat(strong, d) > 0, rng.uniform(2.5, 3.0, n * d),
                              rng.uniform(0.3, 0.6, n * d)).astype(np.float32)
    vectors.values[rng.random(n * d) < 0.3] *= 0.5  # not all equal within a group
    store = load_store(write_store(tmp_path / "g.parquet", vectors, d_sae=d))
    weighted = cluster(store, None, ClusterConfig(k=2))
    binary = cluster(store, None, ClusterConfig(k=2, similarity="jaccard"))
    assert adjusted_rand_score(strong, weighted.assignments["cluster"]) > 0.9
    assert adjusted_rand_score(strong, binary.assignments["cluster"]) < 0.2
    with pytest.raises(SaeEmbedError, match="similarity"):
        ClusterConfig(similarity="cosine")


def test_sae_search_lists_only_documents_the_query_fires_in(store, tmp_path):
    """Documents with SAE score 0 used to fill the list up to --top: none of the query's latents fire in them."""
    result = search(store, "football", SearchConfig(top=N, k=2), labels=LABELS)
    fires = np.asarray((store.matrix[:, [0, 1]] > 0).sum(1)).ravel() > 0
    assert result.n_matched == fires.sum() == len(result.table) < N
    assert (result.table["score"] > 0).all() and set(result.table["id"].cast(int)) == set(np.flatnonzero(fires))
    none = search(store, "football", SearchConfig(top=5, k=2), labels=LABELS, where="kind == 'weather'")
    assert none.n_matched == 0 and len(none.table) == 0 and none.n_candidates == N // 3
    assert "top_latents" in none.table.columns, "an empty result keeps its columns"
    full = search(store, "football", SearchConfig(top=5, k=2), labels=LABELS)
    assert len(full.table) == 5 and full.n_matched == fires.sum()
    with pytest.raises(SaeEmbedError, match=r"SearchConfig.top \(--top\) = 0 is not allowed"):
        search(store, "football", SearchConfig(top=0), labels=LABELS)


def test_fusion_gives_no_sae_rank_to_documents_the_query_misses():
    sae = np.array([0.0, 2.0, 0.0, 1.0])
    dense = np.array([0.9, 0.1, 0.8, 0.2])
    fused = reciprocal_rank_fusion([sae, dense], np.arange(4), positive_only=(0,))
    assert np.allclose(fused, [1 / 61, 1 / 61 + 1 / 64, 1 / 62, 1 / 62 + 1 / 63])
    old = reciprocal_rank_fusion([sae, dense], np.arange(4))
    assert old[0] > fused[0], "without positive_only the zero scores got ranks 3 and 4 by position"


def test_cli_search_says_when_fewer_documents_match(store, tmp_path):
    from saeembed.labels import save_labels

    save_labels(LABELS, store.meta["sae"]["fingerprint"])
    path = str(tmp_path / "s.parquet")
    runner = CliRunner()
    out = runner.invoke(app, ["search", path, "football", "--concept-latents", "2", "--where", "kind == 'weather'"])
    assert out.exit_code == 0, out.output
    assert "no document carries the query's latents (200 documents searched)" in out.stdout
    out = runner.invoke(app, ["search", path, "football", "--concept-latents", "2", "--where", "kind == 'weather'",
                              "--json"])
    summary, rows = summary_and_rows(out.stdout)
    assert out.exit_code == 0 and rows == [] and summary["n_matched"] == 0
    assert "no document carries the query's latents" in summary["notes"][0]
    out = runner.invoke(app, ["search", path, "football", "--concept-latents", "2", "--top", "1000"])
    matched = int((np.asarray((store.matrix[:, [0, 1]] > 0).sum(1)).ravel() > 0).sum())
    assert f"only {matched} of the 600 documents searched carry the query's latents: {matched} listed, not 1,000" \
        in " ".join(out.stdout.split())
    out = runner.invoke(app, ["search", path, "football", "--concept-latents", "2", "--top", "3"])
    assert out.exit_code == 0 and "note:" not in out.stdout


def test_cli_search_feedback_is_the_library_default_and_can_be_turned_off(store, tmp_path):
    from saeembed.labels import save_labels

    save_labels(LABELS, store.meta["sae"]["fingerprint"])
    path = str(tmp_path / "s.parquet")
    runner = CliRunner()
    for extra, feedback in (([], FEEDBACK_DOCS), (["--feedback", "0"], 0), (["--feedback", "5"], 5)):
        out = runner.invoke(app, ["search", path, "football", "--concept-latents", "1", "--top", "50", "--json",
                                  *extra])
        assert out.exit_code == 0, out.output
        result = search(store, "football", SearchConfig(top=50, k=1, feedback=feedback), labels=LABELS)
        want = result.table
        summary, got = summary_and_rows(out.stdout)
        assert summary == result.summary("football").as_dict(), "--json's summary is the library's record"
        assert [row["id"] for row in got] == want["id"].to_list()
        assert np.allclose([row["score"] for row in got], want["score"].to_numpy(), rtol=1e-6)
    plain = runner.invoke(app, ["search", path, "football", "--concept-latents", "1", "--feedback", "0"]).stdout
    expanded = runner.invoke(app, ["search", path, "football", "--concept-latents", "1"]).stdout
    assert "1 latent from the query" in plain and "more from its first results" not in plain
    assert "more from its first results (--feedback)" in " ".join(expanded.split())
    for bad in ("-1", "1"):
        refused = runner.invoke(app, ["search", path, "football", "--feedback", bad])
        assert refused.exit_code == 1 and f"(--feedback) = {bad} is not allowed: give 0 (no feedback) or at least 2" \
            in " ".join(refused.output.split())


@pytest.mark.parametrize("d_sae, n_latents", [(300, 40), (70_000, 66_000)])
def test_column_entries_and_p90_scales_match_scipy_and_numpy(d_sae, n_latents):
    """Both ways of grouping entries by latent (16-bit radix keys up to 65,536 latents, plain keys above)."""
    import types

    import scipy.sparse as sp

    from saeembed.analysis.concepts import activation_scale
    from saeembed.store import column_entries

    rng = np.random.default_rng(7)
    matrix = sp.random(400, d_sae, density=min(1.0, 3000 / d_sae), format="csr", random_state=7,
                       data_rvs=lambda n: rng.uniform(0.1, 5.0, n)).astype(np.float32)
    latents = rng.choice(d_sae, n_latents, replace=False)
    rows, which, values = column_entries(matrix, latents)
    assert (np.diff(rows) >= 0).all(), "entries come in row order"
    got = sp.csr_matrix((values, (rows, which)), shape=(400, n_latents))
    assert (got != matrix[:, latents]).nnz == 0
    scale = activation_scale(types.SimpleNamespace(matrix=matrix), latents)
    columns = matrix[:, latents].tocsc()
    want = [np.quantile(columns.data[columns.indptr[j]:columns.indptr[j + 1]], 0.9)
            if columns.indptr[j + 1] > columns.indptr[j] else 1.0 for j in range(n_latents)]
    assert np.allclose(scale, want, rtol=1e-6)


def test_the_dense_cache_keeps_every_concurrent_writers_entries(tmp_path, monkeypatch):
    """Writers that embed different texts at once all keep their entries (one shared file rewritten by
    each lost the entries of whoever read it before another's rename); parts are merged past a limit."""
    from concurrent.futures import ThreadPoolExecutor

    import saeembed.embedding.dense as dense

    def fake_embeddings(texts, model=None):
        return np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], np.float32)

    monkeypatch.setattr(dense, "sentence_embeddings", fake_embeddings)
    monkeypatch.setattr(dense, "MAX_DENSE_PARTS", 5)

    def writer(k):
        cache = dense.DenseCache(tmp_path, model="m")
        for round_ in range(15):
            cache.embed([f"writer {k} text {round_}"])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    texts = [f"writer {k} text {r}" for k in range(4) for r in range(15)]
    cache = dense.DenseCache(tmp_path, model="m")
    known, parts = cache._read()
    assert set(known) >= {dense.text_key(t) for t in texts}, "no writer's entry was lost"
    assert np.allclose(cache.embed(texts), fake_embeddings(texts))
    assert len(parts) <= 5 + 4, "parts were merged"


def test_search_results_written_to_csv_keep_latents_and_labels_aligned(store, tmp_path):
    """CSV has no lists: `top_latents` and `top_labels` are joined with ' | ', an unlabelled latent as an empty
    item in its place (joining dropped it, so labels slid onto the wrong latents)."""
    from saeembed.export import write_frame

    result = search(store, "0, 1", SearchConfig(top=5, k=2), labels=Labels(D, {1: "soccer"}, {}, {}))
    assert any(None in row and "soccer" in row for row in result.table["top_labels"].to_list()), "a mixed row"
    path = write_frame(result.table, tmp_path / "hits.csv")
    written = pl.read_csv(path)
    for row, back in zip(result.table.iter_rows(named=True), written.iter_rows(named=True)):
        labels = back["top_labels"].split(" | ") if back["top_labels"] is not None else [""]
        assert len(back["top_latents"].split(" | ")) == len(labels) == len(row["top_latents"])
        assert labels == [label or "" for label in row["top_labels"]]
