"""fer_core.stats: intervals over seeds, paired tests on the same faces and the verdict rule, against values computed
by hand (the closed forms are in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fer_core import stats


def _correct(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-face correctness of two runs with the given 2x2 table, faces in a fixed order."""
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def _predictions(labels, right, index=None) -> pd.DataFrame:
    """A predictions table as ``io.read_predictions`` gives it: a wrong face predicts the next class."""
    labels = np.asarray(labels)
    pred = np.where(right, labels, (labels + 1) % 7)
    return pd.DataFrame({"index": np.arange(len(labels)) if index is None else index, "label": labels, "pred": pred,
                         "correct": pred == labels, "confidence": 0.5})


# --------------------------------------------------------------------------------------------- mean over seeds
def test_t_interval_matches_the_hand_computed_value():
    ci = stats.mean_ci([0.5, 0.6, 0.7])
    # s = 0.1; with 2 degrees of freedom t has the closed form t_q = (2q - 1) / sqrt(2 q (1 - q)), q = 0.975
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert t == pytest.approx(4.302652729749464)
    half = t * 0.1 / math.sqrt(3)  # 0.248414...
    assert ci.mean == pytest.approx(0.6) and ci.std == pytest.approx(0.1) and ci.n == 3
    assert ci.half_width == pytest.approx(half) and ci.half_width == pytest.approx(0.2484137712)
    assert (ci.low, ci.high) == pytest.approx((0.6 - half, 0.6 + half))
    assert ci.format() == "60.0 ± 24.8%" and ci.defined


def test_one_seed_has_no_interval_and_nan_values_are_left_out():
    one = stats.mean_ci([0.42])
    assert one.n == 1 and one.mean == pytest.approx(0.42) and not one.defined
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.half_width) and math.isnan(one.std)
    assert one.format() == "42.0%"  # never "± 0"
    assert stats.mean_ci([0.42, math.nan]).n == 1
    none = stats.mean_ci([])
    assert none.n == 0 and math.isnan(none.mean) and none.format() == "–"
    same = stats.mean_ci([0.3, 0.3])
    assert same.defined and same.half_width == 0.0  # two equal seeds: the sample spread is 0


# --------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_exact_is_the_binomial_test_on_the_discordant_faces():
    a, b = _correct(both=8, only_a=1, only_b=9, neither=2)
    result = stats.mcnemar_exact(a, b)
    assert (result.only_a, result.only_b, result.both, result.neither, result.n) == (1, 9, 8, 2, 20)
    # 10 discordant faces, 9 of them B's: P(X >= 9) = (C(10,9) + C(10,10)) / 2^10 = 11/1024; two-sided doubles it
    assert result.p_value == pytest.approx(22 / 1024, abs=1e-15)
    assert result.difference == pytest.approx(8 / 20)
    swapped = stats.mcnemar_exact(b, a)
    assert swapped.p_value == pytest.approx(result.p_value) and swapped.difference == pytest.approx(-0.4)
    # 2 against 8: P(X >= 8) = (45 + 10 + 1) / 1024, two-sided 112/1024
    assert stats.mcnemar_exact(*_correct(5, 2, 8, 5)).p_value == pytest.approx(112 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(*_correct(5, 0, 0, 5)).p_value == 1.0  # no discordant face: nothing to test
    with pytest.raises(ValueError, match="one run with one run"):
        stats.mcnemar_exact(np.ones((2, 5), bool), np.ones(5, bool))


# --------------------------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_is_deterministic_with_a_seed_and_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.60
    b = a.copy()
    flip = rng.random(2000) < 0.15  # B differs from A on about 15% of the faces, more often for the better
    b[flip] = rng.random(flip.sum()) < 0.9
    first = stats.paired_bootstrap(a, b, seed=7)
    again = stats.paired_bootstrap(a, b, seed=7)
    other = stats.paired_bootstrap(a, b, seed=8)
    assert first == again
    assert (other.low, other.high) != (first.low, first.high)
    assert first.difference == pytest.approx(b.mean() - a.mean())
    # resampling faces: the mean of d = b - a has standard error sqrt(var(d) / n); the 95% percentile interval is
    # close to d ± 1.96 SE for 2000 faces
    d = b.astype(float) - a.astype(float)
    se = math.sqrt(d.var() / len(d))
    assert first.low == pytest.approx(first.difference - 1.96 * se, abs=0.15 * se)
    assert first.high == pytest.approx(first.difference + 1.96 * se, abs=0.15 * se)
    assert first.low > 0 and first.p_value < 0.05  # interval and p agree
    assert (first.n_faces, first.seeds_a, first.seeds_b, first.n_resamples) == (2000, 1, 1, stats.N_RESAMPLES)


def test_paired_bootstrap_agrees_with_scipy_on_seed_averaged_faces():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)
    a = rng.random((3, 400)) < 0.6
    b = rng.random((2, 400)) < 0.7
    ours = stats.paired_bootstrap(a, b, resample_seeds=False, n_resamples=20_000)
    ref = bootstrap((a.mean(0), b.mean(0)), lambda x, y, axis: y.mean(axis) - x.mean(axis), paired=True,
                    vectorized=True, method="percentile", n_resamples=20_000, rng=1).confidence_interval
    assert ours.difference == pytest.approx(b.mean() - a.mean())  # mean over seeds of each seed's accuracy
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), abs=0.004)


def test_resampling_seeds_widens_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(1)
    faces = rng.random(500) < 0.6
    a = np.stack([faces, faces])
    b = np.stack([faces | (rng.random(500) < 0.5), faces & (rng.random(500) < 0.8)])  # one good, one bad seed
    fixed = stats.paired_bootstrap(a, b, resample_seeds=False)
    free = stats.paired_bootstrap(a, b)
    assert fixed.difference == free.difference
    assert free.high - free.low > 1.5 * (fixed.high - fixed.low)


def test_identical_arms_give_no_difference():
    a = np.random.default_rng(2).random((2, 50)) < 0.5
    same_run = stats.paired_test(a[0], a[0].copy())
    assert same_run.test == stats.MCNEMAR and (same_run.difference, same_run.low, same_run.high) == (0.0, 0.0, 0.0)
    assert same_run.p_value == 1.0 and not same_run.supported and same_run.direction == 0
    assert same_run.verdict == stats.NOT_REPRODUCED  # the interval holds no positive difference
    # the same two seeds in both arms: no difference on average, but drawing the seeds shows how far two arms of
    # this method can fall apart by chance
    seeds = stats.paired_test(a, a.copy())
    assert seeds.difference == 0.0 and seeds.low < 0 < seeds.high and seeds.low == pytest.approx(-seeds.high)
    assert seeds.p_value > 0.5 and not seeds.supported and seeds.verdict == stats.INCONCLUSIVE
    fixed = stats.paired_test(a, a.copy(), resample_seeds=False)
    assert (fixed.low, fixed.high, fixed.p_value) == (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------- pairing faces
def test_pairing_refuses_runs_evaluated_on_other_faces():
    labels = np.arange(12) % 7
    right = np.arange(12) % 2 == 0
    base = _predictions(labels, right)
    shuffled = base.sample(frac=1.0, random_state=0)  # row order does not matter: faces go by index
    a, b = stats.paired_correctness({"r1": base}, {"r2": shuffled, "r3": base})
    assert a.shape == (1, 12) and b.shape == (2, 12) and (b == a).all()

    with pytest.raises(stats.FacesMismatchError, match=r"r2 \(arm B\) with r1 \(arm A\).*11 faces against 12"):
        stats.paired_correctness({"r1": base}, {"r2": base.iloc[:11]})
    other = base.copy()
    other.loc[3, "label"] = (other.loc[3, "label"] + 1) % 7
    with pytest.raises(stats.FacesMismatchError, match="labels differ on 1 of 12 faces, first at index 3"):
        stats.paired_correctness({"r1": base}, {"r2": other})
    moved = base.assign(index=base["index"] + 100)
    with pytest.raises(stats.FacesMismatchError, match="face indices differ"):
        stats.paired_test_from_predictions({"r1": base}, {"r2": moved})
    twice = base.assign(index=[0, *range(11)])
    with pytest.raises(stats.FacesMismatchError, match="index 0 more than once"):
        stats.paired_correctness({"r1": base}, {"r2": twice})
    with pytest.raises(ValueError, match="lack the column"):
        stats.paired_correctness({"r1": base}, {"r2": base.drop(columns="pred")})
    with pytest.raises(stats.FacesMismatchError, match="different numbers of faces"):
        stats.paired_test(np.ones(5, bool), np.ones(6, bool))


def test_paired_test_uses_mcnemar_for_one_run_each_and_the_bootstrap_for_seeds():
    labels = np.arange(200) % 7
    a_right, b_right = _correct(both=100, only_a=5, only_b=40, neither=55)
    one = stats.paired_test_from_predictions({"a": _predictions(labels, a_right)}, {"b": _predictions(labels, b_right)})
    assert one.test == stats.MCNEMAR and one.mcnemar is not None and one.mcnemar.only_b == 40
    assert one.p_value == one.mcnemar.p_value < 1e-6 and one.difference == pytest.approx(35 / 200)
    assert one.low > 0 and one.supported and one.direction == 1 and one.verdict == stats.REPRODUCED

    seeds = stats.paired_test(np.stack([a_right, a_right]), np.stack([b_right, a_right]))
    assert seeds.test == stats.BOOTSTRAP and seeds.mcnemar is None and seeds.seeds_b == 2
    assert seeds.difference == pytest.approx(35 / 400)  # B's seeds average 0.5 * 35 faces of gain
    reverse = stats.paired_test(b_right, a_right)
    assert reverse.direction == -1 and reverse.verdict == stats.NOT_REPRODUCED


# --------------------------------------------------------------------------------------------- verdict
@pytest.mark.parametrize(("difference", "low", "high", "p", "expected"), [
    (0.05, 0.01, 0.09, 0.01, stats.REPRODUCED),          # B > A, significant, interval above 0
    (0.05, 0.01, 0.09, 0.06, stats.INCONCLUSIVE),        # interval above 0 but the test does not reject
    (0.05, -0.01, 0.10, 0.20, stats.INCONCLUSIVE),       # the interval holds 0 and gains
    (0.05, -0.01, 0.10, 0.01, stats.INCONCLUSIVE),       # the test rejects but the interval holds 0
    (-0.05, -0.09, -0.01, 0.01, stats.NOT_REPRODUCED),   # A > B, significant
    (-0.01, -0.05, 0.00, 0.30, stats.NOT_REPRODUCED),    # no positive difference in the interval
    (0.0, 0.0, 0.0, 1.0, stats.NOT_REPRODUCED),          # identical predictions
    (-0.02, -0.04, 0.01, 0.03, stats.NOT_REPRODUCED),    # the test supports A > B though the interval touches 0
    (math.nan, 0.0, 0.1, 0.01, stats.INCONCLUSIVE),
])
def test_verdict_rule(difference, low, high, p, expected):
    assert stats.verdict(difference, low, high, p) == expected
