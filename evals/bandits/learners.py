"""The policies the `bandit-sim` suite runs, each updating its state in memory.

Systems (`type`): `random`; `thompson` (`tools.bandit.ThompsonSampling` with in-memory Beta
updates; params `segment`: channel|global, `prior`: {alpha, beta}, `draws`); `lints` and
`linucb` (`tools.linear`, one model over all channels; params of `LinearConfig` and `prior`).

"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from pydantic import Field, ValidationError

from evals.bandits.world import Params, World
from evals.base import SuiteError, SystemSpec
from store.bandit import ArmState
from store.linear import LinearState
from tools.bandit import ThompsonSampling
from tools.bandit_priors import bandit_priors
from tools.linear import LinearConfig, linear_bandit
from tools.offer_features import CHANNELS, OfferFeatures


class Prior(Params):
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)


class ThompsonParams(Params):
    segment: Literal["channel", "global"] = "channel"
    prior: Prior = Prior()
    draws: int = Field(default=100, ge=100)


class LinearParams(Params):
    prior: Prior = Prior()
    epsilon: float | None = None
    ridge: float | None = None
    scale: float | None = None
    alpha: float | None = None


class Learner(Protocol):
    def act(self, t: int) -> int: ...
    def learn(self, t: int, offer: int, reward: float) -> None: ...


class RandomLearner:
    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.world, self.rng = world, rng

    def act(self, t: int) -> int:
        return int(self.rng.choice(self.world.eligible[self.world.channel[t]]))

    def learn(self, t: int, offer: int, reward: float) -> None:
        pass


class ThompsonLearner:
    """`tools.bandit.ThompsonSampling` over Beta posteriors kept in memory, per segment."""

    def __init__(self, world: World, rng: np.random.Generator, params: ThompsonParams) -> None:
        self.world, self.params = world, params
        self.policy = ThompsonSampling(rng, draws=params.draws)
        segments = len(CHANNELS) if params.segment == "channel" else 1
        shape = (segments, len(world.offers))
        self.alpha = np.full(shape, params.prior.alpha)
        self.beta = np.full(shape, params.prior.beta)
        self.pulls = np.zeros(shape, dtype=int)
        self.index = {o["offer_id"]: i for i, o in enumerate(world.offers)}

    def _segment(self, t: int) -> int:
        return int(self.world.channel[t]) if self.params.segment == "channel" else 0

    def act(self, t: int) -> int:
        s = self._segment(t)
        arms = {
            self.world.offers[i]["offer_id"]: ArmState(
                self.world.offers[i]["offer_id"],
                self.alpha[s, i],
                self.beta[s, i],
                self.pulls[s, i],
            )
            for i in self.world.eligible[self.world.channel[t]]
        }
        return self.index[self.policy.choose(arms).offer_id]

    def learn(self, t: int, offer: int, reward: float) -> None:
        s = self._segment(t)
        self.alpha[s, offer] += reward
        self.beta[s, offer] += 1.0 - reward
        self.pulls[s, offer] += 1


class LinearLearner:
    """A `tools.linear` bandit with its state updated in memory (Sherman–Morrison)."""

    def __init__(
        self,
        world: World,
        rng: np.random.Generator,
        kind: Literal["ts", "ucb"],
        params: LinearParams,
    ) -> None:
        overrides = params.model_dump(exclude={"prior"}, exclude_none=True)
        self.config = LinearConfig(kind=kind, **overrides)
        self.bandit = linear_bandit(rng, self.config)
        self.world = world
        self.space = OfferFeatures(o["offer_id"] for o in world.offers)
        prior = bandit_priors({}, self.space, default=(params.prior.alpha, params.prior.beta))
        self.state = LinearState.empty(self.space.dim, self.config.ridge, prior.linear)
        self.offers_by_channel = [[world.offers[i] for i in e] for e in world.eligible]
        self._X = np.empty(0)

    def act(self, t: int) -> int:
        channel = self.world.channel[t]
        self._X = self.space.matrix(self.world.users[t], self.offers_by_channel[channel])
        self._row = self.bandit.pick(self._X, self.state)
        return int(self.world.eligible[channel][self._row])

    def learn(self, t: int, offer: int, reward: float) -> None:
        self.state = self.state.updated(self._X[self._row], reward)


def make_learner(system: SystemSpec, where: str, world: World, rng: np.random.Generator) -> Learner:
    try:
        if system.type == "random":
            Params.model_validate(system.params)
            return RandomLearner(world, rng)
        if system.type == "thompson":
            return ThompsonLearner(world, rng, ThompsonParams.model_validate(system.params))
        if system.type in ("lints", "linucb"):
            params = LinearParams.model_validate(system.params)
            return LinearLearner(world, rng, "ts" if system.type == "lints" else "ucb", params)
    except ValidationError as error:
        raise SuiteError(param_problems(f"{where}.params", error)) from None
    raise SuiteError(
        f"{where}.type: unknown system type {system.type!r}; use random, thompson, lints or linucb"
    )


def param_problems(where: str, error: ValidationError) -> str:
    return "; ".join(
        f"{where}.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
