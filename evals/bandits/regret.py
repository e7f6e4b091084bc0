"""Running a policy through the world, and its expected regret.

**Metrics** per policy are expected regret, free of click noise, measured on v = E_ε[p], the
click probability averaged over the unexplainable ε (Gauss–Hermite quadrature): a policy can
learn everything about a person but ε. `regret` = Σ_t max_o v(t, o) − v(t, chosen), against the
best offer for each person; `regret_vs_best_fixed` against the best single offer per channel in
hindsight (negative when a policy beats every fixed offer); `ctr` = clicks drawn / rounds; and
`regret_ratio_vs_random` = regret / the expected regret of a uniformly random choice on the same
stream, computed exactly rather than sampled. A policy that ignores the person cannot get its
ratio below that of the best fixed offer, which the report's reference table shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evals.bandits.learners import Learner
from evals.bandits.world import World
from tools.offer_features import CHANNELS

PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class Trace:
    chosen: np.ndarray  # (rounds,) offer index
    clicks: np.ndarray  # (rounds,) 0 or 1


def simulate(
    world: World, learner: Learner, progress: Callable[[int], None] = lambda n: None
) -> Trace:
    """Run one learner over the whole stream: choose, draw the click, learn."""
    chosen = np.empty(world.rounds, dtype=int)
    clicks = np.empty(world.rounds)
    for t in range(world.rounds):
        offer = learner.act(t)
        reward = float(world.uniform[t] < world.p[t, offer])
        learner.learn(t, offer, reward)
        chosen[t], clicks[t] = offer, reward
        if (t + 1) % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    progress(world.rounds % PROGRESS_EVERY)
    return Trace(chosen, clicks)


@dataclass(frozen=True)
class Scores:
    regret: np.ndarray  # (rounds,) cumulative regret against the best offer per person
    metrics: dict[str, float]


def score(world: World, trace: Trace) -> Scores:
    rows = np.arange(world.rounds)
    got = world.value[rows, trace.chosen]
    best = world.value.max(axis=1)
    fixed = world.value[rows, best_fixed(world)[world.channel]]
    regret = np.cumsum(best - got)
    return Scores(
        regret=regret,
        metrics={
            "regret": float(regret[-1]),
            "regret_vs_best_fixed": float((fixed - got).sum()),
            "ctr": float(trace.clicks.mean()),
            "regret_ratio_vs_random": float(regret[-1] / random_regret(world)),
            # The textbook bandit regret, against the best fixed offer, over random's.
            "fixed_regret_ratio_vs_random": float(
                (fixed - got).sum() / random_regret(world, against="fixed")
            ),
        },
    )


def best_fixed(world: World) -> np.ndarray:
    """Per channel, the offer with the most expected clicks over that channel's rounds."""
    totals = np.stack([world.value[world.channel == c].sum(axis=0) for c in range(len(CHANNELS))])
    return totals.argmax(axis=1)


def random_regret(world: World, against: str = "person") -> float:
    """The expected regret of a uniformly random eligible offer, exactly, against the best offer
    for each person or (`against="fixed"`) the best fixed offer of each channel."""
    counts = np.array([len(world.eligible[c]) for c in world.channel])
    if against == "fixed":
        rows = np.arange(world.rounds)
        reference = world.value[rows, best_fixed(world)[world.channel]]
    else:
        reference = world.value.max(axis=1)
    return float((reference - world.value.sum(axis=1) / counts).sum())
