"""The `bandit-sim` suite kind: offer bandits on a seeded simulation of people with hidden tastes.

The world is `evals.bandits.world`, the policies `evals.bandits.learners`, and the metrics
`evals.bandits.regret`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from evals.bandits.learners import make_learner, param_problems
from evals.bandits.regret import Scores, best_fixed, random_regret, score, simulate
from evals.bandits.world import Params, World, WorldParams, load_offers, make_world
from evals.base import Plot, Row, RunContext, SuiteError, SuiteResult, SystemSpec, register


class SimParams(Params):
    rounds: int = Field(default=20_000, ge=10)
    repeats: int = Field(default=1, ge=1, description="Worlds simulated; metrics are their mean.")
    world: WorldParams = WorldParams()


DEFAULT_SYSTEMS = [
    SystemSpec(name=name, type=name) for name in ("random", "thompson", "lints", "linucb")
]


@register("bandit-sim")
def bandit_sim(ctx: RunContext) -> SuiteResult:
    """Each system on the same seeded streams of simulated people; regret, CTR, regret curves."""
    suite = ctx.suite
    try:
        params = SimParams.model_validate(suite.params)
    except ValidationError as error:
        raise SuiteError(param_problems("params", error)) from None
    systems = suite.systems or DEFAULT_SYSTEMS
    ctx.set_total(len(suite.datasets) * params.repeats * len(systems) * params.rounds)
    rows, curves, reference = [], {}, []
    for dataset in suite.datasets:
        offers = load_offers(ctx.dataset_path(dataset))
        results: dict[str, list[Scores]] = {system.name: [] for system in systems}
        for repeat in range(params.repeats):
            world_rng = np.random.default_rng([suite.seed, repeat])
            world = make_world(offers, params.rounds, world_rng, params.world)
            reference.append(_reference(dataset.name, repeat, world))
            for index, system in enumerate(systems):
                rng = np.random.default_rng([suite.seed, repeat, zlib.crc32(system.name.encode())])
                learner = make_learner(system, f"systems[{index}]", world, rng)
                results[system.name].append(score(world, simulate(world, learner, ctx.progress)))
        for name, runs in results.items():
            metrics = {
                key: float(np.mean([r.metrics[key] for r in runs])) for key in runs[0].metrics
            }
            spread = (
                {key: float(np.std([r.metrics[key] for r in runs], ddof=1)) for key in metrics}
                if len(runs) > 1
                else {}
            )
            rows.append(Row(dataset.name, name, metrics, spread))
            curves[(dataset.name, name)] = np.mean([r.regret for r in runs], axis=0)
    return SuiteResult(
        rows=rows,
        plots=[Plot("cumulative-regret", "Cumulative regret over rounds", _draw(curves))],
        notes=[
            f"{params.rounds:,} rounds × {params.repeats} simulated world(s) per dataset, seed "
            f"{suite.seed}. Regret is expected regret against the best offer for each person, "
            "measured on click probabilities averaged over the taste nothing explains; "
            "`regret_ratio_vs_random` divides by a uniformly random choice's exact expected "
            "regret on the same stream. A policy that ignores the person cannot get below the "
            "best fixed offer's ratio (reference table). See `evals/bandits/world.py` for the world."
        ],
        tables={"Reference policies (expected CTR)": reference},
        details={"params": params.model_dump(), "systems": [s.model_dump() for s in systems]},
    )


def _reference(dataset: str, repeat: int, world: World) -> dict[str, Any]:
    counts = np.array([len(world.eligible[c]) for c in world.channel])
    best = world.value.max(axis=1)
    fixed = world.value[np.arange(world.rounds), best_fixed(world)[world.channel]]
    return {
        "dataset": dataset,
        "world": repeat,
        "best per person": round(float(best.mean()), 4),
        "best fixed per channel": round(float(fixed.mean()), 4),
        "random": round(float((world.value.sum(axis=1) / counts).mean()), 4),
        # No policy that ignores the person can do better than this regret ratio.
        "regret ratio of best fixed": round(float((best - fixed).sum()) / random_regret(world), 3),
    }


def _draw(curves: dict[tuple[str, str], np.ndarray]) -> Callable[[Any], None]:
    datasets = {dataset for dataset, _ in curves}

    def draw(ax: Any) -> None:
        for (dataset, system), regret in curves.items():
            step = max(1, len(regret) // 500)
            x = np.arange(1, len(regret) + 1)[::step]
            label = system if len(datasets) == 1 else f"{dataset}: {system}"
            ax.plot(x, regret[::step], label=label)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative expected regret (clicks)")
        ax.legend()
        ax.grid(alpha=0.3)

    return draw
