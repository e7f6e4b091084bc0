"""bench/http_load.py's accounting: what the load sends, and whose CPU time a request costs."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from bench.http_load import bodies, cpu_seconds, load_mix, loop_cpu_seconds


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
