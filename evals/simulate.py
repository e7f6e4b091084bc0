"""The `bandit-sim` suite kind: offer bandits on a seeded simulation of people with hidden tastes.

**The world** (`make_world`). Each round one person arrives, drawn independently:

- hidden: category affinities (Dirichlet(0.3) over the offers' categories), price sensitivity
  s ~ U(0, 1), an engagement level from recency;
- seen (the `user_features` of `tools.linear.OfferFeatures`): channel (web 45%, app 25%, email
  20%, push 10%), days since last activity (exponential, mean 20; 10% never seen), events in 30
  days (Poisson, more for recent people), price band (a noisy reading of s; unknown for 15%),
  and category affinity estimated from 1 + that many events drawn from the true affinities, so
  light users' affinities are noisy.

Person u clicks offer o with probability p = σ(c + a_o + 2.5·m(u, o) + 2·δ_o·(0.5 + s_u) +
channel + engagement + ε_uo): a_o ~ N(0, 0.5²) is the offer's hidden appeal, m the true affinity
share on o's categories, δ_o = discount / 50, channel effects web 0, app +0.2, email −0.3, push
−0.5, engagement +0.4 (active in the last 7 days) or −0.4 (not in 30 days), and ε_uo ~ N(0, 0.3²)
taste that nothing about the person explains. The weights are `WorldParams`; c is set by
bisection so that a uniformly random eligible offer is clicked 3% of the time (the best offer
for each person is then clicked about 10% of the time, the best single offer per channel about
8%). Eligible offers are those valid on the person's channel. A click is drawn with a uniform
number shared by all policies (common random numbers), so policies differ by their choices, not
their luck.

**Metrics** per policy are expected regret, free of click noise, measured on v = E_ε[p], the
click probability averaged over the unexplainable ε (Gauss–Hermite quadrature): a policy can
learn everything about a person but ε. `regret` = Σ_t max_o v(t, o) − v(t, chosen), against the
best offer for each person; `regret_vs_best_fixed` against the best single offer per channel in
hindsight (negative when a policy beats every fixed offer); `ctr` = clicks drawn / rounds; and
`regret_ratio_vs_random` = regret / the expected regret of a uniformly random choice on the same
stream, computed exactly rather than sampled. A policy that ignores the person cannot get its
ratio below that of the best fixed offer, which the report's reference table shows.

Systems (`type`): `random`; `thompson` (`tools.bandit.ThompsonSampling` with in-memory Beta
updates; params `segment`: channel|global, `prior`: {alpha, beta}, `draws`); `lints` and
`linucb` (`tools.linear`, one model over all channels; params of `LinearConfig` and `prior`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.base import Plot, Row, RunContext, SuiteError, SuiteResult, SystemSpec, register
from store.bandit import ArmState
from store.linear import LinearState
from tools.bandit import ThompsonSampling
from tools.bandit_priors import bandit_priors
from tools.linear import LinearConfig, linear_bandit
from tools.offer_features import CHANNELS, OfferFeatures

CHANNEL_SHARE = (0.45, 0.25, 0.20, 0.10)
CHANNEL_LOGIT = (0.0, 0.2, -0.3, -0.5)
PROGRESS_EVERY = 1000


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldParams(_Params):
    target_ctr: float = Field(
        default=0.03, gt=0, lt=0.5, description="CTR of a random eligible offer."
    )
    appeal_sd: float = Field(default=0.5, ge=0)
    affinity_weight: float = Field(default=2.5, ge=0)
    discount_weight: float = Field(default=2.0, ge=0)
    noise_sd: float = Field(default=0.3, ge=0)
    concentration: float = Field(default=0.3, gt=0)


class SimParams(_Params):
    rounds: int = Field(default=20_000, ge=10)
    repeats: int = Field(default=1, ge=1, description="Worlds simulated; metrics are their mean.")
    world: WorldParams = WorldParams()


class Prior(_Params):
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)


class ThompsonParams(_Params):
    segment: Literal["channel", "global"] = "channel"
    prior: Prior = Prior()
    draws: int = Field(default=100, ge=100)


class LinearParams(_Params):
    prior: Prior = Prior()
    epsilon: float | None = None
    ridge: float | None = None
    scale: float | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class World:
    """A stream of people and what each would do with each offer."""

    offers: list[dict[str, Any]]
    users: list[dict[str, Any]]  # the observed features of the person of each round
    channel: np.ndarray  # (rounds,) index into CHANNELS
    eligible: list[np.ndarray]  # per channel: indices of the offers valid on it
    p: np.ndarray  # (rounds, offers) click probability, noise included; 0 where not eligible
    value: np.ndarray  # (rounds, offers) p averaged over the noise ε: what regret is measured on
    uniform: np.ndarray  # (rounds,) click when uniform < p

    @property
    def rounds(self) -> int:
        return len(self.users)


def load_offers(folder: Path) -> list[dict[str, Any]]:
    path = folder / "offers.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"datasets: cannot read {path}: {error.strerror}") from error
    offers = [json.loads(line) for line in lines if line.strip()]
    if len(offers) < 2:
        raise SuiteError(f"datasets: {path} needs at least two offers for a bandit")
    return offers


def make_world(
    offers: Sequence[Mapping[str, Any]],
    rounds: int,
    rng: np.random.Generator,
    params: WorldParams | None = None,
) -> World:
    """Draw `rounds` people and the hidden click probabilities; seeded by `rng` alone."""
    params = params or WorldParams()
    categories = sorted({c for o in offers for c in o["categories"]})
    members = np.array([[c in o["categories"] for c in categories] for o in offers], dtype=float)
    discount = np.array([min(o["discount_percent"] / 50.0, 1.0) for o in offers])
    appeal = rng.normal(0.0, params.appeal_sd, len(offers))
    channel = rng.choice(len(CHANNELS), size=rounds, p=CHANNEL_SHARE)
    affinity = rng.dirichlet(np.full(len(categories), params.concentration), size=rounds)
    sensitivity = rng.uniform(0.0, 1.0, rounds)
    never = rng.random(rounds) < 0.10
    recency = np.where(never, np.inf, rng.exponential(20.0, rounds))
    frequency = np.where(never, 0, rng.poisson(8.0 * np.exp(-recency / 15.0)))
    reading = sensitivity + rng.normal(0.0, 0.2, rounds)
    band = np.where(reading > 0.6, "low", np.where(reading < 0.25, "high", "mid"))
    band = np.where(never | (rng.random(rounds) < 0.15), "unknown", band)
    users = []
    for t in range(rounds):
        seen = {} if never[t] else _observed_affinity(rng, affinity[t], categories, frequency[t])
        users.append(
            {
                "channel": CHANNELS[channel[t]],
                "recency_days": None if never[t] else round(float(recency[t]), 2),
                "frequency_30d": int(frequency[t]),
                "price_band": None if band[t] == "unknown" else str(band[t]),
                "category_affinity": seen,
            }
        )
    engagement = np.where(recency <= 7, 0.4, np.where(recency > 30, -0.4, 0.0))
    logit = (
        appeal[None, :]
        + params.affinity_weight * np.minimum(affinity @ members.T, 1.0)
        + params.discount_weight * discount[None, :] * (0.5 + sensitivity[:, None])
        + (np.array(CHANNEL_LOGIT)[channel] + engagement)[:, None]
    )
    noise = rng.normal(0.0, params.noise_sd, (rounds, len(offers)))
    eligible_by_channel = [
        np.array([i for i, o in enumerate(offers) if name in o["channels"]]) for name in CHANNELS
    ]
    mask = np.zeros((rounds, len(offers)), dtype=bool)
    for index, eligible in enumerate(eligible_by_channel):
        mask[np.ix_(channel == index, eligible)] = True
    base = _calibrate(logit, mask, params.target_ctr, params.noise_sd)
    return World(
        offers=[dict(o) for o in offers],
        users=users,
        channel=channel,
        eligible=eligible_by_channel,
        p=np.where(mask, _sigmoid(logit + base + noise), 0.0),
        value=np.where(mask, _noise_mean(logit + base, params.noise_sd), 0.0),
        uniform=rng.random(rounds),
    )


def _observed_affinity(
    rng: np.random.Generator, affinity: np.ndarray, categories: list[str], frequency: int
) -> dict[str, float]:
    counts = rng.multinomial(1 + frequency, affinity)
    total = counts.sum()
    return {c: round(n / total, 4) for c, n in zip(categories, counts, strict=True) if n}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _noise_mean(logit: np.ndarray, noise_sd: float) -> np.ndarray:
    """E[σ(logit + ε)] for ε ~ N(0, noise_sd²), by 16-point Gauss–Hermite quadrature."""
    nodes, weights = np.polynomial.hermite.hermgauss(16)
    total = np.zeros_like(logit)
    for node, weight in zip(nodes, weights, strict=True):
        total += weight * _sigmoid(logit + np.sqrt(2.0) * noise_sd * node)
    return total / np.sqrt(np.pi)


def _calibrate(logit: np.ndarray, mask: np.ndarray, target: float, noise_sd: float) -> float:
    """The intercept that makes a random eligible offer's mean click probability `target`."""
    low, high = -20.0, 20.0
    sample = slice(0, 5000)  # enough rounds to set the intercept to a few parts in a thousand
    share = mask[sample] / mask[sample].sum(axis=1, keepdims=True)
    for _ in range(40):
        middle = (low + high) / 2
        mean = float((share * _noise_mean(logit[sample] + middle, noise_sd)).sum(axis=1).mean())
        low, high = (middle, high) if mean < target else (low, middle)
    return (low + high) / 2


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


def make_learner(system: SystemSpec, where: str, world: World, rng: np.random.Generator) -> Learner:
    try:
        if system.type == "random":
            _Params.model_validate(system.params)
            return RandomLearner(world, rng)
        if system.type == "thompson":
            return ThompsonLearner(world, rng, ThompsonParams.model_validate(system.params))
        if system.type in ("lints", "linucb"):
            params = LinearParams.model_validate(system.params)
            return LinearLearner(world, rng, "ts" if system.type == "lints" else "ucb", params)
    except ValidationError as error:
        raise SuiteError(_problems(f"{where}.params", error)) from None
    raise SuiteError(
        f"{where}.type: unknown system type {system.type!r}; use random, thompson, lints or linucb"
    )


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
        raise SuiteError(_problems("params", error)) from None
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
            "best fixed offer's ratio (reference table). See `evals/simulate.py` for the world."
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


def _problems(where: str, error: ValidationError) -> str:
    return "; ".join(
        f"{where}.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
