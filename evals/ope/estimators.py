"""Off-policy estimators: the value of a target policy from bandit logs that another policy made.

The definitions follow the Open Bandit Pipeline (obp; Saito, Aihara, Matsutani, Narita: "Open
Bandit Dataset and Pipeline", NeurIPS 2021 Datasets and Benchmarks). Notation, for logged rounds
i = 1..n with context x_i, action a_i, position k_i, reward r_i and logging propensity
pi_b(a_i | x_i, k_i):

- pi_e(a | x_i, k_i) is the target policy's probability of action a at position k_i
  (`OPEData.action_dist[i, a, k_i]`);
- w_i = pi_e(a_i | x_i, k_i) / pi_b(a_i | x_i, k_i) is the importance weight;
- q(x_i, a, k_i) is a reward model's estimate of E[r | x_i, a, k_i]
  (`OPEData.estimated_rewards[i, a, k_i]`), and q(x_i, pi_e) = sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i).

Every estimator reduces a log to per-round terms (`RoundTerms`) whose combination is the estimate;
the bootstrap resamples those terms, so it is exact and vectorized for every estimator here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import stats

from evals.ope.data import FloatArray, IntArray, OPEData, OPEInputError


@dataclass(frozen=True)
class RoundTerms:
    """Per-round pieces of an estimate: V = mean(baseline) + mean(correction) / mean(normalizer).

    `normalizer` is None (read: all ones) for estimators that are not self-normalized.
    """

    baseline: FloatArray
    correction: FloatArray
    normalizer: FloatArray | None = None

    def value(self) -> float:
        return float(self.baseline.mean() + self.correction.mean() / self._scale())

    def round_rewards(self) -> FloatArray:
        """Per-round contributions whose mean is the estimate (obp's `_estimate_round_rewards`)."""
        return self.baseline + self.correction / self._scale()

    def _scale(self) -> float:
        if self.normalizer is None:
            return 1.0
        scale = float(self.normalizer.mean())
        if scale <= 0:
            raise OPEInputError(
                "the importance weights sum to 0 (the target policy never takes a logged action):"
                " a self-normalized estimate is undefined; use IPS, DM or DR"
            )
        return scale

    def take(self, rows: IntArray) -> RoundTerms:
        normalizer = None if self.normalizer is None else self.normalizer[rows]
        return RoundTerms(self.baseline[rows], self.correction[rows], normalizer)


class Estimator(ABC):
    """An off-policy estimator: `estimate(data)` is its estimate of the target policy's value."""

    NAME: ClassVar[str]

    @property
    def name(self) -> str:
        return self.NAME

    @abstractmethod
    def terms(self, data: OPEData) -> RoundTerms:
        """The per-round terms whose combination is the estimate."""

    def estimate(self, data: OPEData) -> float:
        return self.terms(data).value()


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring (obp: IPW): V = (1/n) sum_i w_i r_i."""

    NAME: ClassVar[str] = "ipw"

    def terms(self, data: OPEData) -> RoundTerms:
        return RoundTerms(np.zeros(data.n_rounds), data.importance_weights() * data.rewards)


@dataclass(frozen=True)
class SNIPS(Estimator):
    """Self-normalized IPS (obp: SNIPW): V = sum_i w_i r_i / sum_i w_i."""

    NAME: ClassVar[str] = "snipw"

    def terms(self, data: OPEData) -> RoundTerms:
        w = data.importance_weights()
        return RoundTerms(np.zeros(data.n_rounds), w * data.rewards, w)


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: V = (1/n) sum_i q(x_i, pi_e), the reward model averaged over the policy."""

    NAME: ClassVar[str] = "dm"

    def terms(self, data: OPEData) -> RoundTerms:
        q_policy, _ = data.model_terms(self.name)
        return RoundTerms(q_policy, np.zeros(data.n_rounds))


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: V = (1/n) sum_i [q(x_i, pi_e) + w_i (r_i - q(x_i, a_i, k_i))]."""

    NAME: ClassVar[str] = "dr"

    def terms(self, data: OPEData) -> RoundTerms:
        q_policy, q_factual = data.model_terms(self.name)
        return RoundTerms(q_policy, self.weights(data) * (data.rewards - q_factual))

    def weights(self, data: OPEData) -> FloatArray:
        """The weights on the residuals; plain importance weights for DR."""
        return data.importance_weights()


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalized DR: V = (1/n) sum_i q(x_i, pi_e) + sum_i w_i (r_i - q_i) / sum_i w_i,
    with q_i = q(x_i, a_i, k_i)."""

    NAME: ClassVar[str] = "sndr"

    def terms(self, data: OPEData) -> RoundTerms:
        q_policy, q_factual = data.model_terms(self.name)
        w = data.importance_weights()
        return RoundTerms(q_policy, w * (data.rewards - q_factual), w)


@dataclass(frozen=True)
class SwitchDR(DR):
    """Switch-DR (Wang et al. 2017):
    V = (1/n) sum_i [q(x_i, pi_e) + w_i 1{w_i <= tau} (r_i - q(x_i, a_i, k_i))].

    tau = inf is DR; tau = 0 is DM wherever w_i > 0.
    """

    NAME: ClassVar[str] = "switch-dr"
    tau: float = math.inf

    def __post_init__(self) -> None:
        if not self.tau >= 0:  # also rejects NaN
            raise OPEInputError(f"tau must be >= 0 (inf for DR), got {self.tau}")

    def weights(self, data: OPEData) -> FloatArray:
        w = data.importance_weights()
        return np.where(w <= self.tau, w, 0.0)


@dataclass(frozen=True)
class DRos(DR):
    """DR with optimistic shrinkage (Su et al. 2020):
    V = (1/n) sum_i [q(x_i, pi_e) + w'_i (r_i - q(x_i, a_i, k_i))],
    w'_i = lambda w_i / (w_i^2 + lambda).

    lambda = inf is DR; lambda = 0 is DM.
    """

    NAME: ClassVar[str] = "dr-os"
    lambda_: float = math.inf

    def __post_init__(self) -> None:
        if not self.lambda_ >= 0:
            raise OPEInputError(f"lambda_ must be >= 0 (inf for DR), got {self.lambda_}")

    def weights(self, data: OPEData) -> FloatArray:
        w = data.importance_weights()
        if math.isinf(self.lambda_):
            return w
        if self.lambda_ == 0:
            return np.zeros_like(w)
        return self.lambda_ * w / (w**2 + self.lambda_)


@dataclass(frozen=True)
class Slope(Estimator):
    """One estimator family with its hyperparameter chosen from `candidates` by SLOPE.

    SLOPE (Su, Srinath, Krishnamurthy 2020; in obp's *Tuning estimators as SLOPE++ of Tucker and
    Lee 2021): sort the candidates by confidence width c (Student-t, one-sided at `delta`) from the
    widest; keep adding candidates while every kept pair satisfies
    |V_j - V_i| <= c_i + (sqrt(6) - 1) c_j; return the last candidate kept.
    """

    candidates: tuple[Estimator, ...]
    delta: float = 0.05

    def __post_init__(self) -> None:
        if not self.candidates:
            raise OPEInputError("Slope needs at least one candidate estimator")
        if len({candidate.name for candidate in self.candidates}) != 1:
            raise OPEInputError("Slope's candidates must be one estimator family (one name)")

    @property
    def name(self) -> str:
        return self.candidates[0].name

    def select(self, data: OPEData) -> Estimator:
        """The candidate SLOPE picks on this log."""
        values, widths = [], []
        for candidate in self.candidates:
            rewards = candidate.terms(data).round_rewards()
            n = rewards.shape[0]
            values.append(float(rewards.mean()))
            widths.append(
                float(np.sqrt(rewards.var() / (n - 1)) * stats.t(n - 1).ppf(1 - self.delta))
                if n > 1
                else math.inf
            )
        order = np.argsort(widths, kind="stable")[::-1]
        kept = [int(order[0])]
        for index in order[1:]:
            value, width = values[index], widths[index]
            if all(abs(values[j] - value) <= width + (math.sqrt(6) - 1) * widths[j] for j in kept):
                kept.append(int(index))
            else:
                break
        return self.candidates[kept[-1]]

    def terms(self, data: OPEData) -> RoundTerms:
        return self.select(data).terms(data)


@dataclass(frozen=True)
class BootstrapResult:
    """An estimate's bootstrap distribution: mean, standard deviation, percentile interval."""

    estimate: float  # on the full log
    mean: float
    std: float
    ci_low: float
    ci_high: float
    alpha: float
    n: int


def bootstrap(
    estimator: Estimator, data: OPEData, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> BootstrapResult:
    """Bootstrap an estimate: resample the rounds with replacement `n` times.

    The per-round terms are computed once and resampled, so self-normalized estimators are
    re-normalized on each sample; the reward model (and a SLOPE choice) is held fixed. Returns the
    mean and standard deviation of the resampled estimates and their (alpha/2, 1 - alpha/2)
    percentile interval.
    """
    if n < 2:
        raise OPEInputError(f"bootstrap needs n >= 2 resamples, got {n}")
    if not 0 < alpha < 1:
        raise OPEInputError(f"alpha must lie in (0, 1), got {alpha}")
    terms = estimator.terms(data)
    rng = np.random.default_rng(seed)
    size = data.n_rounds
    values = np.array([terms.take(rng.integers(0, size, size)).value() for _ in range(n)])
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        estimate=terms.value(),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)),
        ci_low=float(low),
        ci_high=float(high),
        alpha=alpha,
        n=n,
    )
