"""The meaning harness's own statistics (benchmarks/meaning.py): the interval around the AUROC gain over
length, and the paired comparison of two search rankings' per-query AP."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import meaning  # noqa: E402  (the harness is a script folder, not a package)


def _answers(n: int, signal: float, seed: int = 0):
    """Two answers per prompt (y 1 and 0), a length score that tells them apart somewhat, and a score that adds
    `signal` on top of it."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n), np.zeros(n)]
    groups = np.r_[np.arange(n), np.arange(n)]
    length = 0.5 * y + rng.normal(size=2 * n)
    return y, groups, length, length + signal * y + rng.normal(scale=0.3, size=2 * n)


def test_the_gain_interval_holds_the_gain_and_is_zero_for_no_gain():
    y, groups, length, with_findings = _answers(400, 0.5)
    gain = meaning.auroc(y, with_findings) - meaning.auroc(y, length)
    low, high = meaning.gain_interval(y, with_findings, length, groups, rounds=300)
    assert low < gain < high and low > 0.02
    assert meaning.gain_interval(y, length, length, groups, rounds=50) == [0.0, 0.0]


def test_the_gain_interval_narrows_with_more_prompts():
    widths = []
    for n in (100, 1600):
        y, groups, length, with_findings = _answers(n, 0.3, seed=n)
        low, high = meaning.gain_interval(y, with_findings, length, groups, rounds=300)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_paired_map_difference_counts_queries_and_brackets_the_mean():
    first, second = [0.5, 0.6, 0.7, 0.4, 0.9], [0.45, 0.62, 0.6, 0.41, 0.5]
    out = meaning.paired_map_difference(first, second, rounds=2000)
    assert out["difference"] == pytest.approx(np.mean(np.subtract(first, second)), abs=1e-3)
    assert out["interval"][0] <= out["difference"] <= out["interval"][1]
    assert (out["queries_better"], out["queries_worse"]) == (3, 2)
    assert 0 < out["wilcoxon_p"] <= 1
    assert meaning.paired_map_difference([0.3, 0.4], [0.3, 0.4])["wilcoxon_p"] == 1.0
