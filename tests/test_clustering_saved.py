"""Clusterings that last: save a clustering, load it back checked, place new documents in it. Planted
stores: three groups of documents, each carrying its own five concepts (latents 0-4, 5-9, 10-14) most of
the time and the others rarely, over 25 latents firing at random."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.assign import (
    ARRAYS,
    HEAD,
    AssignResult,
    ClusteringError,
    ClusteringModel,
    assign,
    load_clustering,
    save_clustering,
)
from saeembed.analysis.cluster import NO_CONCEPT, NOISE, cluster
from saeembed.analysis.concepts import select_concepts
from saeembed.analysis.config import ClusterConfig
from saeembed.labels import Labels
from saeembed.store import StoreError, load_store
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store

D, GROUPS, PER = 40, 3, 5
AXIS = ",".join(str(i) for i in range(GROUPS * PER))
LABELS = Labels(D, {0: "football · goal", 5: "stock · market", 10: "rain · weather"}, {}, {})
CONFIGS = {"spectral": ClusterConfig(k=3), "kmeans": ClusterConfig(method="kmeans", k=3),
           "hdbscan": ClusterConfig(method="hdbscan", min_cluster_size=20)}


def planted(path, seed: int, n: int, **meta):
    """A sample of the planted corpus: (store, each document's group); a few documents carry no concept."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, n)
    columns = random_columns(n, np.full(D, 0.1), rng)
    blank = rng.random(n) < 0.03  # none of the axis' concepts
    for g in range(GROUPS):
        for latent in range(g * PER, (g + 1) * PER):
            fires = ((group == g) & (rng.random(n) < 0.85)) | ((group != g) & (rng.random(n) < 0.05))
            columns[latent] = np.flatnonzero(fires & ~blank)
    texts = [f"a document of planted group {g}, number {i} of the sample" for i, g in enumerate(group)]
    write_store(path, vectors_from_columns(n, columns, rng), {"id": [f"{path.stem}-{i}" for i in range(n)],
                                                               "text": texts, "group": group.tolist()},
                fake_meta(D, **meta))
    return load_store(path), group


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The clustered sample, a new sample of the same corpus, and each method's clustering saved."""
    root = tmp_path_factory.mktemp("saved")
    train, train_group = planted(root / "train.parquet", 0, 600)
    new, new_group = planted(root / "new.parquet", 1, 300)
    concepts = select_concepts(AXIS, train, labels=LABELS)
    results = {method: cluster(train, concepts, config, labels=LABELS) for method, config in CONFIGS.items()}
    folders = {method: save_clustering(result, train, root / method) for method, result in results.items()}
    return {"root": root, "train": train, "train_group": train_group, "new": new, "new_group": new_group,
            "results": results, "folders": folders}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_assigning_the_clustered_documents_reproduces_their_clusters(corpus, method):
    fitted = corpus["results"][method].assignments["cluster"].to_numpy()
    placed = assign(corpus["train"], corpus["folders"][method])
    assert isinstance(placed, AssignResult) and placed.method == method
    again = placed.assignments["cluster"].to_numpy()
    assert (again == fitted).mean() >= 0.95
    assert ((again == NO_CONCEPT) == (fitted == NO_CONCEPT)).all()
    frame = placed.assignments
    assert frame.columns == ["id", "cluster", "membership", "outlier_score"]
    assert frame["membership"].is_between(0, 1).all() and frame["outlier_score"].is_between(0, 1).all()
    assert placed.soft.shape == (len(frame), len(placed.cluster_ids))


@pytest.mark.parametrize("method", list(CONFIGS))
def test_a_folder_store_is_assigned_part_by_part_as_the_loaded_store_is(corpus, method, tmp_path):
    """A store's path is read one part at a time; the result equals assigning the whole store loaded."""
    import pyarrow.parquet as pq

    table = pq.read_table(corpus["new"].path)
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, start in enumerate(range(0, table.num_rows, 110)):  # 3 parts of 110, 110, 80 documents
        pq.write_table(table.slice(start, 110), folder / f"part-{k}.parquet")
    whole = assign(load_store(folder), corpus["folders"][method])
    streamed = assign(folder, corpus["folders"][method])
    # floats computed in other batches may differ in their last bits: ids and clusters exactly, floats closely
    assert streamed.assignments.select("id", "cluster").equals(whole.assignments.select("id", "cluster"))
    assert len(streamed.assignments) == 300
    for column in ("membership", "outlier_score"):
        np.testing.assert_allclose(streamed.assignments[column].to_numpy(), whole.assignments[column].to_numpy(),
                                   rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(streamed.soft, whole.soft, rtol=1e-6, atol=1e-9)
    assert streamed.clusters["assigned"].to_list() == whole.clusters["assigned"].to_list()
    assert streamed.notes == whole.notes
    assert (streamed.n_no_concept, streamed.n_noise) == (whole.n_no_concept, whole.n_noise)
    lean = load_clustering(corpus["folders"][method]).assign(folder, with_soft=False)
    assert lean.soft.shape == (300, 0)
    assert lean.assignments.select("id", "cluster").equals(whole.assignments.select("id", "cluster"))
    # a part whose ids are numbers: one line naming the part, not pyarrow's type error
    pq.write_table(table.slice(0, 110).set_column(0, "id", pa.array(range(110))), folder / "part-0.parquet")
    with pytest.raises(StoreError, match="different fields"):
        assign(folder, corpus["folders"][method])


def test_a_clustering_saved_before_fit_on_existed_still_loads(corpus, tmp_path):
    """`fit_on` joined ClusterConfig after version 1 of the format: a head without it loads with the default."""
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(corpus["folders"]["spectral"], folder)
    head = json.loads((folder / "clustering.json").read_text())
    del head["config"]["fit_on"]
    (folder / "clustering.json").write_text(json.dumps(head))
    model = load_clustering(folder)
    assert model.config.fit_on == ClusterConfig().fit_on
    assert model.assign(corpus["new"]).assignments["cluster"].to_list() == \
        load_clustering(corpus["folders"]["spectral"]).assign(corpus["new"]).assignments["cluster"].to_list()


@pytest.mark.parametrize("method", list(CONFIGS))
def test_a_new_sample_lands_in_the_clusters_its_planted_groups_predict(corpus, method):
    """Each planted group's cluster is the one most of its clustered documents fell in; new documents of
    the group must land there."""
    fitted = corpus["results"][method].assignments["cluster"].to_numpy()
    expected = {g: np.bincount(fitted[(corpus["train_group"] == g) & (fitted >= 0)]).argmax() for g in range(GROUPS)}
    assert len(set(expected.values())) == GROUPS, "the clustering found the planted groups"
    placed = assign(corpus["new"], corpus["folders"][method])
    got = placed.assignments["cluster"].to_numpy()
    want = np.array([expected[g] for g in corpus["new_group"]])
    inside = got >= 0
    assert inside.mean() >= (0.85 if method == "hdbscan" else 0.95)
    assert (got[inside] == want[inside]).mean() >= 0.95
    # the unassigned documents are counted, and said
    assert placed.n_no_concept == (got == NO_CONCEPT).sum() > 0 and placed.n_noise == (got == NOISE).sum()
    assert placed.n_unassigned == placed.n_no_concept + placed.n_noise
    assert placed.share_unassigned == pytest.approx(placed.n_unassigned / len(got))
    assert placed.notes[0].startswith(f"unassigned: {placed.n_unassigned:,} of 300 documents")
    assert placed.clusters["assigned"].sum() == inside.sum()
    # members of a cluster belong to it more, and are less outlying, than documents outside every cluster
    frame = placed.assignments
    assert frame.filter(pl.col("cluster") >= 0)["membership"].mean() > 0.6
    assert (frame.filter(pl.col("cluster") == NO_CONCEPT)["outlier_score"] == 1).all()


def test_outlier_scores_rank_documents_far_from_every_cluster_last(corpus, tmp_path):
    """Documents carrying a mixture of all three groups' concepts sit between the clusters: their outlier
    scores are higher and memberships lower than the planted documents'."""
    rng = np.random.default_rng(5)
    n = 60
    columns = random_columns(n, np.full(D, 0.1), rng)
    for latent in range(GROUPS * PER):
        columns[latent] = np.flatnonzero(rng.random(n) < 0.35)
    write_store(tmp_path / "mixed.parquet", vectors_from_columns(n, columns, rng), None, fake_meta(D))
    mixed = load_store(tmp_path / "mixed.parquet")
    for method in ("spectral", "kmeans", "hdbscan"):
        model = load_clustering(corpus["folders"][method])
        usual, odd = model.assign(corpus["new"]).assignments, model.assign(mixed).assignments
        usual, odd = usual.filter(pl.col("cluster") != NO_CONCEPT), odd.filter(pl.col("cluster") != NO_CONCEPT)
        assert odd["outlier_score"].mean() > usual["outlier_score"].mean() + 0.2, method
        assert odd["membership"].mean() < usual["membership"].mean(), method


def test_a_store_embedded_differently_is_refused_naming_the_field(corpus, tmp_path):
    other_sae, _ = planted(tmp_path / "other.parquet", 2, 50, fingerprint="another-sae")
    with pytest.raises(StoreError, match=r"sae\.fingerprint: 'fake-sae' vs 'another-sae'") as caught:
        assign(other_sae, corpus["folders"]["kmeans"])
    assert str(corpus["folders"]["kmeans"]) in str(caught.value)
    other_layer, _ = planted(tmp_path / "layer.parquet", 2, 50, model={"layer": 3})
    with pytest.raises(StoreError, match=r"model\.layer: 0 vs 3"):
        assign(other_layer, corpus["folders"]["spectral"])


@pytest.mark.parametrize("method", list(CONFIGS))
def test_save_and_load_round_trip(corpus, method):
    result = corpus["results"][method]
    loaded = load_clustering(corpus["folders"][method])
    memory = ClusteringModel.from_result(result, corpus["train"])
    assert loaded.method == method and loaded.config == result.config == CONFIGS[method]
    np.testing.assert_array_equal(loaded.fitted.latents, result.concepts.latents)
    np.testing.assert_array_equal(loaded.fitted.labels, result.fitted.labels)
    np.testing.assert_allclose(loaded.concepts.weights, result.concepts.weights, rtol=1e-6)
    assert loaded.concepts.labels == result.concepts.labels and loaded.concepts.why == result.concepts.why
    assert loaded.concepts.query == AXIS and loaded.fitted.unit == result.fitted.unit
    assert loaded.store["sae"]["fingerprint"] == "fake-sae" and loaded.meta["n_unassigned"] == result.n_unassigned
    assert loaded.description.equals(result.description) and loaded.distinctive.equals(result.distinctive)
    head = json.loads((corpus["folders"][method] / HEAD).read_text())
    assert head["share_unassigned"] == pytest.approx(result.share_unassigned) and head["method"] == method
    # the saved clustering places documents exactly as the one in memory does
    a, b = memory.assign(corpus["new"]), loaded.assign(corpus["new"])
    assert a.assignments.equals(b.assignments) and np.allclose(a.soft, b.soft)


def test_all_concepts_and_binary_similarity_are_saved_too(corpus, tmp_path):
    for config in (ClusterConfig(k=3, similarity="jaccard"), ClusterConfig(method="hdbscan", similarity="jaccard",
                                                                            min_cluster_size=20)):
        result = cluster(corpus["train"], select_concepts(AXIS, corpus["train"], labels=LABELS), config, labels=LABELS)
        folder = save_clustering(result, corpus["train"], tmp_path / config.method)
        again = assign(corpus["train"], folder).assignments["cluster"].to_numpy()
        assert (again == result.assignments["cluster"].to_numpy()).mean() >= 0.95, config
    every = cluster(corpus["train"], None, ClusterConfig(method="kmeans", k=3), labels=LABELS)
    model = load_clustering(save_clustering(every, corpus["train"], tmp_path / "every"))
    assert model.concepts is None and len(model.fitted.latents) == D
    assert (model.assign(corpus["train"]).assignments["cluster"] == every.assignments["cluster"]).mean() >= 0.95


def test_what_cannot_be_saved_or_loaded_is_one_line(corpus, tmp_path):
    with pytest.raises(ClusteringError, match="does not exist"):
        load_clustering(tmp_path / "nowhere")
    with pytest.raises(ClusteringError, match="not made from"):
        save_clustering(corpus["results"]["kmeans"], corpus["new"], tmp_path / "x")
    folder = save_clustering(corpus["results"]["spectral"], corpus["train"], tmp_path / "s")
    head = json.loads((folder / HEAD).read_text())
    for field, value, fragment in (("method", "dbscan", "method is 'dbscan'"),
                                   ("config", {**head["config"], "neighbors": 0}, "neighbors"),
                                   ("unit", -1, "unit is -1"), ("clusters", [0, 1], "labels holds")):
        (folder / HEAD).write_text(json.dumps({**head, field: value}))
        with pytest.raises(ClusteringError, match=fragment) as caught:
            load_clustering(folder)
        assert "\n" not in str(caught.value) and str(folder) in str(caught.value)
    (folder / HEAD).write_text(json.dumps(head))
    blob = bytearray((folder / ARRAYS).read_bytes())
    (folder / ARRAYS).write_bytes(bytes(blob[:-10]))
    with pytest.raises(ClusteringError, match=f"{ARRAYS} is not the file {HEAD} was saved with"):
        load_clustering(folder)
    (folder / ARRAYS).unlink()
    with pytest.raises(ClusteringError, match=f"cannot read .*{ARRAYS}"):
        load_clustering(folder)


def test_hdbscan_coordinates_that_do_not_reproduce_the_clusters_are_refused(corpus, tmp_path):
    import hashlib

    from safetensors.numpy import load, save

    folder = save_clustering(corpus["results"]["hdbscan"], corpus["train"], tmp_path / "h")
    arrays = load((folder / ARRAYS).read_bytes())
    arrays["coords"] = np.random.default_rng(0).permutation(arrays["coords"])
    blob = save(arrays)
    (folder / ARRAYS).write_bytes(blob)
    head = json.loads((folder / HEAD).read_text())
    head["sha256"][ARRAYS] = hashlib.sha256(blob).hexdigest()
    (folder / HEAD).write_text(json.dumps(head))
    with pytest.raises(ClusteringError, match="coords do not reproduce the saved clusters"):
        load_clustering(folder)


def test_cli_cluster_save_then_assign(corpus, tmp_path):
    runner = CliRunner()
    train, new = str(corpus["train"].path), str(corpus["new"].path)
    folder = tmp_path / "clusters"
    out = runner.invoke(app, ["cluster", train, "--concepts", AXIS, "--clusters", "3", "--save", str(folder)])
    assert out.exit_code == 0, out.output
    assert "unassigned: " in out.stdout and f"wrote {folder}" in out.stderr.replace("\n", "")
    out = runner.invoke(app, ["assign", new, "--clustering", str(folder), "-o", str(tmp_path / "a.parquet")])
    assert out.exit_code == 0, out.output
    assert "300 documents placed in the 3 clusters" in out.stdout and "unassigned: " in out.stdout
    frame = pl.read_parquet(tmp_path / "a.parquet")
    assert frame.columns == ["id", "cluster", "membership", "outlier_score"] and len(frame) == 300
    out = runner.invoke(app, ["assign", new, "--clustering", str(folder), "--json"])
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == 300 and "unassigned: " in out.stderr
    assert json.loads(out.stdout.splitlines()[0]).keys() == {"id", "cluster", "membership", "outlier_score"}
    out = runner.invoke(app, ["assign", new, "--clustering", str(tmp_path / "nowhere")])
    assert out.exit_code == 1 and "does not exist" in out.stderr and "Traceback" not in out.output
    other, _ = planted(tmp_path / "other.parquet", 3, 30, fingerprint="another-sae")
    out = runner.invoke(app, ["assign", str(other.path), "--clustering", str(folder)])
    assert out.exit_code == 1 and "sae.fingerprint" in out.stderr
    (tmp_path / "file").write_text("x")
    out = runner.invoke(app, ["cluster", train, "--concepts", AXIS, "--clusters", "3", "--save",
                              str(tmp_path / "file")])
    assert out.exit_code == 1 and "is a file" in out.stderr
