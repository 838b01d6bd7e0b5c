"""diff and correlations on real corpora from ../shared/data with the offline default (slow: each
corpus is embedded once per session with MiniLM + the shipped SAE, a minute or two on a laptop CPU)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.associations import associations
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.embedding.open_store import open_store
from saeembed.embedding.presets import embed_config
from tests.conftest import SHARED_DATA as DATA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.exists(), reason="../shared/data is absent")]


def test_null_control_random_halves_of_one_corpus(real_store):
    """20 random half-splits of 2,000 agnews documents: at most two may report any finding."""
    store = real_store("agnews/test.jsonl", head=2000)
    rng = np.random.default_rng(0)
    with_findings = 0
    for _ in range(20):
        rows = rng.permutation(store.n_docs)
        half = store.n_docs // 2
        result = diff(store.take(np.sort(rows[:half])), store.take(np.sort(rows[half:])),
                      DiffConfig(examples=False))
        with_findings += bool(len(result.findings))
    assert with_findings <= 2


def test_concise_vs_verbose_is_reported_as_a_length_gap_not_hundreds_of_concepts(real_store):
    """The same model told to be concise or verbose, paired on the prompt: verbose answers are twice as
    long. That is the finding, in words; at equal length few concepts differ (before the length handling
    and the document-level default: 4,032 'findings', all 'more in verbose')."""
    concise = real_store("alpacaeval/gpt4_1106_preview_concise.jsonl")
    verbose = real_store("alpacaeval/gpt4_1106_preview_verbose.jsonl")
    result = diff(verbose, concise, DiffConfig(pair_on="prompt_id", holdout=0.5))
    assert result.length.ratio > 1.8 and "2.07x longer" in result.length.sentence
    assert len(result.findings) <= 300


def test_the_same_text_packaged_two_ways_differs_in_nothing(real_store):
    """600 agnews items as they are vs 600 documents that each join two others: the same content, so
    (almost) nothing may differ; the per-token default of before reported 3,245 latents."""
    rows = real_store("agnews/test.jsonl", head=1800)
    single = rows.take(np.arange(600))
    texts = rows.frame["text"].to_list()
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        joined_path = Path(tmp) / "joined.jsonl"
        joined_path.write_text("".join(json.dumps({"text": texts[600 + 2 * i] + " " + texts[601 + 2 * i]}) + "\n"
                                       for i in range(600)))
        joined = open_store(joined_path, embed_config(cache_dir=Path(tmp) / "cache"))
    result = diff(single, joined, DiffConfig(examples=False))
    assert result.length.ratio < 0.6, "the joined documents are about twice as long"
    assert len(result.findings) <= 5


def test_sarcastic_tweets_vs_their_authors_rephrasings():
    """The bundled examples (iSarcasmEval pairs): findings that replicate on held-out pairs."""
    sarcastic, plain = (open_store(EXAMPLES / name, embed_config()) for name in ("sarcastic.jsonl", "rephrased.jsonl"))
    result = diff(sarcastic, plain, DiffConfig(pair_on="pair_id", holdout=0.5))
    assert len(result.findings) >= 5 and result.replication_rate >= 0.7
    assert result.findings["example_with"].str.contains("<<").all()


def test_topic_column_associations_on_news(real_store):
    """correlations --with topic: each agnews topic has latents enriched in its documents."""
    store = real_store("agnews/test.jsonl", head=2000)
    result = associations(store, "topic")
    assert result.kind == "categorical"
    assert set(result.table["value"]) == {"World", "Sports", "Business", "Sci/Tech"}
    sports = result.table.filter(pl.col("value") == "Sports").head(10)
    assert (sports["freq_in_value"] > 2 * sports["freq_elsewhere"]).all()
