"""Two checkouts' decisions, interleaved: the CPU time a decision costs in each, on one core.

On a shared 2-core host a decision's time drifts by more than most changes are worth (the same
code, minutes apart, took 3.5 and 8.2 ms of CPU per decision in session 15), so runs of
`bench/decide.py` one after the other cannot tell a 5 % change from the weather. Here each
checkout runs in a long-lived worker process of its own (its code on `PYTHONPATH`, its own demo
world seeded alike), both pinned to the same core, and the two take turns: a block of `--block`
decisions in one, then the same block in the other, the order swapped every pair. Each block's
CPU time (`time.thread_time`) per decision is compared with its partner's; the figure is the
median of the per-pair ratios B / A with its quartiles, and the medians of each side.

A placebo (one checkout as both A and B) read 0.96-0.98, quartiles about ±8 %, in session 15:
run a comparison both ways round (`--swap`) and quote both; a change shows in both.

    .venv/bin/python bench/decide_ab.py A_DIR B_DIR [--pairs 60] [--block 50]
        [--mode no_query|query|all|anonymous] [--cpu 1] [--python-a PY] [--python-b PY]
        [--out FILE]

`--python-a` / `--python-b` run a side on another interpreter (a virtualenv's `bin/python`, the
packages installed alike): the same checkout twice with two interpreters compares the builds.

`--mode` picks the load: decisions without query text (`no_query`), with one of the load's
texts (`query`: the three texts of `bench/http_load.py`'s mix, seen again and again), the mix
(`all`): `bench/http_load.py`'s 400 request bodies, or the mix about anonymous visitors
(`anonymous`: each body's user id made a visitor's anonymous id, linked to nobody; seen before
from the warm-up on). Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("no_query", "query", "all", "anonymous")


def worker(code: Path) -> None:
    """Runs in a checkout's own process: builds its demo world, then answers `MODE N` lines
    with the CPU and wall time per decision of the next N decisions of that load."""
    sys.path.insert(0, str(code))
    from agents.decide.run import DecideRequest, decide
    from agents.factory import build_services, settle
    from agents.reindex import start as start_service
    from bench.http_load import bodies
    from bench.report import product_settings
    from store.schemas import Channel

    with contextlib.redirect_stdout(io.StringIO()):
        settings = product_settings(home=Path(tempfile.mkdtemp()), seed=1)
        services = build_services(settings)
        start_service(services, settings.demo_dir)
    users = [
        json.loads(line)["user_id"]
        for line in (code / "data" / "demo" / "users.jsonl").read_text().splitlines()
        if line.strip()
    ]
    requests = [
        DecideRequest(
            channel=Channel(body["channel"]), user_id=body["user_id"], query=body.get("query"), k=10
        )
        for body in map(json.loads, bodies(users))
    ]
    visitors = [
        DecideRequest(channel=r.channel, anonymous_id=f"visitor-{r.user_id}", query=r.query, k=r.k)
        for r in requests
    ]
    loads = {
        "no_query": [r for r in requests if not r.query],
        "query": [r for r in requests if r.query],
        "all": requests,
        "anonymous": visitors,
    }
    settle()
    for request in requests + visitors:  # warm: every person and text once
        decide(services, request)
    at = dict.fromkeys(loads, 0)
    print("ready", flush=True)
    for line in sys.stdin:
        mode, count = line.split()
        load, n = loads[mode], int(count)
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(n):
            decide(services, load[at[mode] % len(load)])
            at[mode] += 1
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        print(json.dumps({"cpu_ms": cpu / n * 1000, "wall_ms": wall / n * 1000}), flush=True)


def _spawn(code: Path, cpu: int, python: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [python, str(ROOT / "bench" / "decide_ab.py"), "--worker", str(code)]
    process = subprocess.Popen(
        ["taskset", "-c", str(cpu), *command],
        cwd=code,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("ready"):
            return process
    raise SystemExit(f"the worker for {code} stopped before it was ready (its stderr is above)")


def _ask(process: subprocess.Popen[str], mode: str, n: int) -> dict[str, float]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{mode} {n}\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def _quartiles(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"q1": round(q1, 3), "median": round(median, 3), "q3": round(q3, 3)}


def compare(
    a: Path,
    b: Path,
    *,
    pairs: int,
    block: int,
    mode: str,
    cpu: int,
    pythons: tuple[str, str] = (sys.executable, sys.executable),
) -> dict[str, Any]:
    workers = [_spawn(a, cpu, pythons[0]), _spawn(b, cpu, pythons[1])]
    blocks: list[list[dict[str, float]]] = [[], []]
    try:
        for pair in range(pairs):
            for side in (0, 1) if pair % 2 == 0 else (1, 0):
                blocks[side].append(_ask(workers[side], mode, block))
    finally:
        for process in workers:
            assert process.stdin is not None
            process.stdin.close()
            process.wait()
    ratios = [y["cpu_ms"] / x["cpu_ms"] for x, y in zip(blocks[0], blocks[1], strict=True)]
    return {
        "a": str(a),
        "b": str(b),
        "python_a": pythons[0],
        "python_b": pythons[1],
        "mode": mode,
        "pairs": pairs,
        "block": block,
        "cpu": cpu,
        "cpu_ms_per_decision_a": _quartiles([x["cpu_ms"] for x in blocks[0]]),
        "cpu_ms_per_decision_b": _quartiles([x["cpu_ms"] for x in blocks[1]]),
        "ratio_b_over_a": _quartiles(ratios),
        "load_average": list(os.getloadavg()),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--block", type=int, default=50, help="decisions per block")
    parser.add_argument("--mode", choices=MODES, default="no_query")
    parser.add_argument("--cpu", type=int, default=1, help="the core both workers run on")
    parser.add_argument("--swap", action="store_true", help="also run B as A and A as B")
    parser.add_argument("--python-a", default=sys.executable, help="A's interpreter (a venv's)")
    parser.add_argument("--python-b", default=sys.executable, help="B's interpreter (a venv's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.pairs < 4 or args.block < 1:
        parser.error("--pairs must be at least 4 (quartiles) and --block at least 1")
    a, b = args.a.absolute(), args.b.absolute()  # the same folder twice is a placebo
    kwargs = {"pairs": args.pairs, "block": args.block, "mode": args.mode, "cpu": args.cpu}
    pythons = (args.python_a, args.python_b)
    runs = [compare(a, b, **kwargs, pythons=pythons)]
    if args.swap:
        runs.append(compare(b, a, **kwargs, pythons=(pythons[1], pythons[0])))
    text = json.dumps({"runs": runs}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
