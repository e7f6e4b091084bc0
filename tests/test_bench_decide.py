"""bench/decide.py's load-free figure: the Python and C calls per run of a scenario."""

from __future__ import annotations

import sys

import pytest

from bench.decide import calls_per_run


def _leaf() -> int:
    return len("ab")  # one C call


def _two_leaves(i: int) -> None:
    _leaf()
    _leaf()


def _three_leaves(i: int) -> None:
    _leaf()
    _leaf()
    _leaf()


def test_calls_per_run_counts_each_python_and_c_call_of_a_run() -> None:
    # A run of `_two_leaves`: itself, `_leaf` twice, `len` twice. The loop's own `range` and the
    # profiler's removal are counted once over all runs, a rounding error at 1000 runs.
    assert round(calls_per_run(_two_leaves, 1000)) == 5
    assert round(calls_per_run(_three_leaves, 1000)) == 7


def test_calls_per_run_leaves_no_profiler_behind_even_when_a_run_raises() -> None:
    def failing(i: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        calls_per_run(failing, 3)
    assert sys.getprofile() is None
