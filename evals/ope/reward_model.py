"""The reward model q(x, a, k) of the direct and doubly robust estimators, optionally cross-fitted."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.model_selection import KFold

from evals.ope.data import FloatArray, IntArray, OPEInputError


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
