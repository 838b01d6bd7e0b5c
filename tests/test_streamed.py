"""Analyses of folder stores read part by part (`StoreStream`) equal the same analyses of the stores loaded."""

import json
import re

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import CorrelationConfig, DiffConfig, SearchConfig
from saeembed.analysis.correlations import correlations
from saeembed.analysis.diff import diff
from saeembed.analysis.search import search
from saeembed.errors import SaeEmbedError
from saeembed.labels import Labels
from saeembed.store import StoreWriter, load_store, read_meta
from saeembed.stream import StoreStream
from saeembed.synthetic import fake_meta, vectors_from_columns, write_store

D = 40
NO_LABELS = Labels(D, {}, {}, {})
# columns whose values are sums of floats: the parts add them in another order
SUMMED = {"mean_a", "mean_b", "diff", "rel_diff", "ci_low", "ci_high", "p", "q", "diff_holdout", "p_holdout",
          "q_holdout", "rate_a", "rate_b"}


def corpus(path, n, seed, planted):
    """A store of n documents of mixed lengths: latent j fires with rate planted.get(j, 0.1), more often in
    longer documents; latent 5 fires wherever latent 4 does (a theme); texts with lists, '!' and openings."""
    rng = np.random.default_rng(seed)
    n_tokens = rng.integers(5, 300, n)
    columns = []
    for j in range(D):
        p = np.clip(planted.get(j, 0.1) * (0.5 + n_tokens / 300), 0, 1)
        columns.append(np.flatnonzero(rng.random(n) < p))
    columns[5] = np.union1d(columns[5], columns[4])
    vectors = vectors_from_columns(n, columns, rng)
    vectors.n_tokens = n_tokens.astype(np.int32)
    texts = []
    for i in range(n):
        opening = ["Sure, here it is.", "Certainly!", "Well, let me see.", "The answer"][(i * 7 + seed) % 4]
        body = "\n- first point\n- second point" if rng.random() < planted.get("lists", 0.3) else " plain prose"
        texts.append(f"{opening} document {i} of a corpus written for this test{body}"
                     + ("!" if rng.random() < 0.3 else "."))
    return write_store(path, vectors, {"id": [f"{path.stem}-{i}" for i in range(n)], "text": texts},
                       fake_meta(D))


def split(store, folder, parts):
    """The same store as a folder of `parts` part files."""
    table, meta = pq.read_table(store), read_meta(store)
    folder.mkdir()
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        writer = StoreWriter(folder / f"part-{k:05d}.parquet", table.schema, meta)
        writer.write(table.slice(lo, hi - lo))
        writer.close()
    return folder


@pytest.fixture
def folders(tmp_path):
    a = corpus(tmp_path / "a.parquet", 700, 1, {3: 0.3, 4: 0.25, 7: 0.02, "lists": 0.6})
    b = corpus(tmp_path / "b.parquet", 600, 2, {3: 0.1, 4: 0.05, 7: 0.2})
    return a, b, split(a, tmp_path / "A", 3), split(b, tmp_path / "B", 4)


def assert_same_table(loaded, streamed, key):
    assert loaded.columns == streamed.columns
    assert loaded[key].to_list() == streamed[key].to_list(), "the same rows in the same order"
    for column in loaded.columns:
        if column in SUMMED:
            np.testing.assert_allclose(loaded[column].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                                       streamed[column].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                                       rtol=1e-6, atol=1e-12, err_msg=column)
        else:
            assert loaded[column].to_list() == streamed[column].to_list(), column


@pytest.mark.parametrize("config", [DiffConfig(), DiffConfig(holdout=0.5), DiffConfig(length="ignore"),
                                    DiffConfig(measure="mean", min_diff=0.05, holdout=0.3)],
                         ids=["default", "holdout", "length-ignored", "mean"])
def test_a_streamed_diff_equals_the_loaded_one(folders, config):
    a, b, folder_a, folder_b = folders
    loaded = diff(load_store(a), load_store(b), config, names=["A", "B"], labels=NO_LABELS)
    streamed = diff(StoreStream(folder_a), StoreStream(folder_b), config, names=["A", "B"], labels=NO_LABELS)
    assert len(loaded.findings) >= 2 and {3, 7} <= set(loaded.findings["latent"])
    assert_same_table(loaded.table, streamed.table, "latent")
    assert_same_table(loaded.form, streamed.form, "feature")
    assert loaded.form_findings.height >= 1, "the form layer has findings to compare"
    assert_same_table(loaded.themes, streamed.themes, "theme")
    assert loaded.replication_rate == streamed.replication_rate
    assert loaded.length.sentence == streamed.length.sentence


def test_a_streamed_diff_reads_the_parts_form_counts_and_counts_a_part_without_them(folders, monkeypatch):
    """The parts' stored form counts stand for their texts; a part written before them (no form columns) is
    counted from its texts, and the form layer is the loaded stores' either way."""
    import saeembed.analysis.streamed as streamed

    a, b, folder_a, folder_b = folders
    loaded = diff(load_store(a), load_store(b), names=["A", "B"], labels=NO_LABELS)
    older = folder_a / "part-00001.parquet"
    table = pq.read_table(older)
    writer = StoreWriter(older, table.drop_columns(["form_counts", "openings"]).schema, read_meta(older))
    writer.write(table.drop_columns(["form_counts", "openings"]))
    writer.close()
    counted_parts = []

    def count(frame, arg, real=streamed._count_work):
        counted_parts.append(frame.height)
        return real(frame, arg)

    monkeypatch.setattr(streamed, "_count_work", count)
    streamed_diff = diff(StoreStream(folder_a), StoreStream(folder_b), names=["A", "B"], labels=NO_LABELS)
    assert counted_parts == [table.num_rows], "only the part without form columns had its texts counted"
    assert_same_table(loaded.form, streamed_diff.form, "feature")


def test_themes_and_examples_of_a_streamed_diff(folders):
    a, b, folder_a, folder_b = folders
    result = diff(StoreStream(folder_a), StoreStream(folder_b), names=["A", "B"], labels=NO_LABELS)
    findings = result.findings
    four, five = (findings.filter(pl.col("latent") == j).row(0, named=True) for j in (4, 5))
    assert four["theme"] == five["theme"], "latent 5 fires wherever 4 does: one theme"
    loaded_b = load_store(b)
    seven = findings.filter(pl.col("latent") == 7).row(0, named=True)  # more in B
    row = loaded_b.frame["id"].to_list().index(seven["example_with_id"])
    assert 7 in loaded_b.matrix[row].indices and "<<" in seven["example_with"]


def test_a_cli_diff_of_folder_stores_reads_them_by_parts_and_says_the_same(folders, monkeypatch):
    a, b, folder_a, folder_b = folders
    runner = CliRunner()
    whole = runner.invoke(app, ["diff", str(a), str(b), "--json", "--holdout", "0.5"])
    assert whole.exit_code == 0, whole.output

    def refuse(*args, **kwargs):
        raise AssertionError("folder stores are not loaded whole")

    monkeypatch.setattr("saeembed.embedding.open_store.load_store", refuse)
    parted = runner.invoke(app, ["diff", str(folder_a), str(folder_b), "--json", "--holdout", "0.5"])
    assert parted.exit_code == 0, parted.output
    records = [[json.loads(line) for line in out.output.splitlines() if line.startswith("{")]
               for out in (whole, parted)]
    for one, other in zip(*records):
        assert one.get("latent", one.get("feature")) == other.get("latent", other.get("feature"))
        assert one.get("example_with_id") == other.get("example_with_id")
    assert len(records[0]) == len(records[1]) > 3


def test_pairs_and_style_of_streamed_stores_are_refused_in_one_line(folders):
    _, _, folder_a, folder_b = folders
    with pytest.raises(SaeEmbedError, match="side by side"):
        diff(StoreStream(folder_a), StoreStream(folder_b), DiffConfig(pair_on="id"))


@pytest.mark.parametrize("config", [CorrelationConfig(), CorrelationConfig(length_bands=1, block=7)],
                         ids=["length-bands", "one-band-small-blocks"])
def test_streamed_correlations_equal_the_loaded_ones(folders, config, monkeypatch):
    a, _, folder_a, _ = folders
    # several passes over the parts, one per group of blocks, as on a store of many latents
    monkeypatch.setattr("saeembed.analysis.correlations.COOCCURRENCE_CELLS", 7 * 3 * D)
    loaded = correlations(load_store(a), config, labels=NO_LABELS)
    streamed = correlations(StoreStream(folder_a), config, labels=NO_LABELS)
    assert len(loaded.table) >= 1 and (4, 5) in set(zip(loaded.table["latent_a"], loaded.table["latent_b"]))
    one, other = loaded.table, streamed.table  # in the same order too: ties by latent
    assert one.drop("p", "q", "npmi", "lift", "expected").equals(other.drop("p", "q", "npmi", "lift", "expected"))
    for column in ("p", "q", "npmi", "lift", "expected"):
        np.testing.assert_allclose(one[column].to_numpy(), other[column].to_numpy(), rtol=1e-9, err_msg=column)
    assert (loaded.n_tested, loaded.n_band, loaded.dropped, loaded.n_length_explained, loaded.length_bands) == \
        (streamed.n_tested, streamed.n_band, streamed.dropped, streamed.n_length_explained, streamed.length_bands)


def test_a_cli_correlations_of_a_folder_store_with_its_page(folders, tmp_path, monkeypatch):
    a, _, folder_a, _ = folders
    runner = CliRunner()
    whole = runner.invoke(app, ["correlations", str(a), "--json"])

    def refuse(*args, **kwargs):
        raise AssertionError("a folder store is not loaded whole")

    monkeypatch.setattr("saeembed.embedding.open_store.load_store", refuse)
    page = tmp_path / "pairs.html"
    parted = runner.invoke(app, ["correlations", str(folder_a), "--json", "--html", str(page)])
    assert parted.exit_code == 0, parted.output
    records = [[json.loads(line) for line in out.output.splitlines() if line.startswith("{")]
               for out in (whole, parted)]
    pairs = [[(r["latent_a"], r["latent_b"]) for r in rows if "latent_a" in r] for rows in records]
    assert sorted(pairs[0]) == sorted(pairs[1]) and pairs[0]
    assert re.search(r"(?<![\w-])a-\d+", page.read_text()), "each pair's example document (ids a-...) is shown"


@pytest.mark.parametrize("kept", [True, False], ids=["columns kept", "read in passes"])
@pytest.mark.parametrize("query, config, where", [
    ("3, 4", SearchConfig(top=15, feedback=0), None),
    ("apples", SearchConfig(top=15, feedback=20, weak=True), None),  # words; the first results' latents join
    ("7", SearchConfig(top=500), "n_tokens > 100"),  # more than match: only documents with latent 7
])
def test_streamed_search_equals_the_loaded_one(folders, query, config, where, kept, monkeypatch):
    # kept: the query's columns gathered once and kept (`KEPT_ENTRIES`); else each use reads the parts again
    if not kept:
        monkeypatch.setattr("saeembed.stream.KEPT_ENTRIES", 0)
    a, _, folder_a, _ = folders
    labels = Labels(D, {i: ["apples and pears", "bicycles", "the sea", "tax law"][i % 4] for i in range(D)}, {}, {})
    loaded = search(load_store(a), query, config, where=where, labels=labels)
    stream = StoreStream(folder_a)
    streamed = search(stream, query, config, where=where, labels=labels)
    # kept: one pass for the query's latents, one for those feedback adds, one for `where`
    assert (stream.passes <= 1 + (config.feedback > 0 and not query[0].isdigit()) + (where is not None)) == kept
    assert len(loaded.table) >= 10
    assert loaded.table.drop("score").equals(streamed.table.drop("score"))
    np.testing.assert_allclose(loaded.table["score"].to_numpy(), streamed.table["score"].to_numpy(), rtol=1e-12)
    assert loaded.summary() == streamed.summary()
    if not query[0].isdigit():  # a query of ids is taken as given
        assert loaded.summary().n_feedback_latents > 0, "feedback added latents"


def test_a_cli_search_of_a_folder_store_reads_it_by_parts(folders, monkeypatch):
    a, _, folder_a, _ = folders
    runner = CliRunner()
    whole = runner.invoke(app, ["search", str(a), "3, 4", "--json", "--top", "12"])

    def refuse(*args, **kwargs):
        raise AssertionError("a folder store is not loaded whole")

    monkeypatch.setattr("saeembed.embedding.open_store.load_store", refuse)
    parted = runner.invoke(app, ["search", str(folder_a), "3, 4", "--json", "--top", "12", "--where", "n_tokens > 50"])
    assert whole.exit_code == 0 and parted.exit_code == 0, parted.output
    ids = [[r["id"] for r in map(json.loads, out.output.splitlines()) if "id" in r] for out in (whole, parted)]
    assert len(ids[0]) == len(ids[1]) == 12


def test_fetch_gives_the_rows_asked_for_from_parts_of_several_row_groups(folders, tmp_path):
    a, _, _, _ = folders
    table, meta = pq.read_table(a), read_meta(a)
    folder = tmp_path / "groups"
    folder.mkdir()
    for k, (lo, hi) in enumerate([(0, 300), (300, 700)]):
        writer = StoreWriter(folder / f"part-{k}.parquet", table.schema, meta, buffer_bytes=1)  # a group per write
        for start in range(lo, hi, 64):
            writer.write(table.slice(start, min(64, hi - start)))
        writer.close()
    assert pq.ParquetFile(folder / "part-1.parquet").num_row_groups > 1
    rows = np.array([650, 3, 299, 300, 3, 64, 128, 699])
    fetched, loaded = StoreStream(folder).fetch(rows), load_store(a).take(rows)
    assert fetched.frame.equals(loaded.frame)
    assert (fetched.matrix != loaded.matrix).nnz == 0
    np.testing.assert_array_equal(fetched.peak_start, loaded.peak_start)
    np.testing.assert_array_equal(fetched.peak_end, loaded.peak_end)
    vectors_only = StoreStream(folder).fetch(rows, fields=[])  # the row groups' texts left unread
    assert (vectors_only.matrix != loaded.matrix).nnz == 0 and vectors_only.frame.columns == ["n_tokens"]


def test_each_pass_over_the_parts_reports_its_progress(folders):
    _, _, folder_a, folder_b = folders
    seen = []
    streams = [StoreStream(folder_a), StoreStream(folder_b)]
    for stream in streams:
        stream.on_part = lambda passes, done, parts, name=stream.path.name: seen.append((name, passes, done, parts))
    diff(*streams, labels=NO_LABELS)
    for name, parts in (("A", 3), ("B", 4)):
        mine = [(passes, done) for n, passes, done, total in seen if n == name and total == parts]
        passes = {p for p, _ in mine}
        assert len(passes) >= 3, "counts, length bands, the findings' pass, the form layer's texts ..."
        assert all(sorted(d for p, d in mine if p == one) == list(range(1, parts + 1)) for one in passes)


def test_a_loaded_store_diffed_with_a_folder_store(folders):
    a, b, folder_a, _ = folders
    loaded = diff(load_store(a), load_store(b), names=["A", "B"], labels=NO_LABELS)
    mixed = diff(StoreStream(folder_a), load_store(b), names=["A", "B"], labels=NO_LABELS)
    assert_same_table(loaded.table, mixed.table, "latent")
    out = CliRunner().invoke(app, ["diff", str(b), str(folder_a), "--json"])
    assert out.exit_code == 0, out.output


def test_a_streamed_search_that_finds_nothing_says_so(folders):
    a, _, folder_a, _ = folders
    for store in (load_store(a), StoreStream(folder_a)):
        result = search(store, "3, 4", SearchConfig(top=5), where="n_tokens > 100000", labels=NO_LABELS)
        assert len(result.table) == 0 and result.summary().n_matched == 0
    out = CliRunner().invoke(app, ["search", str(folder_a), "3, 4", "--where", "n_tokens > 100000"])
    assert out.exit_code == 0, out.output


def test_the_example_without_a_latent_tied_to_length_takes_few_passes(tmp_path):
    """Latent 3 fires in every document of A and in B only past 60 tokens: the nearest-length document of B
    without it is found skipping the lengths where every document has it, in a pass or two."""
    def make(name, seed, fires):
        rng = np.random.default_rng(seed)
        n_tokens = rng.integers(5, 400, 2000)
        columns = [np.flatnonzero(rng.random(2000) < 0.1) for _ in range(D)]
        columns[3] = fires(n_tokens)
        vectors = vectors_from_columns(2000, columns, rng)
        vectors.n_tokens = n_tokens.astype(np.int32)
        store = write_store(tmp_path / f"{name}.parquet", vectors, {"id": [f"{name}-{i}" for i in range(2000)],
                                                                     "text": ["word " * 12] * 2000}, fake_meta(D))
        return store, split(store, tmp_path / name.upper(), 4)

    (a, folder_a) = make("a", 1, lambda t: np.arange(len(t)))
    (b, folder_b) = make("b", 2, lambda t: np.flatnonzero(t > 60))
    config = DiffConfig(length="ignore", form=False)
    loaded = diff(load_store(a), load_store(b), config, names=["A", "B"], labels=NO_LABELS)
    streams = StoreStream(folder_a), StoreStream(folder_b)
    streamed = diff(*streams, config, names=["A", "B"], labels=NO_LABELS)
    assert_same_table(loaded.table, streamed.table, "latent")
    three = streamed.findings.filter(pl.col("latent") == 3).row(0, named=True)
    assert three["example_without_id"] is not None
    assert streams[1].passes <= 4, "counts, the findings' pass, one round of the contrast search"


def test_themes_of_many_findings_are_counted_sparse_and_equal(folders, monkeypatch):
    a, b, folder_a, folder_b = folders
    monkeypatch.setattr("saeembed.analysis.streamed.DENSE_FINDINGS", 1)  # as past 4,096 findings
    loaded = diff(load_store(a), load_store(b), names=["A", "B"], labels=NO_LABELS)
    streamed = diff(StoreStream(folder_a), StoreStream(folder_b), names=["A", "B"], labels=NO_LABELS)
    assert loaded.findings.height > 1
    assert loaded.table["theme"].to_list() == streamed.table["theme"].to_list()


@pytest.mark.parametrize("budget", [1 << 25, 0, 900], ids=["kept", "one latent a group", "groups"])
@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9, 1.0])
def test_latent_percentiles_of_a_streamed_store_are_exact(folders, quantile, budget, monkeypatch):
    from saeembed.analysis.concepts import activation_scale

    monkeypatch.setattr("saeembed.stream.KEPT_ENTRIES", budget)  # past it: read a group of latents at a time
    a, _, folder_a, _ = folders
    latents = np.arange(D)
    loaded = activation_scale(load_store(a), latents, quantile)
    streamed = activation_scale(StoreStream(folder_a), latents, quantile)
    np.testing.assert_array_equal(loaded, streamed)


def test_a_part_checked_once_is_not_read_again_to_open_the_store(folders, monkeypatch):
    _, _, folder_a, _ = folders
    first = StoreStream(folder_a)

    def refuse(*args, **kwargs):
        raise AssertionError("a part checked before, and unchanged since, was read again")

    monkeypatch.setattr("saeembed.stream._checked_part", refuse)
    again = StoreStream(folder_a)
    np.testing.assert_array_equal(again.n_tokens, first.n_tokens)
    np.testing.assert_array_equal(again.counts, first.counts)
    assert again.columns == first.columns and again.n_docs == first.n_docs


def test_a_part_changed_since_its_check_is_checked_again(folders, tmp_path):
    a, _, _, _ = folders
    folder = tmp_path / "changing"
    split(a, folder, 2)
    StoreStream(folder)
    part = sorted(folder.glob("*.parquet"))[1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # damaged after it was checked
    with pytest.raises(SaeEmbedError, match=part.name):
        StoreStream(folder)


def test_a_damaged_cache_of_checked_parts_is_read_past(folders):
    from saeembed.cache_root import default_cache_root

    _, _, folder_a, _ = folders
    first = StoreStream(folder_a)
    saved = sorted((default_cache_root() / "checked-parts").glob("*.npz"))
    assert saved, "the parts' checks were cached"
    for k, path in enumerate(saved):  # not a zip file; a zip file cut short
        path.write_bytes(b"not an npz file" if k % 2 else path.read_bytes()[:40])
    again = StoreStream(folder_a)
    np.testing.assert_array_equal(again.counts, first.counts)


def test_kept_columns_equal_the_loaded_stores_and_are_read_once(folders):
    from saeembed.store import column_entries

    a, _, folder_a, _ = folders
    matrix = load_store(a).matrix
    stream = StoreStream(folder_a)
    for latents in ([7, 3, 30], [3, 12], [12, 7, 3, 30]):  # the second and third only partly read before
        got, want = stream.column_entries(np.array(latents)), column_entries(matrix, np.array(latents))
        for mine, theirs in zip(got, want):
            np.testing.assert_array_equal(mine, theirs)
    assert stream.passes == 2, "latents already kept are not read again"
    with pytest.raises(ValueError, match="distinct"):
        stream.column_entries(np.array([3, 3]))


def test_a_query_reads_its_latents_from_the_parts_latent_indexes_not_their_matrices(folders, monkeypatch):
    from saeembed.store import column_entries

    a, _, folder_a, _ = folders
    StoreStream(folder_a).column_entries(np.array([3]))  # the first column asked for makes each part's index

    def refuse(*args, **kwargs):
        raise AssertionError("a part's matrix was read")

    monkeypatch.setattr("saeembed.stream.read_chunk", refuse)
    stream = StoreStream(folder_a)
    latents = np.array([7, 3, 30])
    for mine, theirs in zip(stream.column_entries(latents), column_entries(load_store(a).matrix, latents)):
        np.testing.assert_array_equal(mine, theirs)


def index_sources():
    from saeembed.cache_root import default_cache_root

    root = default_cache_root() / "latent-index"
    return sorted((entry / "source.txt").read_text() for entry in root.iterdir()) if root.exists() else []


def test_a_latent_index_is_made_again_when_its_part_changes_or_it_is_damaged(folders, tmp_path):
    from saeembed.cache_root import default_cache_root
    from saeembed.store import column_entries

    a, b, _, _ = folders
    folder, other = split(a, tmp_path / "changing", 2), split(b, tmp_path / "other", 2)
    latents = np.array([3, 4, 7])
    StoreStream(folder).column_entries(latents)
    (folder / "part-00001.parquet").write_bytes((other / "part-00001.parquet").read_bytes())  # another part now
    for mine, theirs in zip(StoreStream(folder).column_entries(latents),
                            column_entries(load_store(folder).matrix, latents)):
        np.testing.assert_array_equal(mine, theirs)
    ours = [entry for entry in (default_cache_root() / "latent-index").iterdir()
            if str(folder) in (entry / "source.txt").read_text()]
    assert len(ours) == 2
    for damage in ("cut short", "rows past the part's"):
        for entry in ours:
            rows = entry / "rows.npy"
            if damage == "cut short":
                rows.write_bytes(rows.read_bytes()[:100])
            else:  # loads as an index, but its rows are not the part's
                np.save(rows, np.full(len(np.load(entry / "values.npy")), 10**6, np.int32))
        for mine, theirs in zip(StoreStream(folder).column_entries(latents),
                                column_entries(load_store(folder).matrix, latents)):
            np.testing.assert_array_equal(mine, theirs)


def test_the_index_of_a_part_that_is_gone_is_removed(folders, tmp_path, monkeypatch):
    import shutil

    a, _, folder_a, _ = folders
    gone = split(a, tmp_path / "gone", 2)
    StoreStream(gone).column_entries(np.array([3]))
    assert sum(str(gone) in source for source in index_sources()) == 2
    shutil.rmtree(gone)
    monkeypatch.setattr("saeembed.stream._PRUNED", set())  # as in a later process: it prunes once
    StoreStream(folder_a).column_entries(np.array([3]))  # making another store's index prunes
    assert not any(str(gone) in source for source in index_sources())
    assert sum(str(folder_a) in source for source in index_sources()) == 3


def test_float16_values_are_kept_exactly_in_the_index(folders, tmp_path):
    import pyarrow as pa

    from saeembed.cache_root import default_cache_root
    from saeembed.store import column_entries

    a, _, _, _ = folders
    table = pq.read_table(a)
    half = table.set_column(table.schema.get_field_index("values"), "values",
                            table.column("values").cast(pa.list_(pa.float16())))
    single = tmp_path / "half.parquet"
    writer = StoreWriter(single, half.schema, read_meta(a))
    writer.write(half)
    writer.close()
    folder = split(single, tmp_path / "half", 3)
    latents = np.array([3, 7, 12])
    for mine, theirs in zip(StoreStream(folder).column_entries(latents),
                            column_entries(load_store(folder).matrix, latents)):
        np.testing.assert_array_equal(mine, theirs)
    entries = (default_cache_root() / "latent-index").iterdir()
    values = [np.load(entry / "values.npy", mmap_mode="r") for entry in entries
              if str(folder) in (entry / "source.txt").read_text()]
    assert len(values) == 3 and all(v.dtype == np.float16 for v in values)


def test_a_loaded_store_as_one_part_gives_the_columns_a_stream_gives(folders, monkeypatch):
    from saeembed.stream import OnePart

    a, _, folder_a, _ = folders
    latents = np.array([7, 3, 30])
    one, stream = OnePart(load_store(a)), StoreStream(folder_a)
    for mine, theirs in zip(one.column_values(latents), stream.column_values(latents)):
        np.testing.assert_array_equal(mine, theirs)

    def entries(groups):
        return sorted((row, int(latents[at[w]]), value) for at, (rows, which, values) in groups
                      for row, w, value in zip(rows.tolist(), which.tolist(), values.tolist()))

    monkeypatch.setattr("saeembed.stream.KEPT_ENTRIES", 50)  # the stream's in several groups
    assert len(list(stream.column_groups(latents))) > 1
    assert entries(one.column_groups(latents)) == entries(stream.column_groups(latents))
