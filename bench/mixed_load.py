"""Ranks, similar items, event batches and rewards, alone and beside decisions over HTTP.

A decision with the offline writer runs on the event loop, one at a time through the first-come,
first-served gate (`api.gate`); a rank and a similar-items read (`GET
/v1/catalog/items/{id}/similar`) are the same kind of work (Python, SQL, a vector search, no
network wait), and an event batch (`POST /v1/events`) or a reward (`POST /v1/feedback`) is SQL
writes and Python. It matters how
they share the one core a single process can use: a request run in a worker thread competes for
the GIL with the loop, preempting whatever runs there every switch interval (and writers in
threads side by side wait for SQLite's one write lock), while one that takes a turn through the
gate waits its turn and then runs to its end.

Starts `attune serve` on the demo world (as `bench/http_load.py` does: its own home, seeded, keys
on, one key with the `decide` and `events` scopes), and with `--baseline CHECKOUT` a second
server running that checkout, loaded in rotation with the first so that the machine's load moves
both alike. For each server and repeat, each of `--scenarios`: `rank`, `similar`, `events`,
`feedback` and `rank_reward` alone at `--connections`; `mixed`, `mixed_similar`, `mixed_events`,
`mixed_feedback` and `mixed_rank_reward`: decisions and the other route at half the connections
each, at the same time (two wrk processes). Event batches hold 1 to 5 events about a demo user, with ids no request used
before and the time they are sent (`EVENTS_SCRIPT`), as a site sends them while people browse.
A reward is once per decision or rank: each reward goes to a decision of its own, with an offer
and no reward yet, made beforehand for an anonymous visitor never seen before, or to a rank of
its own made beforehand (`refill`, read back from the server's database). Records each route's requests per
second and latency percentiles, and the server's CPU time per answered request (both routes
together in a mixed load). Prints JSON (medians of the repeats, and new / baseline ratios) and
writes it to `--out`. Needs `wrk`.

    .venv/bin/python bench/mixed_load.py [--baseline CHECKOUT] [--repeat 3] [--duration 10]
        [--scenarios rank,similar,mixed,mixed_similar,events,mixed_events,feedback,mixed_feedback,
                     rank_reward,mixed_rank_reward]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_load import (
    WRK_SCRIPT,
    bodies,
    cpu_seconds,
    create_key,
    free_port,
    run_wrk,
    stop,
    wait_up,
)
from bench.report import emit, product_settings

ROOT = Path(__file__).resolve().parents[1]
# wrk's script for GET requests: each line of the file is a path (the POST script's rotation).
GET_SCRIPT = WRK_SCRIPT.replace(
    'wrk.format("POST", nil, headers, body)', 'wrk.format("GET", body, headers)'
)
# wrk's script for event batches: every request's events get ids no request had before (`__N__`
# becomes the request's number) and the time it is sent (`__TS__`), as live traffic would send.
EVENTS_SCRIPT = WRK_SCRIPT.replace(
    "local body = bodies[(i % #bodies) + 1]",
    "local body = bodies[(i % #bodies) + 1]:gsub('__N__', tostring(i))"
    ":gsub('__TS__', os.date('!%Y-%m-%dT%H:%M:%SZ'))",
)
# wrk's script for POSTs to a path per request: each line of the file is a path, a space, a body.
PATH_SCRIPT = WRK_SCRIPT.replace(
    'return wrk.format("POST", nil, headers, body)',
    'local path, payload = body:match("^(%S+) (.*)$")\n'
    '  return wrk.format("POST", path, headers, payload)',
)
TOPICS = ["news", "sport", "music", "tech", "food"]
EVENT_TYPES = ["view", "view", "view", "click", "add_to_cart"]


def rank_bodies(users: list[str], n: int = 400, actions: int = 10) -> list[str]:
    """Rank requests for demo users: `actions` actions with a topic and a length each, and a
    context of time of day and device."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        out.append(
            json.dumps(
                {
                    "user_id": rng.choice(users),
                    "context_features": [
                        {
                            "time": rng.choice(["morning", "evening"]),
                            "device": rng.choice(["mobile", "desktop"]),
                        }
                    ],
                    "actions": [
                        {
                            "id": f"a{j}",
                            "features": [{"topic": rng.choice(TOPICS), "len": rng.randint(1, 9)}],
                        }
                        for j in range(actions)
                    ],
                }
            )
        )
    return out


def event_bodies(users: list[str], items: list[str], n: int = 400, most: int = 5) -> list[str]:
    """Event batches as a site sends them while people browse: 1 to `most` events each, about
    one demo user, for demo items; ids and times filled in per request (`EVENTS_SCRIPT`)."""
    rng = random.Random(3)
    out = []
    for _ in range(n):
        user = rng.choice(users)
        events = [
            {
                "event_id": f"bench-__N__-{j}",
                "type": rng.choice(EVENT_TYPES),
                "ts": "__TS__",
                "user_id": user,
                "item_id": rng.choice(items),
            }
            for j in range(rng.randint(1, most))
        ]
        out.append(json.dumps({"events": events}))
    return out


def similar_paths(items: list[str], users: list[str], n: int = 400) -> list[str]:
    """Similar-items reads of demo items, ten items each, half of them for a demo user (who
    bought some items: those are left out)."""
    rng = random.Random(2)
    return [
        f"/v1/catalog/items/{rng.choice(items)}/similar?k=10"
        + (f"&user_id={rng.choice(users)}" if i % 2 else "")
        for i in range(n)
    ]


# Each scenario's routes, loaded at once: one route on all of `--connections`, or two on half each.
SCENARIOS: dict[str, dict[str, str]] = {
    "rank": {"rank": "all"},
    "similar": {"similar": "all"},
    "mixed": {"decide": "half", "rank": "half"},
    "mixed_similar": {"decide": "half", "similar": "half"},
    "events": {"events": "all"},
    "mixed_events": {"decide": "half", "events": "half"},
    "feedback": {"feedback": "all"},
    "mixed_feedback": {"decide": "half", "feedback": "half"},
    "rank_reward": {"rank_reward": "all"},
    "mixed_rank_reward": {"decide": "half", "rank_reward": "half"},
}
# Routes whose every request needs something of its own (a decision or a rank no reward has
# reached), and how many a second of load at `--connections` may take: each load is given that
# many, by its share of the connections. A load that runs out answers 409s (a decision's second
# reward) or duplicates, counted in its errors or its figures.
FRESH_PER_REQUEST = {"feedback": 900, "rank_reward": 900}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout to A/B against")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, some of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mixed_load.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk (apt-get install wrk)")
    codes = {"new": ROOT} | ({"base": args.baseline} if args.baseline else {})
    exports = product_settings(home=Path(tempfile.mkdtemp())).resolved_embedding_export_dir
    envs = {
        name: {
            **os.environ,
            "PYTHONPATH": str(code),
            "ATTUNE_HOME": tempfile.mkdtemp(prefix=f"attune-bench-mixed-{name}-"),
            "ATTUNE_SEED": "1",
            "ATTUNE_AUTH": "keys",
            "ATTUNE_RATE_LIMIT_PER_MINUTE": "100000000",
            "ATTUNE_LOG_FORMAT": "text",
            "ATTUNE_EMBEDDING_EXPORT_DIR": str(exports),
        }
        for name, code in codes.items()
    }
    ports = {name: free_port() for name in codes}
    served = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "http_load.py"), "--serve-attune"],
            env={**envs[name], "ATTUNE_PORT": str(ports[name])},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in codes
    }
    try:
        for name, port in ports.items():
            wait_up(f"http://127.0.0.1:{port}/healthz", served[name])
        keys = {name: create_key(envs[name], "decide,events") for name in codes}
        users = [
            json.loads(line)["user_id"]
            for line in (ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines()
            if line.strip()
        ]
        work = Path(tempfile.mkdtemp(prefix="attune-bench-mixed-wrk-"))
        post, get, fresh = work / "post.lua", work / "get.lua", work / "events.lua"
        post.write_text(WRK_SCRIPT)
        get.write_text(GET_SCRIPT)
        fresh.write_text(EVENTS_SCRIPT)
        assert "GET" in GET_SCRIPT and "__N__" in EVENTS_SCRIPT and "payload" in PATH_SCRIPT
        items = [
            json.loads(line)["item_id"]
            for line in (ROOT / "data" / "demo" / "items.jsonl").read_text().splitlines()
            if line.strip()
        ]
        lines = {
            "decide": bodies(users),
            "rank": rank_bodies(users),
            "similar": similar_paths(items, users),
            "events": event_bodies(users, items),
            "feedback": [],  # written before each load from the server's pool
            "rank_reward": [],
        }
        files = {route: work / f"{route}.txt" for route in lines}
        for route, written in lines.items():
            files[route].write_text("\n".join(written) + "\n")
        posted = work / "posted.lua"
        posted.write_text(PATH_SCRIPT)
        scripts = {
            "decide": post,
            "rank": post,
            "similar": get,
            "events": fresh,
            "feedback": post,
            "rank_reward": posted,
        }
        paths = {
            "decide": "/v1/decide",
            "rank": "/v1/rank",
            "similar": "/",
            "events": "/v1/events",
            "feedback": "/v1/feedback",
            "rank_reward": "/",
        }
        # A reward needs something no reward has reached, one per request: a decision with an
        # offer, or a rank. Each server's pools are filled by loads that make them (decisions
        # for anonymous visitors never seen before: the demo policy caps offers per person a
        # day), read back from its database.
        pools: dict[tuple[str, str], list[str]] = {
            (name, route): [] for name in codes for route in FRESH_PER_REQUEST
        }
        given: dict[str, set[str]] = {name: set() for name in codes}
        rounds = itertools.count()

        def refill(name: str, route: str, need: int) -> None:
            while len(pools[name, route]) < need:
                if route == "feedback":
                    made, unused = work / f"visitors-{name}.txt", UNREWARDED_DECISIONS
                    # One body: wrk's script makes each request's visitor new (`__N__`).
                    body = {"channel": "web", "anonymous_id": f"bench-anon-{next(rounds)}-__N__"}
                    made.write_text(json.dumps(body) + "\n")
                    run_wrk(url(name, "decide"), 8, 5, made, fresh, keys[name])
                else:
                    unused = ACTIVE_RANKS
                    run_wrk(url(name, "rank"), 8, 5, files["rank"], post, keys[name])
                found = _served_ids(envs[name], unused)
                pools[name, route] += [i for i in found if i not in given[name]]
                given[name].update(pools[name, route])

        def url(name: str, route: str) -> str:
            return f"http://127.0.0.1:{ports[name]}{paths[route]}"

        def load(name: str, routes: dict[str, int], duration: int) -> dict[str, Any]:
            """`routes` (route -> connections) loaded at once; the server's CPU per request."""
            for route in set(routes) & set(FRESH_PER_REQUEST):
                need = FRESH_PER_REQUEST[route] * duration * routes[route] // args.connections
                refill(name, route, need)
                files[route].write_text(
                    "\n".join(
                        _reward_line(route, target, 1.0 if n % 4 == 0 else 0.0)
                        for n, target in enumerate(pools[name, route])
                    )
                    + "\n"
                )
            before = cpu_seconds(served[name].pid)
            with ThreadPoolExecutor(len(routes)) as pool:
                futures = {
                    route: pool.submit(
                        run_wrk,
                        url(name, route),
                        c,
                        duration,
                        files[route],
                        scripts[route],
                        keys[name],
                    )
                    for route, c in routes.items()
                }
                out: dict[str, Any] = {route: f.result() for route, f in futures.items()}
            for route in set(routes) & set(FRESH_PER_REQUEST):
                # wrk sends its file's lines in order: those are spent.
                del pools[name, route][: out[route]["requests"] + routes[route]]
            requests = sum(r["requests"] for r in out.values())
            spent = cpu_seconds(served[name].pid) - before
            out["cpu_ms_per_request"] = round(spent * 1000 / max(requests, 1), 3)
            return out

        half = max(args.connections // 2, 1)
        chosen = args.scenarios.split(",")
        unknown = sorted(set(chosen) - set(SCENARIOS))
        if unknown:
            raise SystemExit(f"--scenarios: unknown {unknown}; some of {list(SCENARIOS)}")
        scenarios = {
            scenario: {
                route: args.connections if share == "all" else half
                for route, share in SCENARIOS[scenario].items()
            }
            for scenario in chosen
        }
        for name in codes:  # warm-up
            load(name, {route: 2 for routes in scenarios.values() for route in routes}, 3)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {scenario: [] for scenario in scenarios} for name in codes
        }
        for repeat in range(args.repeat):
            order = list(codes) if repeat % 2 == 0 else list(codes)[::-1]
            for scenario, routes in scenarios.items():
                for name in order:
                    runs[name][scenario].append(load(name, routes, args.duration))
        results: dict[str, Any] = {
            "codes": {name: str(code) for name, code in codes.items()},
            "duration_s": args.duration,
            "repeat": args.repeat,
            "connections": args.connections,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "servers": {name: _medians(runs[name]) for name in codes},
        }
        if args.baseline:
            new, base = results["servers"]["new"], results["servers"]["base"]
            results["new_over_base"] = {
                scenario: {
                    key: (
                        {f: _ratio(new[scenario][key][f], base[scenario][key][f]) for f in _FIGS}
                        if isinstance(new[scenario][key], dict)
                        else _ratio(new[scenario][key], base[scenario][key])
                    )
                    for key in new[scenario]
                }
                for scenario in scenarios
            }
    finally:
        stop(served.values())
    emit(results, args.out)


_FIGS = ("rps", "p50_ms", "p90_ms", "p99_ms")


def _reward_line(route: str, target: str, value: float) -> str:
    """One line of a reward load's file: a feedback body, or a rank reward's path and body."""
    if route == "feedback":
        return json.dumps({"decision_id": target, "reward": value})
    return f"/v1/rank/{target}/reward " + json.dumps({"value": value})


# What the served home holds that no reward has reached, oldest first: the bench's anonymous
# visitors' decisions that chose an offer and have no reward, and the active ranks (those already
# rewarded are left out by the caller, which knows which it handed out).
UNREWARDED_DECISIONS = (
    "SELECT d.decision_id FROM decisions d"
    " LEFT JOIN rewards r ON r.decision_id = d.decision_id"
    " WHERE d.offer_id IS NOT NULL AND r.decision_id IS NULL"
    " AND d.subject_key LIKE '%bench-anon-%' ORDER BY d.created_at"
)
ACTIVE_RANKS = "SELECT event_id FROM rank_events WHERE activated ORDER BY created_at"


def _served_ids(env: dict[str, str], query: str) -> list[str]:
    """The ids `query` reads from the served home's database (read-only, beside the server)."""
    database = Path(env["ATTUNE_HOME"]) / "attune.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return [row[0] for row in connection.execute(query).fetchall()]


def _medians(by_scenario: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario, runs in by_scenario.items():
        figures: dict[str, Any] = {}
        for route in (key for key in runs[0] if key != "cpu_ms_per_request"):
            figures[route] = {
                f: round(float(np.median([run[route][f] for run in runs])), 2) for f in _FIGS
            } | {
                "rps_each": [run[route]["rps"] for run in runs],
                "errors": sum(run[route]["errors"] for run in runs),
            }
        figures["cpu_ms_per_request"] = round(
            float(np.median([run["cpu_ms_per_request"] for run in runs])), 3
        )
        out[scenario] = figures
    return out


def _ratio(over: float, under: float) -> float | None:
    return round(over / under, 3) if under else None


if __name__ == "__main__":
    main()
