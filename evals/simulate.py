"""Simulated traffic through the real service: people of the demo world ask for decisions, act on
what they are shown by a known preference model, and their events go back through `/v1/events`.

The preference model (seeded; every number here is the model):

- a person's taste over categories is their stored category affinity (`GET /v1/users/{id}`),
  smoothed: taste(c) = (affinity(c) + 0.02) / sum;
- each shown item at position i is clicked with probability min(0.9, 0.6 * taste(cat) / (1 + i))
  + 0.01;
- the person buys with probability sigmoid(-3.5 + 4 * taste of the best-liked shown item
  + offer effect), where an offer adds 2 * (taste of its categories) + 2 * discount / 50 + its
  hidden appeal (normal, sd 0.7, fixed per offer by the seed); they buy the shown item they like
  best, with the offer's id when the offer covers that item's category.

Clicks name their decision (`decision_id`) with probability `explicit`; purchases never do, so
they are attributed by the policy's window. The service's clock is real; after each round the
reward sweep is run as of one window later, so that the round's decisions are rewarded (or get
the default) before the next round — the one place where the simulation moves time forward.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

# FastAPI's TestClient for the app in process, or an HTTP client of a server: anything with
# `get` and `post` answering responses with `json()` and `raise_for_status()`.
Client = Any


@dataclass(frozen=True)
class Simulated:
    decisions: int
    arms: dict[str, int]
    events: dict[str, int]
    attributed: int


def simulate(
    client: Client,
    people: list[str],
    offers: dict[str, dict[str, Any]],
    *,
    decisions: int,
    settle: Any,
    window_hours: float,
    seed: int = 0,
    round_size: int = 200,
    explicit: float = 0.25,
    channel: str = "web",
) -> Simulated:
    """Drive `decisions` decisions; `settle(now)` runs the reward sweep as of `now`."""
    rng = np.random.default_rng(seed)
    tastes = {person: _taste(client, person) for person in people}
    appeal = {
        offer_id: float(np.random.default_rng([seed, zlib.crc32(offer_id.encode())]).normal(0, 0.7))
        for offer_id in offers
    }
    arms: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    attributed = 0
    for start in range(0, decisions, round_size):
        for step in range(start, min(decisions, start + round_size)):
            person = people[int(rng.integers(len(people)))]
            response = client.post(
                "/v1/decide", json={"user_id": person, "channel": channel, "k": 5}
            )
            response.raise_for_status()
            decision = response.json()
            record = client.get(f"/v1/decisions/{decision['decision_id']}").json()["record"]
            arms[(record.get("experiment") or {}).get("arm", "none")] += 1
            events = _act(rng, tastes[person], decision, offers, appeal, explicit)
            if not events:
                continue
            now = datetime.now(UTC)
            batch = [
                {
                    "event_id": f"sim-{seed}-{step}-{i}",
                    "ts": (now + timedelta(seconds=1 + i)).isoformat(),
                    "user_id": person,
                    **event,
                }
                for i, event in enumerate(events)
            ]
            posted = client.post("/v1/events", json={"events": batch}).json()
            kinds.update(e["type"] for e in events)
            attributed += sum(r.get("attributed_to") is not None for r in posted["results"])
        settle(datetime.now(UTC) + timedelta(hours=window_hours, seconds=1))
    return Simulated(decisions, dict(arms), dict(kinds), attributed)


def _taste(client: Client, person: str) -> dict[str, float]:
    features = client.get(f"/v1/users/{person}").json().get("features") or {}
    affinity = features.get("category_affinity") or {}
    total = sum(affinity.values()) + 0.02 * max(1, len(affinity))
    return {c: (v + 0.02) / total for c, v in affinity.items()}


def _act(
    rng: np.random.Generator,
    taste: dict[str, float],
    decision: dict[str, Any],
    offers: dict[str, dict[str, Any]],
    appeal: dict[str, float],
    explicit: float,
) -> list[dict[str, Any]]:
    items = decision["items"]
    events: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        like = taste.get(item["category"], 0.0)
        if rng.random() < min(0.9, 0.6 * like / (1 + position)) + 0.01:
            click = {"type": "click", "item_id": item["item_id"]}
            if rng.random() < explicit:
                click["decision_id"] = decision["decision_id"]
            events.append(click)
    if not items:
        return events
    best = max(items, key=lambda i: taste.get(i["category"], 0.0))
    logit = -3.5 + 4 * taste.get(best["category"], 0.0)
    offer = decision.get("offer")
    covers = False
    if offer is not None:
        categories = offers.get(offer["offer_id"], {}).get("categories") or []
        logit += 2 * sum(taste.get(c, 0.0) for c in categories)
        logit += 2 * offer["discount_percent"] / 50 + appeal.get(offer["offer_id"], 0.0)
        covers = not categories or best["category"] in categories
    if rng.random() < 1 / (1 + math.exp(-logit)):
        discount = offer["discount_percent"] if offer is not None and covers else 0.0
        purchase = {
            "type": "purchase",
            "item_id": best["item_id"],
            "value": round(best["price"] * (1 - discount / 100), 2),
        }
        if offer is not None and covers:
            purchase["offer_id"] = offer["offer_id"]
        events.append(purchase)
    return events
