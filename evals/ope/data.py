"""Logged bandit data for off-policy evaluation (`OPEData`), checked on the way in.

The notation is that of `evals.ope.estimators`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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
                "reward model (evals.ope.reward_model.RewardModel.fit_predict) and pass its output"
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
