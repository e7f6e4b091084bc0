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
    # The host drifts from pair to pair, and side B costs `ratio` times side A in each pair:
    # the figure is the quartiles of those per-pair ratios (median 0.9), not the ratio of the
    # sides' medians (6.6 / 7.0 = 0.943 here).
    drift = [1.0, 2.0, 1.5, 3.0, 1.2, 2.5]
    ratio = [0.8, 0.9, 1.0, 0.9, 0.85, 0.95]
    asked = {"a": 0, "b": 0}
    closed: list[str] = []
    interpreters: dict[str, str] = {}

    def spawn(code: Path, cpu: int, python: str) -> Any:
        name = code.name
        interpreters[name] = python
        stdin = SimpleNamespace(close=lambda: closed.append(name))
        return SimpleNamespace(name=name, stdin=stdin, wait=lambda: 0)

    def ask(process: Any, mode: str, n: int) -> dict[str, float]:
        assert (mode, n) == ("query", 7)
        side = process.name
        pair = asked[side]
        asked[side] += 1
        order.append(side)
        cost = 4.0 * drift[pair] * (ratio[pair] if side == "b" else 1.0)
        return {"cpu_ms": cost, "wall_ms": cost}

    monkeypatch.setattr(ab, "_spawn", spawn)
    monkeypatch.setattr(ab, "_ask", ask)

    out = ab.compare(
        Path("/x/a"),
        Path("/x/b"),
        pairs=6,
        block=7,
        mode="query",
        cpu=0,
        pythons=("/venv-a/bin/python", "/venv-b/bin/python"),
    )

    assert order == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert out["ratio_b_over_a"] == pytest.approx(
        {"q1": 0.8375, "median": 0.9, "q3": 0.9625}, abs=1e-3
    )
    assert out["cpu_ms_per_decision_a"]["median"] == pytest.approx(7.0, abs=1e-3)
    assert out["cpu_ms_per_decision_b"]["median"] == pytest.approx(6.6, abs=1e-3)
    assert sorted(closed) == ["a", "b"]  # both workers are told to stop
    # Each side runs on its own interpreter (`--python-a`, `--python-b`), and says which.
    assert interpreters == {"a": "/venv-a/bin/python", "b": "/venv-b/bin/python"}
    assert (out["python_a"], out["python_b"]) == ("/venv-a/bin/python", "/venv-b/bin/python")
