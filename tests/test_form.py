"""The form layer of diff: features counted in the text, tested like latents, on corpora whose form
differences are planted, and on splits and repackagings where there is none."""

import dataclasses
import json
import os

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.app import app
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.analysis.form import FEATURES, form_features, frequent_openings
from saeembed.labels import Labels
from saeembed.store import load_store
from saeembed.synthetic import fake_meta, random_columns, vectors_from_columns, write_store

D = 20
NO_LABELS = Labels(D, {}, {}, {})
# 100 examples per property keep the file fast; SAEEMBED_FUZZ_EXAMPLES=2000 searches deeper
EXAMPLES = int(os.environ.get("SAEEMBED_FUZZ_EXAMPLES", "100"))
WORDS = "the model answers each question with care and some detail about the topic at hand".split()


def sentence(rng: np.random.Generator, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS, n)).capitalize() + "."


def store_of(path, texts: list[str], seed: int = 0, fields: dict | None = None):
    """A store of `texts` whose latents are noise (no content difference) and n_tokens their word count."""
    rng = np.random.default_rng(seed)
    vectors = vectors_from_columns(len(texts), random_columns(len(texts), np.full(D, 0.2), rng), rng,
                                   text_length=min(len(t) for t in texts))
    vectors.n_tokens = np.array([max(len(t.split()), 1) for t in texts], np.int32)
    write_store(path, vectors, {"text": texts, **(fields or {})}, fake_meta(D))
    return load_store(path)


def test_each_feature_counts_what_it_names():
    texts = ["Sure! Here is a list:\n\n- one\n- two with **bold**\n\n1. first\n2) second",
             "I'm sorry, but I cannot help with that. As an AI language model I may not know.",
             "# Title\n\n```python\nx = 1\n```\nSee https://example.org or `x` — fine...",
             "| a | b |\n|---|---|\n| 1 | 2 |\nIt's important to note this? Really?",
             "@someone loves #tags 😅 (yes) \"quoted\" NASA you"]
    features = form_features([texts])
    counts = dict(zip(features.names, features.counts[0].toarray().T))
    expect = {"bullet list": [2, 0, 0, 0, 0], "numbered list": [2, 0, 0, 0, 0], "bold": [1, 0, 0, 0, 0],
              "exclamation mark": [1, 0, 0, 0, 0], "apology": [0, 1, 0, 0, 0], "refusal": [0, 1, 0, 0, 0],
              "AI self-reference": [0, 1, 0, 0, 0], "hedge": [0, 1, 0, 0, 0], "heading": [0, 0, 1, 0, 0],
              "code block": [0, 0, 1, 0, 0], "link": [0, 0, 1, 0, 0], "inline code": [0, 0, 1, 0, 0],
              "em dash": [0, 0, 1, 0, 0], "ellipsis": [0, 0, 1, 0, 0], "table": [0, 0, 0, 3, 0],
              "question mark": [0, 0, 0, 2, 0], "disclaimer": [0, 0, 0, 1, 0], "ends with ?": [0, 0, 0, 1, 0],
              "mention": [0, 0, 0, 0, 1], "hashtag": [0, 0, 0, 0, 1], "emoji": [0, 0, 0, 0, 1],
              "parentheses": [0, 0, 0, 0, 1], "quotation": [0, 0, 0, 0, 1], "all caps word": [0, 0, 0, 0, 1],
              "second person": [0, 0, 0, 0, 1], "ends with .": [0, 1, 0, 0, 0]}
    for name, values in expect.items():
        assert counts[name].tolist() == values, name


def test_openings_are_found_in_the_data_and_kept_only_when_they_say_more():
    rng = np.random.default_rng(0)
    a = [f"Sure, {sentence(rng)}" for _ in range(30)] + [sentence(rng) for _ in range(70)]
    b = [f"Certainly! Here is {sentence(rng)}" for _ in range(40)] + [sentence(rng) for _ in range(60)]
    openings = dict(frequent_openings([a, b]))
    assert "Sure" in openings and "Certainly" in openings
    assert "Certainly Here" not in openings, "every Certainly opens Certainly Here: the pair says nothing more"


@pytest.fixture
def models(tmp_path):
    """Two models' answers to the same 300 prompts: A answers with bullet lists and ends with '!', B in
    prose of the same length; otherwise the same words."""
    rng = np.random.default_rng(1)
    a, b = [], []
    for i in range(300):
        body = [sentence(rng, 8) for _ in range(3)]
        if i % 3:  # two thirds of A's answers are lists
            a.append("Here you go:\n" + "\n".join(f"- {s}" for s in body) + (" Great!" if i % 2 else ""))
        else:
            a.append("Here you go: " + " ".join(body) + (" Great!" if i % 2 else ""))
        b.append("Here you go: " + " ".join(body))
    ids = list(range(300))
    return (store_of(tmp_path / "a.parquet", a, 1, {"prompt_id": ids}),
            store_of(tmp_path / "b.parquet", b, 2, {"prompt_id": ids}))


@pytest.mark.parametrize("pair_on", [None, "prompt_id"])
def test_planted_form_differences_are_found_with_their_direction(models, pair_on):
    result = diff(*models, DiffConfig(pair_on=pair_on, holdout=0.5), names=["a", "b"], labels=NO_LABELS)
    found = result.form_findings
    assert {"bullet list", "exclamation mark", "ends with !"} <= set(found["feature"]), found["feature"].to_list()
    assert set(found.filter(pl.col("more_in") == "b")["feature"]) <= {"ends with .", "paragraph break"}
    row = found.filter(pl.col("feature") == "bullet list").row(0, named=True)
    assert row["share_a"] == pytest.approx(2 / 3, abs=0.06) and row["share_b"] == 0
    assert row["rate_a"] > row["rate_b"] == 0 and row["ci_low"] > 0 and row["q"] < 1e-6
    assert "<<- >>" in row["example_with"] and "- " not in row["example_without"]
    assert result.form_replication_rate >= 0.75
    assert result.n_findings == len(result.findings) + len(found)


def test_length_ignore_compares_shares_as_counted(models):
    result = diff(*models, DiffConfig(length="ignore"), labels=NO_LABELS)
    row = result.form_findings.filter(pl.col("feature") == "bullet list").row(0, named=True)
    assert row["rate_a"] is None and row["unit"] == "share of documents"
    assert row["diff"] == pytest.approx(row["share_a"] - row["share_b"])


def test_random_halves_and_repackaging_give_no_form_finding(tmp_path):
    """Counted features are compared as rates per token: the same text, split at random or joined two
    documents to one, is not written differently."""
    rng = np.random.default_rng(3)
    texts = []
    for i in range(800):
        text = sentence(rng, int(rng.integers(5, 30)))
        if i % 4 == 0:
            text += " Is it? Yes!"
        if i % 5 == 0:
            text = "- " + text + "\n- " + sentence(rng, 5)
        texts.append(text)
    order = rng.permutation(800)
    halves = [[texts[i] for i in order[:400]], [texts[i] for i in order[400:]]]
    result = diff(store_of(tmp_path / "h1.parquet", halves[0]), store_of(tmp_path / "h2.parquet", halves[1], 1),
                  labels=NO_LABELS)
    assert len(result.form_findings) == 0, result.form_findings["feature"].to_list()
    single = texts[:300]
    joined = [texts[300 + 2 * i] + "\n" + texts[301 + 2 * i] for i in range(250)]
    result = diff(store_of(tmp_path / "s.parquet", single), store_of(tmp_path / "j.parquet", joined, 1),
                  labels=NO_LABELS)
    counted = result.form_findings.filter(~pl.col("feature").str.starts_with("opens with")
                                          & ~pl.col("feature").str.starts_with("ends with"))
    assert len(counted) == 0, counted["feature"].to_list()


def test_cli_shows_the_form_layer_and_json_marks_each_layer(models, tmp_path):
    a, b = (str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"))
    runner = CliRunner()
    out = runner.invoke(app, ["diff", a, b, "--pair-on", "prompt_id"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "Form (counted in the text)" in text and "bullet list" in text and "What it is about" in text
    assert not out.stdout.startswith("\n")
    out = runner.invoke(app, ["diff", a, b, "--pair-on", "prompt_id", "--json"])
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records[0]["type"] == "summary" and records[0]["n_form_findings"] >= 3
    assert {r["layer"] for r in records[1:]} <= {"form", "content"}
    assert any(r["layer"] == "form" and r["feature"] == "bullet list" for r in records[1:])
    table = tmp_path / "rows.csv"
    out = runner.invoke(app, ["diff", a, b, "-o", str(table), "-q"])
    assert out.exit_code == 0, out.output
    assert "form" in set(pl.read_csv(table)["layer"])


def test_chats_pooled_on_one_role_are_counted_on_that_role_alone(tmp_path):
    """A chat store embedded with pool_roles counts the pooled turns only: the same prompts on both sides,
    one side's prompts full of '?' and '!' (as the rendered text shows), the answers alike: no finding."""
    rng = np.random.default_rng(5)

    def chats(path, loud: bool, seed: int, roles: tuple[str, ...] | None = ("assistant",)):
        answers = [sentence(rng, int(rng.integers(8, 20))) + "." for _ in range(300)]
        prompts = [sentence(rng, 6) + (" Why? Now! Really?!" if loud else ".") for _ in answers]
        messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                    for p, a in zip(prompts, answers)]
        rendered = [f"user: {p}\nassistant: {a}" for p, a in zip(prompts, answers)]
        generator = np.random.default_rng(seed)
        vectors = vectors_from_columns(300, random_columns(300, np.full(D, 0.2), generator), generator, 10)
        vectors.n_tokens = np.array([len(a.split()) for a in answers], np.int32)
        meta = fake_meta(D, pool_roles=list(roles) if roles else None)
        write_store(path, vectors, {"text": rendered, "messages": messages}, meta)
        return load_store(path)

    from saeembed.analysis.form import counted_texts

    quiet, loud = chats(tmp_path / "quiet.parquet", False, 0), chats(tmp_path / "loud.parquet", True, 1)
    assert counted_texts(loud)[0] == loud.frame["messages"][0][1]["content"], "the assistant's turn alone"
    result = diff(quiet, loud, labels=NO_LABELS)
    assert len(result.form_findings) == 0, result.form_findings["feature"].to_list()
    # the control: the same conversations pooled whole (no pool_roles) differ by the prompts' marks
    whole = diff(chats(tmp_path / "quiet-whole.parquet", False, 0, None),
                 chats(tmp_path / "loud-whole.parquet", True, 1, None), labels=NO_LABELS)
    assert {"question mark", "exclamation mark"} <= set(whole.form_findings["feature"].to_list())


# Characters the features are made of, and others, so random texts hit every pattern now and then.
_FORM_ALPHABET = (" \n\t-*+#_`|()[]\"'.!?:,;@&/=0123456789 aeimnoprstuwyhlgcAIMSTY" + "•—“”…’é😀")


_ASCII = "".join(c for c in _FORM_ALPHABET + "bdfjkqvxzBDEFGHJKLNOPQRUVWXZ" if c.isascii())


@pytest.mark.parametrize("name", list(FEATURES))
def test_a_pattern_never_matches_an_ascii_text_without_the_characters_it_needs(name):
    # The counter skips a pattern in an ASCII text that lacks its `needs`; that is exact only if this holds.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    feature = FEATURES[name]
    words = st.sampled_from(["I", "me", "my", "you", "sorry", "apologies", "cannot", "as an AI", "language model",
                             "might", "often", "tends to", "please note", "consult a", "in summary", "overall,",
                             "http://a.b", "www.x", "[a](b)", "**b**", "__b__", "```", "`c`", "| a |", "ABC",
                             "#tag", "@name", "1.", "3,5", "...", "(x)", '"q"'])
    text = st.lists(st.one_of(words, st.text(_ASCII, max_size=6)), max_size=12).map(" ".join)

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(text)
    def check(raw):
        stripped = "".join(c for c in raw if c not in feature.needs)
        assert not feature.pattern.search(stripped), (name, stripped)

    check()


def test_skipping_patterns_counts_what_counting_every_pattern_counts():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    texts = st.lists(st.text(_FORM_ALPHABET, max_size=40), min_size=1, max_size=8)

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(texts)
    def check(batch):
        counted = form_features([batch]).counts[0].toarray()
        for row, text in enumerate(batch):
            every = [len(feature.pattern.findall(text)) for feature in FEATURES.values()]
            assert counted[row, : len(FEATURES)].tolist() == every, text

    check()


# Openings that repeat (so they become features), some with letters whose lowercase is not one character.
_OPENINGS = ["Sure", "sure,", "SURE!", "Certainly", "İstanbul is", "Straße", "ǅemal", "The answer", "", "  - item"]


def _stored_source(texts):
    import pyarrow as pa

    from saeembed.analysis.form import _Stored
    from saeembed.form_counts import form_meta, stored_columns, stored_form

    form = stored_form(pa.table(stored_columns(texts)), {"form": form_meta()})
    assert form is not None
    return _Stored(form)


def assert_same_features(got, want):
    assert got.names == want.names and got.descriptions == want.descriptions
    for g, w in zip(got.counts, want.counts):
        assert g.shape == w.shape and (g != w).nnz == 0


def test_form_counts_stored_with_the_texts_equal_counting_the_texts():
    """What embed stores (each text's counts and first words) gives the form layer what the texts give, one
    corpus stored and the other counted too."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.tuples(st.sampled_from(_OPENINGS), st.text(_FORM_ALPHABET, max_size=30)).map(" ".join)
    corpora = st.tuples(st.lists(text, min_size=1, max_size=40), st.lists(text, min_size=1, max_size=40))

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(corpora)
    def check(pair):
        a, b = pair
        want = form_features([a, b])
        assert_same_features(form_features([_stored_source(a), _stored_source(b)]), want)
        assert_same_features(form_features([_stored_source(a), b]), want)

    check()


def test_a_diff_of_stores_with_form_counts_reads_them_not_the_texts(tmp_path, monkeypatch):
    from saeembed.form_counts import FeatureCounter

    rng = np.random.default_rng(3)
    texts_a = [("Sure! " if i % 3 else "") + sentence(rng) + ("\n- a\n- b" if i % 2 else "") for i in range(200)]
    texts_b = [sentence(rng) + ("!" if i % 4 == 0 else "") for i in range(200)]
    stores = [store_of(tmp_path / f"{name}.parquet", texts) for name, texts in (("a", texts_a), ("b", texts_b))]
    assert all(s.form is not None for s in stores)
    counted = diff(*(dataclasses.replace(s, form=None) for s in stores), labels=NO_LABELS)

    def refuse(self, texts):
        raise AssertionError("counted the texts")

    monkeypatch.setattr(FeatureCounter, "__call__", refuse)
    stored = diff(*stores, labels=NO_LABELS)
    assert stored.form_findings.height >= 2
    assert counted.form.equals(stored.form)


def test_form_counts_that_cannot_stand_for_the_texts_are_counted_again(tmp_path):
    """Counted with another feature set, of another type, or with a missing cell: the texts are counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from saeembed.form_counts import form_meta, stored_columns, stored_form

    texts = ["Sure, a list:\n- one", "No.", "Sure!"]
    table = pa.table(stored_columns(texts))
    meta = {"form": form_meta()}
    assert stored_form(table, meta) is not None
    assert stored_form(table, {"form": {"fingerprint": "another"}}) is None
    assert stored_form(table, {}) is None
    assert stored_form(table.drop_columns(["openings"]), meta) is None
    as_int64 = table.set_column(0, "form_counts", table.column("form_counts").cast(pa.list_(pa.int64())))
    assert stored_form(as_int64, meta) is None
    with_null = table.set_column(1, "openings", pa.array([["Sure"], None, ["Sure"]], pa.list_(pa.string())))
    assert stored_form(with_null, meta) is None
    null_inside = table.set_column(1, "openings", pa.array([["Sure"], [None], ["Sure"]], pa.list_(pa.string())))
    assert stored_form(null_inside, meta) is None
    # a store whose form columns were counted otherwise loads with none, and its diff counts the texts
    path = store_of(tmp_path / "s.parquet", texts * 4).path
    written = pq.read_table(path)
    meta_raw = json.loads(written.schema.metadata[b"saeembed"])
    meta_raw["form"]["fingerprint"] = "counted by another version"
    pq.write_table(written.replace_schema_metadata({b"saeembed": json.dumps(meta_raw)}), tmp_path / "old.parquet")
    old = load_store(tmp_path / "old.parquet")
    assert old.form is None and "form_counts" not in old.frame.columns
    stored = load_store(path)
    assert diff(old, stored, labels=NO_LABELS).form.equals(
        diff(dataclasses.replace(old, form=None), dataclasses.replace(stored, form=None), labels=NO_LABELS).form)


def test_a_store_written_before_form_counts_diffs_as_before(tmp_path):
    rng = np.random.default_rng(4)
    texts = [[("Certainly. " if i % 2 else "") + sentence(rng) + ("?" * (k + i % 2)) for i in range(150)]
             for k in range(2)]
    stores = []
    for k, form in ((0, False), (1, True)):
        vectors = vectors_from_columns(150, random_columns(150, np.full(D, 0.2), rng), rng, text_length=20)
        vectors.n_tokens = np.full(150, 12, np.int32)
        write_store(tmp_path / f"{k}.parquet", vectors, {"text": texts[k]}, fake_meta(D), form=form)
        stores.append(load_store(tmp_path / f"{k}.parquet"))
    assert stores[0].form is None and stores[1].form is not None
    mixed = diff(*stores, labels=NO_LABELS)
    counted = diff(stores[0], dataclasses.replace(stores[1], form=None), labels=NO_LABELS)
    assert mixed.form.equals(counted.form)
    assert "question mark" in mixed.form_findings["feature"].to_list()


def test_an_older_stores_field_named_like_a_form_column_stays_a_field(tmp_path):
    from saeembed.stream import StoreStream

    rng = np.random.default_rng(6)
    vectors = vectors_from_columns(3, random_columns(3, np.full(D, 0.5), rng), rng, text_length=10)
    path = write_store(tmp_path / "old.parquet", vectors, {"text": ["a text here"] * 3, "openings": ["x", "y", "z"]},
                       fake_meta(D), form=False)  # written before form columns: no `form` in its metadata
    store = load_store(path)
    assert store.frame["openings"].to_list() == ["x", "y", "z"] and store.form is None
    assert StoreStream(path).fetch(np.array([2])).frame["openings"].to_list() == ["z"]
