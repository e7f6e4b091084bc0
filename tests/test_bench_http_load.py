"""bench/http_load.py's accounting: what the load sends, whose CPU time a request costs, and the
served process's garbage collections."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

import pytest

from bench.http_load import (
    Pauses,
    bodies,
    cpu_seconds,
    gc_figures,
    load_mix,
    loop_cpu_seconds,
)


def test_load_mix_describes_the_bodies_sent() -> None:
    users = [f"u{i}" for i in range(5)]
    lines = bodies(users, n=12)
    mix = load_mix(lines, users)
    with_query = [json.loads(line) for line in lines if "query" in json.loads(line)]
    assert mix["bodies"] == 12
    assert mix["query_share"] == round(len(with_query) / 12, 3) == 0.5
    assert mix["distinct_queries"] == sorted({body["query"] for body in with_query})
    assert len(mix["distinct_queries"]) == 3
    assert mix["distinct_users"] == len({json.loads(line)["user_id"] for line in lines})
    assert mix["demo_users"] == 5
    assert mix["k"] == [10] and mix["channels"] == ["web"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_loop_cpu_is_the_main_threads_share_of_the_process() -> None:
    pid = os.getpid()
    process, main = cpu_seconds(pid), loop_cpu_seconds(pid)

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    worker = threading.Thread(target=spin, args=(0.3,))
    worker.start()
    worker.join()
    # The worker's CPU time counts for the process, not for its main thread.
    assert cpu_seconds(pid) - process >= 0.25
    assert loop_cpu_seconds(pid) - main < 0.1
    spin(0.3)
    assert loop_cpu_seconds(pid) - main >= 0.25


def test_pauses_tally_collections_by_generation_and_read_resets() -> None:
    pauses = Pauses()
    gc.callbacks.append(pauses)
    gc.disable()  # only the collections asked for below (a collection asked for still runs)
    try:
        pauses.read()
        gc.collect(1)
        gc.collect(2)
        gc.collect(2)
        seen = pauses.read()
        after = pauses.read()
    finally:
        gc.enable()
        gc.callbacks.remove(pauses)
    assert [seen[g][0] for g in ("0", "1", "2")] == [0, 1, 2]
    assert seen["2"][1] >= seen["2"][2] > 0  # total of two pauses, at least the longest
    assert all(figures == [0, 0.0, 0.0] for figures in after.values())


def test_gc_figures_are_per_request() -> None:
    seen = {"0": [10, 2.0, 0.5], "1": [2, 1.0, 0.6], "2": [1, 12.0, 12.0]}
    assert gc_figures(seen, 500) == {
        "gc_ms_per_request": 0.03,
        "gc_full_per_1000_requests": 2.0,
        "gc_longest_pause_ms": 12.0,
    }
