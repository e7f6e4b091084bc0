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
from numpy.typing import NDArray
from scipy import stats
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.model_selection import KFold

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class OPEInputError(ValueError):
    """Logged data or a target policy that an estimator cannot use; the message says the fix."""


# A target policy's probabilities may be Monte Carlo estimates or sums of floats; this much slack
# on "sums to 1" and "lies in [0, 1]" is rounding, anything more is a wrong input.
_PROBABILITY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class OPEData:
    """Logged bandit feedback and the target policy's action distribution on the same rounds.

    Args:
        actions: (n,) logged action indices in [0, n_actions).
        rewards: (n,) observed rewards.
        pscore: (n,) the logging policy's probability of the logged action at the logged
            position, in (0, 1].
        action_dist: (n, n_actions, n_positions) the target policy's probabilities; for each round
            and position they sum to 1 over actions. A context-free policy can pass a read-only
            `np.broadcast_to` view instead of n copies.
        positions: (n,) logged positions in [0, n_positions); None means a single position.
        estimated_rewards: same shape as `action_dist`, a reward model's predictions; needed by
            DM and every doubly robust estimator.
    """

    actions: IntArray
    rewards: FloatArray
    pscore: FloatArray
    action_dist: FloatArray
    positions: IntArray | None = None
    estimated_rewards: FloatArray | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_rounds(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.action_dist.shape[1])

    @property
    def n_positions(self) -> int:
        return int(self.action_dist.shape[2])

    @property
    def slots(self) -> IntArray:
        """The logged positions, zeros when the log has a single position."""
        if self.positions is None:
            return np.zeros(self.n_rounds, dtype=np.int64)
        return self.positions

    def importance_weights(self) -> FloatArray:
        """w_i = pi_e(a_i | x_i, k_i) / pi_b(a_i | x_i, k_i)."""
        rounds = np.arange(self.n_rounds)
        return self.action_dist[rounds, self.actions, self.slots] / self.pscore

    def model_terms(self, estimator: str) -> tuple[FloatArray, FloatArray]:
        """(q(x_i, pi_e), q(x_i, a_i, k_i)) per round; `estimator` names who asks, for the error."""
        if self.estimated_rewards is None:
            raise OPEInputError(
                f"{estimator} needs estimated_rewards of shape {self.action_dist.shape}: fit a "
                "reward model (evals.ope.RewardModel.fit_predict) and pass its output"
            )
        rounds = np.arange(self.n_rounds)
        slots = self.slots
        q_all = self.estimated_rewards[rounds, :, slots]  # (n, n_actions)
        pi_all = self.action_dist[rounds, :, slots]
        q_policy = np.einsum("ij,ij->i", pi_all, q_all)
        q_factual = q_all[rounds, self.actions]
        return q_policy, q_factual

    def take(self, rows: IntArray) -> OPEData:
        """The rounds `rows` (with repeats, for a bootstrap sample), as a new `OPEData`."""

        def pick(array: NDArray | None) -> NDArray | None:
            return None if array is None else array[rows]

        return OPEData(
            actions=self.actions[rows],
            rewards=self.rewards[rows],
            pscore=self.pscore[rows],
            action_dist=self.action_dist[rows],
            positions=pick(self.positions),
            estimated_rewards=pick(self.estimated_rewards),
        )


def _validate(data: OPEData) -> None:
    for name in ("actions", "rewards", "pscore", "action_dist"):
        if not isinstance(getattr(data, name), np.ndarray):
            raise OPEInputError(f"{name} must be a numpy array, got {type(getattr(data, name))}")
    if data.actions.ndim != 1 or data.actions.shape[0] == 0:
        raise OPEInputError(
            f"actions must be a non-empty 1-D array, got shape {data.actions.shape}"
        )
    n = data.actions.shape[0]
    if not np.issubdtype(data.actions.dtype, np.integer):
        raise OPEInputError(f"actions must hold integer indices, got dtype {data.actions.dtype}")
    for name in ("rewards", "pscore"):
        array = getattr(data, name)
        if array.shape != (n,):
            raise OPEInputError(f"{name} must have shape ({n},) like actions, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise OPEInputError(f"{name} holds NaN or infinite values")
    if np.any(data.pscore <= 0) or np.any(data.pscore > 1):
        raise OPEInputError(
            f"pscore must lie in (0, 1], got values in [{data.pscore.min():g}, "
            f"{data.pscore.max():g}]: drop rounds the logging policy could not have chosen"
        )
    dist = data.action_dist
    if dist.ndim != 3 or dist.shape[0] != n:
        raise OPEInputError(
            f"action_dist must have shape (n_rounds={n}, n_actions, n_positions), got {dist.shape}"
            " (tile or np.broadcast_to a context-free policy's (n_actions, n_positions) table)"
        )
    if dist.min() < -_PROBABILITY_TOLERANCE or dist.max() > 1 + _PROBABILITY_TOLERANCE:
        raise OPEInputError(
            f"action_dist must hold probabilities in [0, 1], got [{dist.min():g}, {dist.max():g}]"
        )
    sums = dist.sum(axis=1)
    worst = float(np.abs(sums - 1).max())
    if worst > _PROBABILITY_TOLERANCE:
        raise OPEInputError(
            f"action_dist must sum to 1 over actions for each round and position; the worst sum is"
            f" off by {worst:g}"
        )
    if data.actions.min() < 0 or data.actions.max() >= dist.shape[1]:
        raise OPEInputError(
            f"actions must lie in [0, {dist.shape[1]}) (action_dist has {dist.shape[1]} actions),"
            f" got [{data.actions.min()}, {data.actions.max()}]"
        )
    if data.positions is not None:
        positions = data.positions
        if not isinstance(positions, np.ndarray) or positions.shape != (n,):
            raise OPEInputError(f"positions must be an array of shape ({n},) or None")
        if not np.issubdtype(positions.dtype, np.integer):
            raise OPEInputError(f"positions must hold integer indices, got {positions.dtype}")
        if positions.min() < 0 or positions.max() >= dist.shape[2]:
            raise OPEInputError(
                f"positions must lie in [0, {dist.shape[2]}) (action_dist has {dist.shape[2]} "
                f"positions), got [{positions.min()}, {positions.max()}]; OBD positions 1..3 "
                "become 0..2"
            )
    elif dist.shape[2] != 1:
        raise OPEInputError(
            f"action_dist has {dist.shape[2]} positions: pass positions, or an action_dist with one"
        )
    if data.estimated_rewards is not None:
        q = data.estimated_rewards
        if not isinstance(q, np.ndarray) or q.shape != dist.shape:
            shape = getattr(q, "shape", None)
            raise OPEInputError(f"estimated_rewards must have shape {dist.shape}, got {shape}")
        if not np.all(np.isfinite(q)):
            raise OPEInputError("estimated_rewards holds NaN or infinite values")


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


class RewardModel:
    """q(x, a, k): a scikit-learn model of the reward given context, action features, position.

    As in obp's `RegressionModel`, the features of a round are the context concatenated with the
    action's feature vector (one-hot when `action_features` is None); with `per_position` one
    model is fitted per position (obp's way), otherwise one model sees a one-hot position too.
    Classifiers predict P(reward = 1); regressors predict the reward.
    """

    def __init__(
        self,
        base_model: BaseEstimator,
        n_actions: int,
        n_positions: int = 1,
        action_features: FloatArray | None = None,
        per_position: bool = True,
    ) -> None:
        if n_actions < 1 or n_positions < 1:
            raise OPEInputError("n_actions and n_positions must be positive")
        if action_features is None:
            action_features = np.eye(n_actions)
        if action_features.ndim != 2 or action_features.shape[0] != n_actions:
            raise OPEInputError(
                f"action_features must have shape (n_actions={n_actions}, d), "
                f"got {action_features.shape}"
            )
        self.base_model = base_model
        self.n_actions = n_actions
        self.n_positions = n_positions
        self.action_features = np.asarray(action_features, dtype=np.float64)
        self.per_position = per_position

    def fit_predict(
        self,
        context: FloatArray,
        actions: IntArray,
        rewards: FloatArray,
        positions: IntArray | None = None,
        folds: int = 3,
        seed: int = 0,
    ) -> FloatArray:
        """Cross-fitted predictions for every round, action and position: (n, n_actions, n_pos).

        With folds > 1 the rounds are split by a shuffled K-fold (seeded) and each fold is
        predicted by models fitted on the other folds, so no round's prediction has seen its own
        reward (the cross-fitting of obp's `fit_predict(n_folds=...)`); folds = 1 fits and
        predicts on all rounds.
        """
        n = actions.shape[0]
        if context.ndim != 2 or context.shape[0] != n or rewards.shape != (n,):
            raise OPEInputError(
                f"context must be (n, d) and rewards (n,) with n = len(actions) = {n}, got "
                f"{context.shape} and {rewards.shape}"
            )
        positions = np.zeros(n, dtype=np.int64) if positions is None else positions
        if positions.shape != (n,) or positions.min() < 0 or positions.max() >= self.n_positions:
            raise OPEInputError(f"positions must be ({n},) with values in [0, {self.n_positions})")
        if actions.min() < 0 or actions.max() >= self.n_actions:
            raise OPEInputError(f"actions must lie in [0, {self.n_actions})")
        if not 1 <= folds <= n:
            raise OPEInputError(f"folds must lie in [1, n_rounds={n}], got {folds}")
        predictions = np.empty((n, self.n_actions, self.n_positions))
        if folds == 1:
            splits = [(np.arange(n), np.arange(n))]
        else:
            splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(context))
        for train, test in splits:
            models = self._fit(context[train], actions[train], rewards[train], positions[train])
            predictions[test] = self._predict(models, context[test])
        return predictions

    def _features(self, context: FloatArray, actions: IntArray, position: int | None) -> FloatArray:
        parts = [context, self.action_features[actions]]
        if position is not None:
            one_hot = np.zeros((context.shape[0], self.n_positions))
            one_hot[:, position] = 1.0
            parts.append(one_hot)
        return np.hstack(parts)

    def _fit(
        self, context: FloatArray, actions: IntArray, rewards: FloatArray, positions: IntArray
    ) -> list[_Fitted]:
        if self.per_position:
            groups = [positions == k for k in range(self.n_positions)]
            features = [self._features(context[g], actions[g], None) for g in groups]
            targets = [rewards[g] for g in groups]
        else:
            pos_hot = np.eye(self.n_positions)[positions]
            features = [np.hstack([context, self.action_features[actions], pos_hot])]
            targets = [rewards]
        return [_Fitted.fit(self.base_model, x, y) for x, y in zip(features, targets, strict=True)]

    def _predict(self, models: list[_Fitted], context: FloatArray) -> FloatArray:
        n = context.shape[0]
        # Every (round, action) pair as one row: the context repeated once per action.
        repeated = np.repeat(context, self.n_actions, axis=0)
        every_action = np.tile(np.arange(self.n_actions), n)
        out = np.empty((n, self.n_actions, self.n_positions))
        for k in range(self.n_positions):
            if self.per_position:
                model, x = models[k], self._features(repeated, every_action, None)
            else:
                model, x = models[0], self._features(repeated, every_action, k)
            out[:, :, k] = model.predict(x).reshape(n, self.n_actions)
        return out


@dataclass(frozen=True)
class _Fitted:
    """A fitted scikit-learn model, or the constant reward when the training rewards were all one
    value (a classifier cannot be fitted then, and the constant is the best fit)."""

    model: BaseEstimator | None
    constant: float

    @classmethod
    def fit(cls, base_model: BaseEstimator, x: FloatArray, y: FloatArray) -> _Fitted:
        if y.shape[0] == 0:
            raise OPEInputError("a reward model has no training rounds at some position")
        if np.unique(y).shape[0] < 2:
            return cls(None, float(y[0]))
        return cls(clone(base_model).fit(x, y), math.nan)

    def predict(self, x: FloatArray) -> FloatArray:
        if self.model is None:
            return np.full(x.shape[0], self.constant)
        if is_classifier(self.model):
            return self.model.predict_proba(x)[:, 1]
        return self.model.predict(x)
