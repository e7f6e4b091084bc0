"""A small slice of the demo world (same files, same format) that seeds in seconds, for tests
that need many fresh homes: schema fuzzing and the stateful machine."""

from __future__ import annotations

import json
from pathlib import Path

from agents.settings import PROJECT_ROOT

DEMO = PROJECT_ROOT / "data" / "demo"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines() if line.strip()]


def write_small_world(folder: Path, *, users: int = 24, items: int = 160) -> Path:
    """The first `users` people (and u_0101..u_0103), the first `items` items, every offer, and
    the events among them (anonymous ones only of ids linked to a kept person)."""
    folder.mkdir(parents=True, exist_ok=True)
    kept_items = {row["item_id"] for row in _rows("items.jsonl")[:items]}
    kept_users = {row["user_id"] for row in _rows("users.jsonl")[:users]}
    kept_users |= {"u_0101", "u_0102", "u_0103"}
    events = _rows("events.jsonl")
    anons = {e["anonymous_id"] for e in events if e["user_id"] in kept_users and e["anonymous_id"]}
    kept_events = [
        e
        for e in events
        if e["item_id"] in kept_items
        and (e["user_id"] in kept_users or (e["user_id"] is None and e["anonymous_id"] in anons))
    ]
    for name, rows in (
        ("items.jsonl", [r for r in _rows("items.jsonl") if r["item_id"] in kept_items]),
        ("offers.jsonl", _rows("offers.jsonl")),
        ("users.jsonl", [r for r in _rows("users.jsonl") if r["user_id"] in kept_users]),
        ("events.jsonl", kept_events),
    ):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = DEMO / "policy.yaml"
    (folder / "policy.yaml").write_text(policy.read_text())
    return folder
