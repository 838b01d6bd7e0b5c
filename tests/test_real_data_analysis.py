"""diff and correlations on real corpora from ../shared/data with the offline default (slow: each
corpus is embedded once per session with MiniLM + the shipped SAE, a minute or two on a laptop CPU)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.associations import associations
from saeembed.analysis.config import DiffConfig
from saeembed.analysis.diff import diff
from saeembed.presets import embed_config
from saeembed.sources import open_store
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


def test_concise_vs_verbose_answers_of_one_model(real_store):
    """Known difference: the same model told to be concise or verbose, paired on the prompt."""
    concise = real_store("alpacaeval/gpt4_1106_preview_concise.jsonl")
    verbose = real_store("alpacaeval/gpt4_1106_preview_verbose.jsonl")
    result = diff(verbose, concise, DiffConfig(pair_on="prompt_id", holdout=0.5))
    assert len(result.findings) >= 20
    assert result.replication_rate >= 0.8
    more_in_verbose = result.findings.filter(pl.col("diff") > 0)
    assert len(more_in_verbose) > len(result.findings) - len(more_in_verbose), "verbose answers say more"
    # Verbose answers are twice as long: compared at equal length, far fewer latents differ.
    adjusted = diff(verbose, concise, DiffConfig(length_bands=10))
    assert 0 < len(adjusted.findings) < len(result.findings) / 4


def test_sarcastic_tweets_vs_their_authors_rephrasings():
    """The bundled examples (iSarcasmEval pairs): findings that replicate on held-out pairs."""
    sarcastic, plain = (open_store(EXAMPLES / name, embed_config()) for name in ("sarcastic.jsonl", "rephrased.jsonl"))
    result = diff(sarcastic, plain, DiffConfig(pair_on="pair_id", holdout=0.5))
    assert len(result.findings) >= 20 and result.replication_rate >= 0.6
    assert result.findings["example_with"].str.contains("<<").all()


def test_topic_column_associations_on_news(real_store):
    """correlations --with topic: each agnews topic has latents enriched in its documents."""
    store = real_store("agnews/test.jsonl", head=2000)
    result = associations(store, "topic")
    assert result.kind == "categorical"
    assert set(result.table["value"]) == {"World", "Sports", "Business", "Sci/Tech"}
    sports = result.table.filter(pl.col("value") == "Sports").head(10)
    assert (sports["freq_in_value"] > 2 * sports["freq_elsewhere"]).all()
