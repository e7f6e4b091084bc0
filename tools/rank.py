"""Ranking caller-supplied actions for a context (Personalizer's Rank) with a linear bandit.

The caller describes the context and each action with feature objects (JSON: nested objects,
strings, numbers, booleans). They become one hashed vector per action (signed feature hashing
into `DIM` coordinates, as Vowpal Wabbit does):

- the action's own features and its id (each action's base rate);
- every context feature crossed with every action feature (quadratic interactions: what this
  action is worth *in this context*), and with the action's id;
- in multi-slot ranks, the slot's features crossed with the action's.

The vector is scaled to unit length, and LinTS (`tools.linear`) picks the action for each slot
with a logged probability, slots in order, an action used at most once. A reward by event id adds
the chosen vector and the reward to the model's observations (`store.linear`), which every worker
folds into the same ridge posterior, so the next rank scores accordingly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from store.linear import LinearState
from tools.linear import LinearBandit

DIM = 256
POLICY = f"rank@h{DIM}"
SEGMENT = "all"
MAX_SLOTS = 8
BIAS = "bias"


def flatten(features: Sequence[Mapping[str, Any]], prefix: str = "") -> dict[str, float]:
    """Feature objects as {name: value}: strings and booleans become `path=value` with value 1,
    numbers keep their value under `path`; lists spread their elements."""
    out: dict[str, float] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{path}.{key}" if path else str(key), inner)
        elif isinstance(value, list):
            for inner in value:
                walk(path, inner)
        elif isinstance(value, bool | str):
            out[f"{path}={value}"] = 1.0
        elif isinstance(value, int | float):
            out[path] = out.get(path, 0.0) + float(value)

    for group in features:
        walk(prefix, group)
    return out


def _slot(name: str) -> tuple[int, float]:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return number % DIM, 1.0 if (number >> 63) & 1 else -1.0


def action_vector(
    context: Mapping[str, float],
    action_id: str,
    action: Mapping[str, float],
    slot: Mapping[str, float] | None = None,
) -> np.ndarray:
    """x(context, action[, slot]) as the module describes it, of unit length."""
    vector = np.zeros(DIM)
    own = {f"id={action_id}": 1.0, **{f"a:{k}": v for k, v in action.items()}}

    def add(name: str, value: float) -> None:
        index, sign = _slot(name)
        vector[index] += sign * value

    for name, value in own.items():
        add(name, value)
        for c_name, c_value in context.items():
            add(f"{c_name}*{name}", c_value * value)
        for s_name, s_value in (slot or {}).items():
            add(f"slot:{s_name}*{name}", s_value * value)
    norm = math.sqrt(float(vector @ vector))
    return vector / norm if norm > 0 else vector


@dataclass(frozen=True)
class SlotChoice:
    slot_id: str
    action_id: str
    probability: float
    features: tuple[float, ...]
    probabilities: dict[str, float]
    scores: dict[str, float]


def rank_slots(
    bandit: LinearBandit,
    state: LinearState,
    slots: Sequence[tuple[str, Mapping[str, np.ndarray]]],
) -> list[SlotChoice]:
    """For each slot in order, the chosen action among its candidates ({action_id: x}), which
    are no longer candidates for the slots after it."""
    taken: set[str] = set()
    out = []
    for slot_id, contexts in slots:
        left = {a: x for a, x in contexts.items() if a not in taken}
        if not left:
            raise ValueError(f"slot {slot_id!r} has no action left to rank")
        choice = bandit.choose(left, state)
        taken.add(choice.offer_id)
        out.append(
            SlotChoice(
                slot_id=slot_id,
                action_id=choice.offer_id,
                probability=choice.propensity,
                features=choice.features,
                probabilities=choice.probabilities,
                scores={a: float(x @ state.theta) for a, x in left.items()},
            )
        )
    return out
