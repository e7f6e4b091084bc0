"""bench/decide_ab.py's pairing: blocks alternate which side runs first, and the figure is the
per-pair ratio B / A, with no demo world built (the workers are stand-ins)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bench.decide_ab as ab


def test_compare_alternates_the_sides_and_reports_per_pair_ratios(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []
    # Side B costs 0.9x side A in every pair, while the host drifts from pair to pair: the
    # ratio must come out 0.9 whatever the drift.
    drift = [1.0, 2.0, 1.5, 3.0, 1.2, 2.5]
    asked = {"a": 0, "b": 0}
    closed: list[str] = []

    def spawn(code: Path, cpu: int) -> Any:
        name = code.name
        stdin = SimpleNamespace(close=lambda: closed.append(name))
        return SimpleNamespace(name=name, stdin=stdin, wait=lambda: 0)

    def ask(process: Any, mode: str, n: int) -> dict[str, float]:
        assert (mode, n) == ("query", 7)
        side = process.name
        pair = asked[side]
        asked[side] += 1
        order.append(side)
        cost = 4.0 * drift[pair] * (0.9 if side == "b" else 1.0)
        return {"cpu_ms": cost, "wall_ms": cost}

    monkeypatch.setattr(ab, "_spawn", spawn)
    monkeypatch.setattr(ab, "_ask", ask)

    out = ab.compare(Path("/x/a"), Path("/x/b"), pairs=6, block=7, mode="query", cpu=0)

    assert order == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert out["ratio_b_over_a"] == {"q1": 0.9, "median": 0.9, "q3": 0.9}
    assert out["cpu_ms_per_decision_a"]["median"] == pytest.approx(4.0 * 1.75, abs=1e-3)
    assert sorted(closed) == ["a", "b"]  # both workers are told to stop
