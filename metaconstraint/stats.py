"""Honest aggregates of normalised scores over datasets x seeds (Agarwal et al., NeurIPS 2021).

The definitions follow rliable's, implemented on numpy and ``scipy.stats`` (rliable itself does
not import with current pandas/arch releases). Scores of one algorithm are *strata*: one 1-D array
of final scores per dataset (one entry per seed; datasets may hold different numbers of runs).

- IQM: the interquartile mean of all runs pooled, ``scipy.stats.trim_mean(x, 0.25)``.
- mean: the mean of all runs pooled (equal to the mean of per-dataset means when the counts agree).
- Stratified bootstrap: resample runs with replacement *within* each dataset, keeping its count;
  95% intervals are the 2.5 and 97.5 percentiles of the statistic over the resamples.
- Performance profile: ``F(tau) = mean_d mean_i [x_{d,i} > tau]``, the fraction of runs above
  ``tau`` with every dataset weighted equally.
- Probability of improvement: ``P(X > Y) = mean_d (1 / (n_d m_d)) sum_{i,j} S(x_{d,i}, y_{d,j})``
  with ``S = 1`` if ``x > y``, ``1/2`` on a tie, ``0`` otherwise (the Mann-Whitney U statistic over
  ``n_d m_d``), averaged over the datasets both algorithms ran on; its bootstrap resamples X and
  Y independently within each dataset.

Every random draw comes from a seeded ``numpy.random.Generator``: the same seed gives the same
intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from metaconstraint.suggest import unknown_name

DEFAULT_REPS = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0

Strata = Sequence[np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def format(self, digits: int = 1) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_strata(strata: Strata) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1) for s in strata]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        raise ValueError("no scores: every dataset is empty.")
    return arrays


def iqm(scores, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (``trim_mean`` cutting 25% at each end)."""
    return scipy_stats.trim_mean(np.asarray(scores, dtype=np.float64), 0.25, axis=axis)


def mean(scores, axis: int | None = None) -> np.ndarray | float:
    return np.mean(np.asarray(scores, dtype=np.float64), axis=axis)


STATISTICS: dict[str, Callable] = {"IQM": iqm, "mean": mean}


def stratified_bootstrap(strata: Strata, reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Resampled strata: for dataset ``d`` with ``n_d`` runs, ``(reps, n_d)`` draws from its own runs."""
    return [s[rng.integers(0, s.size, size=(reps, s.size))] for s in _as_strata(strata)]


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def interval_estimate(
    strata: Strata,
    statistic: Callable = iqm,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """``statistic`` of the pooled runs, with a stratified-bootstrap percentile interval.

    ``statistic(x, axis=-1)`` reduces ``(reps, N)`` pooled resamples to ``(reps,)``.
    """
    arrays = _as_strata(strata)
    point = float(statistic(np.concatenate(arrays), axis=-1))
    resampled = np.concatenate(stratified_bootstrap(arrays, reps, np.random.default_rng(seed)), axis=1)
    low, high = _percentiles(statistic(resampled, axis=-1), confidence)
    return Interval(point, float(low), float(high))


def performance_profile(strata: Strata, taus: np.ndarray) -> np.ndarray:
    """``F(tau)`` for each ``tau``, ``(T,)``: per-dataset fraction of runs above, averaged over datasets."""
    taus = np.asarray(taus, dtype=np.float64)
    return np.mean([(s[:, None] > taus[None, :]).mean(axis=0) for s in _as_strata(strata)], axis=0)


def performance_profile_bands(
    strata: Strata,
    taus: np.ndarray,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(profile, low, high)``, each ``(T,)``: the profile and its stratified-bootstrap band."""
    taus = np.asarray(taus, dtype=np.float64)
    arrays = _as_strata(strata)
    resampled = stratified_bootstrap(arrays, reps, np.random.default_rng(seed))
    # (reps, n_d, 1) > (T,) -> (reps, T) per dataset, averaged over datasets
    samples = np.mean([(r[:, :, None] > taus).mean(axis=1) for r in resampled], axis=0)
    low, high = _percentiles(samples, confidence)
    return performance_profile(arrays, taus), low, high


def _pairwise_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``P(X > Y)`` on the last axes: ``x (..., n)``, ``y (..., m)`` -> ``(...)``, ties count 1/2."""
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def probability_of_improvement(x_strata: Strata, y_strata: Strata) -> float:
    """``P(X > Y)`` averaged over datasets; ``x_strata[d]`` and ``y_strata[d]`` are the same dataset."""
    pairs = _paired(x_strata, y_strata)
    return float(np.mean([_pairwise_improvement(x, y) for x, y in pairs]))


def probability_of_improvement_interval(
    x_strata: Strata,
    y_strata: Strata,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """``P(X > Y)`` with a bootstrap interval resampling X and Y independently within each dataset."""
    pairs = _paired(x_strata, y_strata)
    rng = np.random.default_rng(seed)
    samples = np.zeros(reps)
    for x, y in pairs:
        xs = x[rng.integers(0, x.size, size=(reps, x.size))]
        ys = y[rng.integers(0, y.size, size=(reps, y.size))]
        samples += _pairwise_improvement(xs, ys)
    samples /= len(pairs)
    low, high = _percentiles(samples, confidence)
    return Interval(probability_of_improvement(*zip(*pairs)), float(low), float(high))


def _paired(x_strata: Strata, y_strata: Strata) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(x_strata) != len(y_strata):
        raise ValueError(f"P(X > Y) needs the same datasets for both: {len(x_strata)} != {len(y_strata)}.")
    pairs = [
        (np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1))
        for x, y in zip(x_strata, y_strata)
    ]
    pairs = [(x, y) for x, y in pairs if x.size and y.size]
    if not pairs:
        raise ValueError("P(X > Y): no dataset has runs of both algorithms.")
    return pairs


# ----------------------------------------------------------------------------- per-grid summaries
@dataclass(frozen=True)
class Aggregates:
    """Everything the report states about a grid's final scores."""

    algorithms: list[str]
    datasets: list[str]
    runs: dict[str, int]  # algorithm -> number of runs pooled
    intervals: dict[str, dict[str, Interval]]  # algorithm -> statistic name -> interval
    improvement: dict[str, Interval]  # other algorithm -> P(reference > other)
    improvement_datasets: dict[str, int]  # other algorithm -> datasets compared
    reference: str | None
    taus: np.ndarray
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    reps: int
    seed: int
    confidence: float


def aggregate(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    reference: str | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    num_taus: int = 101,
) -> Aggregates:
    """IQM and mean intervals, performance profiles and ``P(reference > other)`` for a grid.

    ``scores[algorithm][dataset]`` holds the final normalised scores of that cell's runs (one per
    seed). Algorithms without any run are left out. ``reference``: the algorithm every other is
    compared with (default: the first of ``scores`` with runs).
    """
    algorithms = [a for a in scores if any(len(v) for v in scores[a].values())]
    if reference is None and algorithms:
        reference = algorithms[0]
    datasets = sorted({d for a in algorithms for d, v in scores[a].items() if len(v)})
    strata = {a: [np.asarray(scores[a].get(d, []), dtype=np.float64) for d in datasets] for a in algorithms}
    pooled = np.concatenate([s for a in algorithms for s in strata[a]]) if algorithms else np.zeros(0)
    low = min(0.0, float(pooled.min())) if pooled.size else 0.0
    high = max(100.0, float(pooled.max())) if pooled.size else 100.0
    margin = 0.02 * (high - low)  # start below every score, so each profile starts at 1
    taus = np.linspace(low - margin, high + margin, num_taus)
    intervals = {
        a: {name: interval_estimate(strata[a], fn, reps, seed, confidence) for name, fn in STATISTICS.items()}
        for a in algorithms
    }
    profiles = {a: performance_profile_bands(strata[a], taus, reps, seed, confidence) for a in algorithms}
    improvement, compared = {}, {}
    if reference in strata:
        for other in algorithms:
            if other == reference:
                continue
            shared = [i for i, _ in enumerate(datasets) if strata[reference][i].size and strata[other][i].size]
            if not shared:
                continue
            x = [strata[reference][i] for i in shared]
            y = [strata[other][i] for i in shared]
            improvement[other] = probability_of_improvement_interval(x, y, reps, seed, confidence)
            compared[other] = len(shared)
    return Aggregates(
        algorithms=algorithms,
        datasets=datasets,
        runs={a: int(sum(s.size for s in strata[a])) for a in algorithms},
        intervals=intervals,
        improvement=improvement,
        improvement_datasets=compared,
        reference=reference if reference in strata else None,
        taus=taus,
        profiles=profiles,
        reps=reps,
        seed=seed,
        confidence=confidence,
    )


# ----------------------------------------------------------------------------- paired comparisons
DEFAULT_EFFECT = 10.0  # normalised-score points: the difference a comparison should be able to resolve
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
PAIRED_TESTS = ("t", "wilcoxon")


@dataclass(frozen=True)
class PairedComparison:
    """``reference - other`` over runs paired by (dataset, seed).

    ``p``: two-sided p-value of the paired test (``None`` with fewer than 2 pairs or no spread);
    ``p_holm``: Holm-adjusted over the comparisons of one report; ``detectable``: the smallest true
    mean difference the paired t-test finds with probability ``power`` at level ``alpha`` given the
    observed paired SD and ``pairs`` (``None`` when it cannot be computed).
    """

    reference: str
    other: str
    pairs: int
    datasets: int
    mean_difference: float
    sd_difference: float | None
    p: float | None
    p_holm: float | None
    detectable: float | None

    def underpowered(self, effect: float) -> bool:
        """True when a true difference of ``effect`` would be missed more often than 1 - power."""
        return self.detectable is None or self.detectable > effect


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: sorted ascending ``p_(1) <= ... <= p_(m)``,
    ``q_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, returned in the input's order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def paired_t_power(difference: float, sd: float, n: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided paired t-test: ``P(|T| > t_{1-alpha/2, n-1})`` with ``T`` noncentral t,
    ``n - 1`` degrees of freedom, noncentrality ``difference * sqrt(n) / sd``."""
    df = n - 1
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    noncentrality = abs(difference) * math.sqrt(n) / sd
    upper = float(scipy_stats.nct.sf(critical, df, noncentrality))
    lower = float(scipy_stats.nct.cdf(-critical, df, noncentrality))
    # scipy returns NaN for the far tails of a large noncentrality, where the probabilities are 1 and 0
    return (1.0 if math.isnan(upper) else upper) + (0.0 if math.isnan(lower) else lower)


def detectable_difference(sd: float, n: int, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float | None:
    """The minimum detectable paired mean difference: the ``d`` with ``paired_t_power(d, sd, n) = power``.

    ``None`` for ``n < 2`` (no test); ``0`` when the pairs have no spread."""
    if n < 2 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    # solved for the standardised difference d / sd, so tiny or huge SDs stay in the solver's range
    high = 1.0
    while paired_t_power(high, 1.0, n, alpha) < power:
        high *= 2
    standardised = optimize.brentq(lambda d: paired_t_power(d, 1.0, n, alpha) - power, 0.0, high, xtol=1e-12)
    return float(standardised * sd)


def paired_p_value(differences: np.ndarray, test: str = "t") -> float | None:
    """Two-sided p-value that the paired differences are centred on 0: ``"t"`` the paired t-test
    (``scipy.stats.ttest_1samp``), ``"wilcoxon"`` the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
    exact for small n without ties, zero differences dropped). ``None`` when untestable."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or not np.any(d != 0):
        return None if d.size < 2 else 1.0
    if test == "t":
        if np.ptp(d) == 0:
            return 0.0  # every pair differs by the same non-zero amount
        return float(scipy_stats.ttest_1samp(d, 0.0).pvalue)
    if test == "wilcoxon":
        return float(scipy_stats.wilcoxon(d, zero_method="wilcox").pvalue)
    raise ValueError(unknown_name("paired test", test, PAIRED_TESTS))


def paired_comparisons(
    scores: Mapping[str, Mapping[str, Mapping[int, float]]],
    reference: str,
    test: str = "t",
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> list[PairedComparison]:
    """``reference`` against every other algorithm, on the runs both have for the same dataset and seed.

    ``scores[algorithm][dataset][seed]`` is a run's final score. Holm's adjustment runs over the
    comparisons that have a p-value.
    """
    if test not in PAIRED_TESTS:
        raise ValueError(unknown_name("paired test", test, PAIRED_TESTS))
    if reference not in scores:
        raise ValueError(unknown_name("reference algorithm", reference, scores, why="it has no runs"))
    rows = []
    for other in scores:
        if other == reference:
            continue
        differences, datasets = [], 0
        for dataset, mine in scores[reference].items():
            theirs = scores[other].get(dataset, {})
            shared = sorted(set(mine) & set(theirs))
            differences += [mine[s] - theirs[s] for s in shared]
            datasets += bool(shared)
        d = np.asarray(differences, dtype=np.float64)
        sd = float(np.std(d, ddof=1)) if d.size > 1 else None
        rows.append(
            dict(
                reference=reference, other=other, pairs=int(d.size), datasets=datasets,
                mean_difference=float(d.mean()) if d.size else float("nan"), sd_difference=sd,
                p=paired_p_value(d, test), detectable=detectable_difference(sd, d.size, alpha, power) if sd is not None else None,
            )
        )
    tested = [i for i, row in enumerate(rows) if row["p"] is not None]
    adjusted = dict(zip(tested, holm([rows[i]["p"] for i in tested]))) if tested else {}
    return [PairedComparison(**row, p_holm=adjusted.get(i)) for i, row in enumerate(rows)]
