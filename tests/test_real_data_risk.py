"""Risk probes and the scrambling check on real corpora with the offline default (slow)."""

import json

import numpy as np
import pytest

from saeembed.analysis.config import RiskConfig
from saeembed.analysis.risk import fit_risk
from saeembed.analysis.scramble import scramble_check
from saeembed.embedding.presets import TOKENS, embed_config
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")]


def test_halueval_qa_probe_beats_the_count_baseline(real_store):
    store = real_store("halueval/qa.jsonl")
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=200), group="question_id")
    auroc = {row["features"]: row["auroc"] for row in report.table.iter_rows(named=True)}
    assert auroc["sae probe (l1)"] >= 0.70 and auroc["sae probe (l1)"] > auroc["concept counts only"]
    # HaluEval QA's hallucinated answers are full sentences, the right ones short spans: answer shape
    # alone separates them, and the report must say the probe does not beat that.
    assert auroc["surface form"] > 0.9 and auroc["length only"] > 0.6
    assert any("surface form" in warning for warning in report.warnings)


@pytest.fixture(scope="module")
def news_texts() -> list[str]:
    with open(SHARED_DATA / "agnews" / "test.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(200), fh)]


def test_scrambling_raises_the_per_token_concept_count(news_texts, tmp_path):
    """The paper's check on a per-token SAE: scrambled n-grams fire more concepts per document."""
    table = scramble_check(news_texts, embed_config(TOKENS, cache_dir=tmp_path / "cache"))
    per_document = table["active_latents"].to_numpy()
    assert (np.diff(per_document) > 0).all(), per_document


def test_scrambling_moves_a_document_sae_away_from_the_original_code(news_texts, tmp_path):
    table = scramble_check(news_texts, embed_config(cache_dir=tmp_path / "cache"))
    overlap = table["overlap"].to_numpy()
    assert overlap[0] == 1.0 and (np.diff(overlap) < 0).all(), overlap
    assert (table["active_latents"].to_numpy() == 32).all()
