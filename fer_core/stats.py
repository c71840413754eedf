"""Statistics behind every claim of docs/EXPERIMENTS.md and the Compare page: a mean over seeds with its confidence
interval, paired tests of two arms on the same test faces, and a verdict for a claim "arm B beats arm A".

An *arm* is one configuration trained with one or more seeds; each of its runs has per-face predictions on the same
test faces (``eval/<split>_<subset>_predictions.csv``, read with :func:`fer_core.io.read_predictions`)::

    from fer_core import io, stats
    acc = stats.mean_ci([0.61, 0.64, 0.60])                  # MeanCI(mean, low, high, n, std); acc.format()
    arm_a = {d: io.read_predictions(d, "test", "all") for d in runs_a}
    arm_b = {d: io.read_predictions(d, "test", "all") for d in runs_b}
    a, b = stats.paired_correctness(arm_a, arm_b)            # seeds x faces booleans; refuses different faces
    result = stats.paired_test(a, b)                         # PairedComparison: difference, CI, p, test, verdict
    result.verdict                                           # "reproduced" | "not reproduced" | "inconclusive"

**Mean over seeds.** :func:`mean_ci` is the Student-t interval ``mean ± t(0.975, n-1) * s / sqrt(n)`` (``s`` the
sample standard deviation). With one seed there is no spread to estimate: the interval is undefined (NaN bounds,
``defined`` False) and shown as such, never as ``± 0``.

**Paired tests.** Two arms are compared on the *same* faces (checked by the predictions' ``index`` and ``label``;
runs evaluated on other faces are refused with :class:`FacesMismatchError`), so the face-to-face variation that both
arms share cancels. The quantity is the difference of accuracies, B − A (mean over each arm's seeds).

* One run per arm: the exact McNemar test, :func:`mcnemar_exact` (a two-sided binomial test with p = 1/2 on the
  discordant faces: those only A gets right against those only B gets right), ``scipy.stats.binomtest``.
* Several seeds in an arm: :func:`paired_bootstrap`. Each face's correctness is *averaged over the arm's seeds*
  (rather than pairing seed i of A with seed i of B: seeds of two arms are not matched units, arms may have different
  numbers of seeds, and a pairing would depend on an arbitrary order). Faces are resampled with replacement, the same
  faces for both arms, and by default each arm's seeds are resampled too (independently per arm, within each
  replicate): the claim is about the method, not about these particular trained weights, so the spread between seeds
  belongs in the interval. With one seed per arm seed resampling changes nothing. ``resample_seeds=False`` gives the
  interval conditional on the trained models (face sampling only).
  The interval is the percentile interval of the replicates; the two-sided p-value is the smallest alpha whose
  ``1 - alpha`` percentile interval excludes 0, ``min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))``, so p
  and interval agree. Resampling faces is drawn as multinomial counts over the faces' distinct correctness patterns
  (exactly the distribution of resampling face indices, far cheaper); the seed fixes every replicate.

:func:`paired_test` picks the test (McNemar when each arm has one run, else the bootstrap) and always reports the
bootstrap interval of the difference; :func:`paired_test_from_predictions` reads the correctness from prediction
tables first.

**When a difference counts** (``PairedComparison.supported``, what the Compare page marks): the test's p-value is
below alpha (0.05) *and* the bootstrap interval of B − A excludes 0 on the side of the observed difference.

**Verdict for the claim "B beats A by more than 0"** (``PairedComparison.verdict``, :func:`verdict`), with
``d`` the observed difference B − A, ``[low, high]`` its 95% bootstrap interval and ``p`` the test's p-value:

* ``reproduced``: ``p < alpha`` and ``d > 0`` and ``low > 0`` (the test supports B > A and the interval excludes 0);
* ``not reproduced``: ``high <= 0`` (the interval holds no positive difference: the data rule out the claimed gain,
  which covers B being significantly worse and B being no better, e.g. identical predictions), or ``p < alpha`` and
  ``d < 0`` (the test supports the opposite, A > B);
* ``inconclusive``: anything else (the interval holds both 0 and positive differences).

The three are exclusive. A face-level test on few seeds is evidence about these faces and these seeds; the mean and
interval over seeds (:func:`mean_ci`) are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _sps

ALPHA = 0.05
"""Significance level of every test, and ``1 - confidence`` of every interval."""
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
"""Bootstrap replicates by default."""
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
MCNEMAR, BOOTSTRAP = "McNemar exact", "paired bootstrap"


class FacesMismatchError(ValueError):
    """Two runs' predictions are not on the same faces, so they cannot be paired."""


# --------------------------------------------------------------------------------------------- mean over seeds
@dataclass(frozen=True)
class MeanCI:
    """A mean over seeds with its Student-t confidence interval (NaN bounds when ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    confidence: float = CONFIDENCE

    @property
    def defined(self) -> bool:
        """Whether there is an interval (two or more values)."""
        return self.n >= 2 and math.isfinite(self.low)

    @property
    def half_width(self) -> float:
        """``high - mean`` (the ``±`` of ``mean ± half-width``); NaN without an interval."""
        return self.high - self.mean if self.defined else math.nan

    def format(self, scale: float = 100.0, digits: int = 1, unit: str = "%") -> str:
        """``"62.3 ± 4.1%"``; one value: ``"62.3%"`` (no interval); no value: ``"–"``."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        if not self.defined:
            return f"{scale * self.mean:.{digits}f}{unit}"
        return f"{scale * self.mean:.{digits}f} ± {scale * self.half_width:.{digits}f}{unit}"


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanCI:
    """The mean of ``values`` (e.g. one metric of an arm's seeds) with its Student-t confidence interval.

    NaN values (a run without that result) are left out and ``n`` counts the rest. With ``n == 1`` the interval is
    undefined (NaN bounds and ``std``); with ``n == 0`` the mean is NaN too.
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan, confidence)
    std = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, std, confidence)


# --------------------------------------------------------------------------------------------- pairing faces
def paired_correctness(arm_a: Mapping[str, pd.DataFrame], arm_b: Mapping[str, pd.DataFrame]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-face correctness of two arms' runs on the same faces.

    Args:
        arm_a: ``{run name: predictions}`` (``io.read_predictions``: ``index``, ``label``, ``pred``...), one or more.
        arm_b: the same for arm B.

    Returns:
        ``(a, b)``: boolean arrays ``seeds x faces`` (``pred == label``), faces in ``index`` order, the same faces
        in every row.

    Raises:
        FacesMismatchError: an arm is empty, or a run's faces (``index`` values) or their labels differ from the
            first run's; the message names both runs and the first difference.
        ValueError: a table lacks the ``index``, ``label`` or ``pred`` column.
    """
    if not arm_a or not arm_b:
        raise FacesMismatchError("each arm needs at least one run's predictions to pair")
    tables = [(f"{name} (arm {side})", t) for side, arm in (("A", arm_a), ("B", arm_b)) for name, t in arm.items()]
    ref_name, ref = tables[0]
    ref = _sorted_faces(ref_name, ref)
    rows = []
    for name, table in tables:
        table = _sorted_faces(name, table)
        _check_same_faces(ref_name, ref, name, table)
        rows.append(table["pred"].to_numpy() == table["label"].to_numpy())
    correct = np.asarray(rows, dtype=bool).reshape(len(rows), len(ref))
    return correct[: len(arm_a)], correct[len(arm_a):]


def _sorted_faces(name: str, table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("index", "label", "pred") if c not in table.columns]
    if missing:
        raise ValueError(f"predictions of {name} lack the column(s) {', '.join(missing)} "
                         f"(have {', '.join(map(str, table.columns))})")
    repeated = table["index"][table["index"].duplicated()]
    if len(repeated):
        raise FacesMismatchError(f"predictions of {name} list face index {repeated.iloc[0]} more than once")
    return table.sort_values("index", kind="stable").reset_index(drop=True)


def _check_same_faces(ref_name: str, ref: pd.DataFrame, name: str, table: pd.DataFrame) -> None:
    what = f"cannot pair {name} with {ref_name}: they were evaluated on different faces"
    if len(table) != len(ref):
        raise FacesMismatchError(f"{what} ({len(table)} faces against {len(ref)})")
    index, ref_index = table["index"].to_numpy(), ref["index"].to_numpy()
    if not np.array_equal(index, ref_index):
        first = int(np.flatnonzero(index != ref_index)[0])
        raise FacesMismatchError(f"{what} (face indices differ from position {first}: {index[first]} against "
                                 f"{ref_index[first]})")
    labels, ref_labels = table["label"].to_numpy(), ref["label"].to_numpy()
    if not np.array_equal(labels, ref_labels):
        differ = np.flatnonzero(labels != ref_labels)
        raise FacesMismatchError(f"{what} (labels differ on {len(differ)} of {len(ref)} faces, first at index "
                                 f"{index[differ[0]]}: {labels[differ[0]]} against {ref_labels[differ[0]]}); "
                                 "were they trained on other data options or label noise applied to the test split?")


def _as_seeds(correct: Any, name: str) -> np.ndarray:
    """Correctness as a ``seeds x faces`` boolean array (a 1-D array is one seed)."""
    x = np.asarray(correct)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected faces or seeds x faces correctness, got shape {np.shape(correct)}")
    return x.astype(bool)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise FacesMismatchError(f"the arms have different numbers of faces ({a.shape[1]} and {b.shape[1]}); "
                                 "pair them with paired_correctness")
    if a.shape[1] == 0:
        raise ValueError("no faces to compare")


# --------------------------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class McNemarResult:
    """The exact McNemar test of two runs on the same faces."""

    only_a: int
    """Faces A gets right and B wrong."""
    only_b: int
    """Faces B gets right and A wrong."""
    both: int
    neither: int
    p_value: float

    @property
    def n(self) -> int:
        return self.only_a + self.only_b + self.both + self.neither

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A."""
        return (self.only_b - self.only_a) / self.n if self.n else math.nan


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test: under "A and B are equally accurate" each discordant face is B's with
    probability 1/2, so ``only_b ~ Binomial(only_a + only_b, 1/2)``; two-sided p from ``scipy.stats.binomtest``
    (1.0 when no face is discordant).

    Args:
        correct_a: one run's per-face correctness (booleans), faces in the same order as ``correct_b``.
        correct_b: the other run's.
    """
    a, b = _as_seeds(correct_a, "correct_a"), _as_seeds(correct_b, "correct_b")
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise ValueError(f"McNemar compares one run with one run (got {a.shape[0]} and {b.shape[0]}); use "
                         "paired_bootstrap for several seeds")
    _check_pair(a, b)
    a, b = a[0], b[0]
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = float(_sps.binomtest(only_b, discordant, 0.5, alternative="two-sided").pvalue) if discordant else 1.0
    return McNemarResult(only_a, only_b, int((a & b).sum()), int((~a & ~b).sum()), min(1.0, p))


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of the difference of accuracies B − A over the same faces."""

    difference: float
    """Observed: mean accuracy of B's seeds minus mean accuracy of A's."""
    low: float
    high: float
    p_value: float
    n_faces: int
    seeds_a: int
    seeds_b: int
    n_resamples: int
    confidence: float
    resample_seeds: bool


def paired_bootstrap(correct_a: Any, correct_b: Any, *, n_resamples: int = N_RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0, resample_seeds: bool = True) -> BootstrapResult:
    """Paired bootstrap of the difference of accuracies, B − A, resampling faces (the same faces for both arms) and,
    by default, each arm's seeds (see the module docstring for why and for the p-value).

    Args:
        correct_a: arm A's correctness, ``faces`` or ``seeds x faces`` booleans.
        correct_b: arm B's, on the same faces in the same order.
        n_resamples: bootstrap replicates.
        confidence: of the percentile interval.
        seed: of the random generator; the same seed gives the same result.
        resample_seeds: also draw each arm's seeds with replacement in every replicate.
    """
    a, b = _as_seeds(correct_a, "correct_a"), _as_seeds(correct_b, "correct_b")
    _check_pair(a, b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1 (got {n_resamples})")
    sa, sb, n = a.shape[0], b.shape[0], a.shape[1]
    observed = float(b.mean() - a.mean())  # the mean over seeds of each seed's accuracy, B minus A
    # Faces with the same correctness in every run are interchangeable: resampling n faces with replacement is a
    # multinomial draw of how many times each distinct pattern comes up.
    patterns, counts = np.unique(np.concatenate([a, b]).T, axis=0, return_counts=True)
    probs = counts / n
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    chunk = 2048
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn = rng.multinomial(n, probs, size=size)            # size x patterns: faces drawn per pattern
        right = drawn @ patterns.astype(np.int64)                # size x (sa + sb): faces right, per run
        right_a, right_b = right[:, :sa], right[:, sa:]
        if resample_seeds:
            right_a = np.take_along_axis(right_a, rng.integers(0, sa, size=(size, sa)), axis=1)
            right_b = np.take_along_axis(right_b, rng.integers(0, sb, size=(size, sb)), axis=1)
        diffs[start:start + size] = (right_b.mean(axis=1) - right_a.mean(axis=1)) / n
    alpha = 1.0 - confidence
    low, high = (float(v) for v in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    below, above = int((diffs <= 0).sum()), int((diffs >= 0).sum())
    p = min(1.0, 2.0 * (min(below, above) + 1) / (n_resamples + 1))
    return BootstrapResult(observed, low, high, p, n, sa, sb, n_resamples, confidence, resample_seeds)


# --------------------------------------------------------------------------------------------- comparison, verdict
@dataclass(frozen=True)
class PairedComparison:
    """Two arms compared on the same faces: the deciding test, the bootstrap interval and what they support."""

    accuracy_a: float
    """Mean accuracy over arm A's seeds on these faces."""
    accuracy_b: float
    difference: float
    """``accuracy_b - accuracy_a``."""
    low: float
    """Bootstrap interval of the difference."""
    high: float
    p_value: float
    """Of :attr:`test`."""
    test: str
    """:data:`MCNEMAR` (one run per arm) or :data:`BOOTSTRAP`."""
    n_faces: int
    seeds_a: int
    seeds_b: int
    bootstrap: BootstrapResult
    mcnemar: McNemarResult | None = None
    alpha: float = ALPHA

    @property
    def supported(self) -> bool:
        """The test rejects "no difference" at :attr:`alpha` and the interval excludes 0 on the observed side."""
        if not self.p_value < self.alpha:
            return False
        return (self.difference > 0 and self.low > 0) or (self.difference < 0 and self.high < 0)

    @property
    def direction(self) -> int:
        """+1 when B is supported to be better, -1 when worse, 0 when the difference is not supported."""
        return int(np.sign(self.difference)) if self.supported else 0

    @property
    def verdict(self) -> str:
        """For the claim "B beats A by more than 0" (the rule is in the module docstring)."""
        return verdict(self.difference, self.low, self.high, self.p_value, self.alpha)


def verdict(difference: float, low: float, high: float, p_value: float, alpha: float = ALPHA) -> str:
    """The verdict on the claim "B beats A by more than 0" from the observed difference B − A, its interval
    ``[low, high]`` and the paired test's p-value: :data:`REPRODUCED`, :data:`NOT_REPRODUCED` or
    :data:`INCONCLUSIVE` (the rule is in the module docstring). Any NaN input gives :data:`INCONCLUSIVE`."""
    if any(not math.isfinite(v) for v in (difference, low, high, p_value)):
        return INCONCLUSIVE
    significant = p_value < alpha
    if significant and difference > 0 and low > 0:
        return REPRODUCED
    if high <= 0 or (significant and difference < 0):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def paired_test(correct_a: Any, correct_b: Any, *, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES,
                seed: int = 0, resample_seeds: bool = True) -> PairedComparison:
    """Compare two arms on the same faces: exact McNemar when each arm has one run, else the paired bootstrap's
    p-value; the interval of the difference is the paired bootstrap's in both cases.

    Args:
        correct_a: arm A's correctness, ``faces`` or ``seeds x faces`` booleans (:func:`paired_correctness`).
        correct_b: arm B's, the same faces in the same order.
        alpha: significance level; the interval is the ``1 - alpha`` bootstrap interval.
        n_resamples: bootstrap replicates.
        seed: of the bootstrap.
        resample_seeds: see :func:`paired_bootstrap`.
    """
    a, b = _as_seeds(correct_a, "correct_a"), _as_seeds(correct_b, "correct_b")
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=1.0 - alpha, seed=seed,
                            resample_seeds=resample_seeds)
    mcnemar = mcnemar_exact(a, b) if a.shape[0] == 1 and b.shape[0] == 1 else None
    return PairedComparison(
        accuracy_a=float(a.mean()), accuracy_b=float(b.mean()), difference=boot.difference, low=boot.low,
        high=boot.high, p_value=mcnemar.p_value if mcnemar else boot.p_value, test=MCNEMAR if mcnemar else BOOTSTRAP,
        n_faces=boot.n_faces, seeds_a=a.shape[0], seeds_b=b.shape[0], bootstrap=boot, mcnemar=mcnemar, alpha=alpha)


def paired_test_from_predictions(arm_a: Mapping[str, pd.DataFrame], arm_b: Mapping[str, pd.DataFrame],
                                 **kwargs: Any) -> PairedComparison:
    """:func:`paired_test` on two arms' prediction tables (``{run name: io.read_predictions(...)}``), after
    :func:`paired_correctness` checked they hold the same faces (it raises :class:`FacesMismatchError` otherwise)."""
    a, b = paired_correctness(arm_a, arm_b)
    return paired_test(a, b, **kwargs)
