"""Aggregate statistics against values computed by hand on small arrays."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from metaconstraint import stats


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    assert stats.iqm([30.0, 0, 1, 2, 3, 10, 20, 0]) == pytest.approx(4.0)  # sorted, 2 cut each end: mean(1, 2, 3, 10)
    assert stats.iqm(np.arange(12.0)) == pytest.approx(5.5)  # 3 cut each end: mean(3..8)
    assert stats.iqm([[1.0, 2, 3, 4], [5, 6, 7, 8]], axis=-1) == pytest.approx([2.5, 6.5])


def test_probability_of_improvement_counts_ties_as_half():
    # dataset 1: x=[1,2,3] vs y=[2,2] -> (0+0) + (.5+.5) + (1+1) = 3 of 6 pairs
    assert stats.probability_of_improvement([[1, 2, 3]], [[2, 2]]) == pytest.approx(0.5)
    # dataset 2: x=[3,4] vs y=[1,3,5] -> 1 + .5 + 0 + 1 + 1 + 0 = 3.5 of 6 pairs
    assert stats.probability_of_improvement([[3, 4]], [[1, 3, 5]]) == pytest.approx(7 / 12)
    # averaged over datasets, each weighted equally
    both = stats.probability_of_improvement([[1, 2, 3], [3, 4]], [[2, 2], [1, 3, 5]])
    assert both == pytest.approx((0.5 + 7 / 12) / 2)
    # the same as the Mann-Whitney U statistic over n * m
    u = scipy_stats.mannwhitneyu([3, 4], [1, 3, 5]).statistic
    assert u / 6 == pytest.approx(7 / 12)
    assert stats.probability_of_improvement([[5, 6]], [[1, 2]]) == 1.0
    assert stats.probability_of_improvement([[1, 2]], [[5, 6]]) == 0.0


def test_probability_of_improvement_needs_matching_datasets():
    with pytest.raises(ValueError):
        stats.probability_of_improvement([[1.0], [2.0]], [[1.0]])
    with pytest.raises(ValueError):
        stats.probability_of_improvement([[]], [[1.0]])


def test_performance_profile_averages_fractions_over_datasets():
    strata = [np.array([0.0, 10, 20, 30]), np.array([5.0, 50])]
    profile = stats.performance_profile(strata, np.array([-1.0, 10, 15, 25, 60]))
    # strictly above tau; each dataset weighs the same
    assert profile == pytest.approx([1.0, (2 / 4 + 1 / 2) / 2, (2 / 4 + 1 / 2) / 2, (1 / 4 + 1 / 2) / 2, 0.0])


def test_stratified_bootstrap_keeps_each_datasets_count_and_values():
    strata = [np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0])]
    resampled = stats.stratified_bootstrap(strata, 500, np.random.default_rng(0))
    assert [r.shape for r in resampled] == [(500, 3), (500, 2)]
    assert set(np.unique(resampled[0])) <= {1.0, 2.0, 3.0}
    assert set(np.unique(resampled[1])) <= {100.0, 200.0}
    # it does resample (with replacement): some rows repeat a run
    assert any(len(set(row)) < 3 for row in resampled[0])


def test_stratification_removes_between_dataset_variation():
    # Every run of dataset A scores 0 and of B scores 10: any stratified resample has mean exactly 5,
    # while resampling the 10 pooled runs would not keep the 5/5 split.
    interval = stats.interval_estimate([np.zeros(5), np.full(5, 10.0)], stats.mean, reps=300, seed=1)
    assert (interval.point, interval.low, interval.high) == (5.0, 5.0, 5.0)


def test_bootstrap_interval_of_a_mean_matches_the_normal_interval():
    sample = np.random.default_rng(3).normal(2.0, 1.0, size=400)
    interval = stats.interval_estimate([sample], stats.mean, reps=4000, seed=0)
    half_width = 1.96 * sample.std() / np.sqrt(sample.size)
    assert interval.point == pytest.approx(sample.mean())
    assert interval.low == pytest.approx(sample.mean() - half_width, abs=0.15 * half_width)
    assert interval.high == pytest.approx(sample.mean() + half_width, abs=0.15 * half_width)


def test_intervals_contain_the_point_and_are_reproducible():
    rng = np.random.default_rng(7)
    strata = [rng.normal(50, 20, size=3), rng.normal(80, 10, size=3), rng.normal(10, 5, size=4)]
    for statistic in (stats.iqm, stats.mean):
        a = stats.interval_estimate(strata, statistic, reps=2000, seed=11)
        b = stats.interval_estimate(strata, statistic, reps=2000, seed=11)
        c = stats.interval_estimate(strata, statistic, reps=2000, seed=12)
        assert a == b
        assert a != c
        assert a.low <= a.point <= a.high and a.low < a.high
    x, y = strata, [s - 5 for s in strata]
    p = stats.probability_of_improvement_interval(x, y, reps=2000, seed=5)
    assert p == stats.probability_of_improvement_interval(x, y, reps=2000, seed=5)
    assert p.point == pytest.approx(stats.probability_of_improvement(x, y))
    assert 0 <= p.low <= p.point <= p.high <= 1


def test_performance_profile_band_contains_the_profile():
    strata = [np.array([0.0, 10, 20, 30]), np.array([5.0, 50, 70])]
    taus = np.linspace(-5, 75, 17)
    profile, low, high = stats.performance_profile_bands(strata, taus, reps=1000, seed=0)
    assert profile == pytest.approx(stats.performance_profile(strata, taus))
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)
    assert profile[0] == 1.0 and profile[-1] == 0.0 and np.all(np.diff(profile) <= 0)


def test_aggregate_over_a_grid():
    scores = {
        "aspc": {"a": [10.0, 12.0, 14.0], "b": [60.0, 70.0, 80.0]},
        "td3bc": {"a": [5.0, 6.0, 7.0], "b": [60.0, 61.0]},
        "bc": {"a": [], "b": []},
    }
    result = stats.aggregate(scores, reps=500, seed=0)
    assert result.algorithms == ["aspc", "td3bc"] and result.datasets == ["a", "b"]
    assert result.runs == {"aspc": 6, "td3bc": 5}
    assert result.intervals["aspc"]["mean"].point == pytest.approx(41.0)
    assert result.intervals["aspc"]["IQM"].point == pytest.approx(stats.iqm([10, 12, 14, 60, 70, 80]))
    # dataset a: aspc beats td3bc in all 9 pairs; b: 60 vs (60, 61) -> .5 + 0, 70 and 80 win -> 4.5/6
    assert result.improvement["td3bc"].point == pytest.approx((1.0 + 4.5 / 6) / 2)
    assert result.reference == "aspc" and "aspc" not in result.improvement
    assert stats.aggregate(scores, reference="wpc", reps=50).improvement == {}
