"""Off-policy estimator speed on synthetic logs: seconds per million logged decisions.

Prints JSON and writes it to `bench/results/ope.json`: the median over repeated runs of IPS,
SNIPS, DM and DR on precomputed inputs (action distribution and reward-model predictions already
in memory), of building and validating `OPEData`, and of the cross-fitted reward model (logistic
regression, fitted on a smaller log and scaled). Run with
`.venv/bin/python bench/ope.py [--rows 1000000] [--repeats 5]`. Figures depend on the machine and
its load; compare medians between runs on the same machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.report import emit
from evals.ope.data import OPEData
from evals.ope.estimators import DM, DR, IPS, SNIPS, Estimator
from evals.ope.reward_model import RewardModel


def synthetic_log(
    rows: int, n_actions: int, n_positions: int, dim: int, seed: int
) -> tuple[OPEData, np.ndarray]:
    """A contextual logging policy, a contextual target policy and clicks from a logistic model."""
    rng = np.random.default_rng(seed)
    context = rng.normal(size=(rows, dim))
    weights = rng.normal(size=(dim, n_actions)) / np.sqrt(dim)
    logits = context @ weights
    behaviour = np.exp(logits - logits.max(axis=1, keepdims=True))
    behaviour /= behaviour.sum(axis=1, keepdims=True)
    target = np.exp(2 * (logits - logits.max(axis=1, keepdims=True)))
    target /= target.sum(axis=1, keepdims=True)
    uniform = rng.random(rows)[:, None]
    actions = np.minimum((uniform > np.cumsum(behaviour, axis=1)).sum(axis=1), n_actions - 1)
    positions = rng.integers(0, n_positions, size=rows)
    click_rate = 1 / (1 + np.exp(-(logits - 3.0)))  # (rows, n_actions)
    rewards = (rng.random(rows) < click_rate[np.arange(rows), actions]).astype(np.float64)
    action_dist = np.repeat(target[:, :, None], n_positions, axis=2)
    estimated = np.repeat(click_rate[:, :, None], n_positions, axis=2)
    data = OPEData(
        actions=actions.astype(np.int64),
        rewards=rewards,
        pscore=behaviour[np.arange(rows), actions],
        action_dist=action_dist,
        positions=positions.astype(np.int64),
        estimated_rewards=estimated,
    )
    return data, context


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: page faults, lazy imports
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="logged decisions")
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--positions", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-rows", type=int, default=100_000, help="rows for the model fit")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ope.json"))
    args = parser.parse_args()

    data, _ = synthetic_log(args.rows, args.actions, args.positions, dim=20, seed=0)
    per_million = 1e6 / args.rows
    estimators: dict[str, Estimator] = {"ipw": IPS(), "snipw": SNIPS(), "dm": DM(), "dr": DR()}
    estimates = {
        name: round(
            median_seconds(partial(estimator.estimate, data), args.repeats) * per_million, 4
        )
        for name, estimator in estimators.items()
    }
    validate = median_seconds(
        lambda: OPEData(
            data.actions,
            data.rewards,
            data.pscore,
            data.action_dist,
            data.positions,
            data.estimated_rewards,
        ),
        args.repeats,
    )

    small, context = synthetic_log(args.fit_rows, args.actions, args.positions, dim=20, seed=1)
    model = RewardModel(LogisticRegression(C=100, max_iter=10_000), args.actions, args.positions)
    fit = median_seconds(
        lambda: model.fit_predict(
            context, small.actions, small.rewards, small.positions, folds=args.folds, seed=0
        ),
        max(1, args.repeats // 2),
    )

    results = {
        "rows": args.rows,
        "n_actions": args.actions,
        "n_positions": args.positions,
        "repeats": args.repeats,
        "seconds_per_million_decisions": estimates,
        "opedata_validation_seconds_per_million": round(validate * per_million, 4),
        "reward_model_fit_predict": {
            "model": "LogisticRegression(C=100), one per position, one-hot actions, 20 features",
            "rows": args.fit_rows,
            "folds": args.folds,
            "seconds": round(fit, 3),
            "seconds_per_million_decisions": round(fit * 1e6 / args.fit_rows, 2),
        },
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()
