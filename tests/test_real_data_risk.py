"""Risk probes and the scrambling check on real corpora with the offline default (slow)."""

import json

import numpy as np
import pytest

from saeembed.analysis.config import RiskConfig
from saeembed.analysis.risk import fit_risk
from saeembed.analysis.scramble import scramble_check
from saeembed.presets import embed_config
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")]


def test_halueval_qa_probe_beats_the_count_baseline(real_store):
    store = real_store("halueval/qa.jsonl")
    report = fit_risk(store, "hallucinated", RiskConfig(bootstrap=200), group="question_id")
    auroc = {row["features"]: row["auroc"] for row in report.table.iter_rows(named=True)}
    assert auroc["sae probe (l1)"] >= 0.70 and auroc["sae probe (l1)"] > auroc["concept counts only"]


def test_scrambling_raises_the_concept_count(tmp_path):
    with open(SHARED_DATA / "agnews" / "test.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(200), fh)]
    table = scramble_check(texts, embed_config(cache_dir=tmp_path / "cache"))
    per_document = table["active_latents"].to_numpy()
    assert (np.diff(per_document) > 0).all(), per_document
