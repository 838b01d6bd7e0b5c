"""The vectorised statistics against scipy's reference implementations and by simulated coverage."""

import numpy as np
import pytest
from scipy import stats as ref

from saeembed.analysis import stats


def test_wilson_matches_the_textbook_interval():
    low, high = stats.wilson(np.array([0, 5, 10]), 10)
    assert low[0] == 0 and high[0] == pytest.approx(0.2775, abs=1e-4)
    assert (low[1], high[1]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert high[2] == pytest.approx(1) and low[2] == pytest.approx(0.7225, abs=1e-4)


@pytest.mark.parametrize("ka,na,kb,nb", [(3, 20, 9, 25), (0, 30, 4, 30), (1, 5, 4, 6), (12, 40, 12, 40)])
def test_fisher_matches_scipy(ka, na, kb, nb):
    expected = ref.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue
    assert stats.fisher_two_sided(ka, na, kb, nb) == pytest.approx(expected, rel=1e-6)


def test_two_proportion_uses_fisher_for_small_counts_and_z_otherwise():
    p, exact = stats.two_proportion_p(np.array([1, 300]), 1000, np.array([6, 200]), 1000)
    assert exact.tolist() == [True, False]
    assert p[0] == pytest.approx(ref.fisher_exact([[1, 999], [6, 994]]).pvalue)
    z = (0.3 - 0.2) / np.sqrt(0.25 * 0.75 * 2 / 1000)
    assert p[1] == pytest.approx(2 * ref.norm.sf(z))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    p = stats.mcnemar_p(np.array([10, 0, 3]), np.array([2, 0, 3]))
    assert p[0] == pytest.approx(ref.binomtest(2, 12, 0.5).pvalue)
    assert p[1] == 1.0 and p[2] == 1.0


def test_benjamini_hochberg_matches_scipy_and_keeps_exact_q_for_the_smallest_p():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 1e-3, 20), rng.uniform(0, 1, 500)])
    q = stats.benjamini_hochberg(p)
    assert np.allclose(q, ref.false_discovery_control(p))
    smallest = np.sort(p)[:30]
    assert np.allclose(stats.benjamini_hochberg(smallest, m=len(p)), np.sort(q)[:30])


def test_welch_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1, 40), rng.normal(0.5, 2, 60)
    low, high, p = stats.welch(np.array([a.mean()]), np.array([a.var(ddof=1)]), 40,
                               np.array([b.mean()]), np.array([b.var(ddof=1)]), 60)
    result = ref.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval()
    assert p[0] == pytest.approx(result.pvalue) and (low[0], high[0]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_hypergeometric_tail():
    assert stats.hypergeom_sf(np.array([5]), 100, np.array([10]), np.array([20]))[0] == \
        pytest.approx(ref.hypergeom.sf(4, 100, 10, 20))


@pytest.mark.parametrize("paired", [False, True])
def test_newcombe_intervals_cover_the_true_difference_95_percent_of_the_time(paired):
    rng = np.random.default_rng(2)
    n, trials, pa, pb = 80, 4000, 0.35, 0.2
    if paired:  # correlated pairs: B has the latent mostly when A has it
        a = rng.random((trials, n)) < pa
        b = np.where(a, rng.random((trials, n)) < 0.45, rng.random((trials, n)) < (pb - pa * 0.45) / (1 - pa))
        both, a_only, b_only = (a & b).sum(1), (a & ~b).sum(1), (~a & b).sum(1)
        low, high = stats.newcombe_paired(both, a_only, b_only, n)
    else:
        ka, kb = rng.binomial(n, pa, trials), rng.binomial(n, pb, trials)
        low, high = stats.newcombe_unpaired(ka, n, kb, n)
    coverage = np.mean((low <= pa - pb) & (pa - pb <= high))
    assert 0.93 <= coverage <= 0.975, coverage


def test_mantel_haenszel_with_one_stratum_is_the_plain_comparison():
    ka, na, kb, nb = 30, 100, 15, 120
    low, high, p, diff = stats.mantel_haenszel(*(np.array([[v]]) for v in (ka, na, kb, nb)))
    assert diff[0] == pytest.approx(ka / na - kb / nb)
    table = [[ka, na - ka], [kb, nb - kb]]
    pearson = ref.chi2_contingency(table, correction=True).statistic
    n = na + nb
    assert p[0] == pytest.approx(ref.chi2.sf(pearson * (n - 1) / n, 1))  # CMH uses the hypergeometric variance
    assert low[0] < diff[0] < high[0]


def test_mantel_haenszel_removes_a_confounder():
    """Within each stratum A and B fire alike; A is mostly in the high-rate stratum."""
    ka, na = np.array([[5], [80]]), np.array([[50], [100]])
    kb, nb = np.array([[10], [16]]), np.array([[100], [20]])
    low, high, p, diff = stats.mantel_haenszel(ka, na, kb, nb)
    assert abs(diff[0]) < 0.02 and p[0] > 0.5 and low[0] < 0 < high[0]
    assert ka.sum() / na.sum() - kb.sum() / nb.sum() > 0.3, "unstratified, the difference looks large"
