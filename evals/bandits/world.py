"""The simulated world of the `bandit-sim` suite: people with hidden tastes, offers, and clicks.

Each round one person arrives, drawn independently:

- hidden: category affinities (Dirichlet(0.3) over the offers' categories), price sensitivity
  s ~ U(0, 1), an engagement level from recency;
- seen (the `user_features` of `tools.offer_features.OfferFeatures`): channel (web 45%, app 25%, email
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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.base import SuiteError
from tools.offer_features import CHANNELS

CHANNEL_SHARE = (0.45, 0.25, 0.20, 0.10)
CHANNEL_LOGIT = (0.0, 0.2, -0.3, -0.5)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldParams(Params):
    target_ctr: float = Field(
        default=0.03, gt=0, lt=0.5, description="CTR of a random eligible offer."
    )
    appeal_sd: float = Field(default=0.5, ge=0)
    affinity_weight: float = Field(default=2.5, ge=0)
    discount_weight: float = Field(default=2.0, ge=0)
    noise_sd: float = Field(default=0.3, ge=0)
    concentration: float = Field(default=0.3, gt=0)


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
