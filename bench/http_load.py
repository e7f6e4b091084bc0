"""`POST /v1/decide` over HTTP beside a bare FastAPI JSON endpoint, measured in the same run.

Starts two single-process uvicorn servers on loopback. One is a bare FastAPI app whose one route
parses a body of the same shape into a model and answers a small JSON object (the floor). The
other is `attune serve` on the demo world, with one route added for this bench:
`POST /v1/bench/echo` takes the decide body with decide's dependencies (the `decide` scope, the
subject check) and answers the bare route's small object, so it costs what our app stack costs
(middleware, access log, metrics, authentication and rate limit, body validation) without a
decision. For each concurrency (1, 8 and 32 connections by default) it loads the three in turn
for `--duration` seconds each, `--repeat` times, and records requests per second and latency
percentiles, with the median of the repeats. The figures to track are the ratios bare / decide
and app / decide: the machine's load moves all three. With `--auth keys` (the default) the
attune server runs with `ATTUNE_AUTH=keys` and the load sends a key with the `decide` scope, as
a deployment would; `--auth off` measures the local default.

The load comes from `wrk` when it is installed (`apt-get install wrk`), else from a small asyncio
HTTP/1.1 client in this file (keep-alive, one coroutine per connection), which costs more CPU and
so lowers every figure. Prints JSON and writes it to `--out`.

With `--baseline CHECKOUT` a second attune server runs that checkout's code (on a home of its own,
seeded alike), and its app and decide routes are loaded in the same rotation (`app_base`,
`decide_base`): an A/B under the same load, with the ratios new / baseline of requests per second
and of the latency percentiles. `--baseline-python` runs the baseline's server on another
interpreter (a virtualenv's `bin/python` with the packages installed alike): with `--baseline`
the same checkout, that compares interpreters. Besides wrk's percentiles, each level reports the
spread of latencies as p99 / p50 (1 when every request waits alike), and the server's CPU time per request
(from `/proc`), which the machine's load moves least, split into its main thread's (the event
loop, where decisions with the offline writer run) and its other threads' (mostly Qdrant Edge's
search pool), and the served process's garbage collection per load (a route `GC_PAUSES` added
beside the echo route reads `gc.callbacks`' tally): milliseconds per request, full collections
per thousand requests and the longest pause. `load_mix` says what the bodies hold (query share,
distinct texts, users).

    .venv/bin/python bench/http_load.py [--duration 10] [--repeat 3] [--concurrency 1,8,32]
        [--auth keys|off] [--baseline CHECKOUT [--baseline-python PY]] [--out FILE]

(Not `bench/http.py`: a script of that name would shadow the standard library's `http` for every
script in `bench/`.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from bench.report import emit, product_settings

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["something for the kitchen", "strong coffee beans", "running shoes", None, None, None]
TARGETS = ("bare", "app", "decide")  # loaded in this order at each concurrency, each repeat
ECHO = "/v1/bench/echo"
GC_PAUSES = "/v1/bench/gc"  # the served process's garbage collections since the last read

WRK_SCRIPT = """
local bodies = {}
local headers = {["Content-Type"] = "application/json"}
local i = 0
init = function(args)
  local f = io.open(args[1], "r")
  for line in f:lines() do table.insert(bodies, line) end
  f:close()
  if args[2] ~= nil and args[2] ~= "" then headers["Authorization"] = "Bearer " .. args[2] end
end
request = function()
  i = i + 1
  local body = bodies[(i % #bodies) + 1]
  return wrk.format("POST", nil, headers, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


class Body(BaseModel):
    user_id: str | None = None
    channel: str
    query: str | None = None
    k: int = 10


class Out(BaseModel):
    ok: bool
    channel: str


def bare_app() -> FastAPI:
    """The floor: FastAPI parsing a JSON body into a model and answering JSON, nothing else."""
    app = FastAPI()

    @app.post("/v1/decide", response_model=Out)
    async def bare(body: Body) -> Out:
        return Out(ok=True, channel=body.channel)

    return app


def serve_attune() -> None:
    """`attune serve` as it is, with one more route beside `/v1/decide` in decide's router (so
    that finding it costs what finding decide costs): the decide body and dependencies,
    answered with the bare route's object — what our stack costs without a decision."""
    from api.cli import serve

    add_echo_route()
    add_gc_route()
    serve(seed_demo=True, workers=1)


def add_echo_route() -> None:
    """The echo route (`ECHO`) in decide's router: decide's body and caller, answered with the
    bare route's object (also `bench/route_cost.py`'s)."""
    from api.auth import DecideCaller
    from api.routes.decide import router
    from api.schemas import DecideIn

    async def echo(body: DecideIn, caller: DecideCaller) -> Out:
        caller.act_for(body.user_id)
        return Out(ok=True, channel=body.channel)

    # The names above are local to this function, where FastAPI cannot resolve this module's
    # postponed (string) annotations: it is given the types themselves.
    echo.__annotations__ = {"body": DecideIn, "caller": DecideCaller, "return": Out}
    router.add_api_route(
        ECHO.removeprefix(router.prefix), echo, methods=["POST"], response_model=Out
    )


class Pauses:
    """The garbage collections of this process since the last `read`, from `gc.callbacks`: per
    generation, how many, their total and their longest pause in milliseconds."""

    def __init__(self) -> None:
        self._seen = self._empty()
        self._started = 0.0

    @staticmethod
    def _empty() -> dict[int, list[float]]:
        return {generation: [0, 0.0, 0.0] for generation in range(3)}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = (time.perf_counter() - self._started) * 1000
        seen = self._seen[info["generation"]]
        seen[0] += 1
        seen[1] += pause
        seen[2] = max(seen[2], pause)

    def read(self) -> dict[str, list[float]]:
        seen, self._seen = self._seen, self._empty()
        return {str(generation): figures for generation, figures in seen.items()}


def add_gc_route() -> None:
    """`GET GC_PAUSES` in decide's router: the served process's collections since the last
    call (`Pauses`), read before and after each load of its routes."""
    from api.routes.decide import router

    pauses = Pauses()
    gc.callbacks.append(pauses)

    async def collections() -> dict[str, list[float]]:
        return pauses.read()

    router.add_api_route(GC_PAUSES.removeprefix(router.prefix), collections, methods=["GET"])


def gc_figures(seen: dict[str, list[float]], requests: int) -> dict[str, float]:
    """Garbage collection under one load: its milliseconds per request, full collections per
    thousand requests, and the longest pause."""
    per = 1 / max(requests, 1)
    return {
        "gc_ms_per_request": round(sum(s[1] for s in seen.values()) * per, 4),
        "gc_full_per_1000_requests": round(seen["2"][0] * per * 1000, 2),
        "gc_longest_pause_ms": round(max(s[2] for s in seen.values()), 2),
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far (Linux `/proc`; 0 elsewhere)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def loop_cpu_seconds(pid: int) -> float:
    """The CPU time of process `pid`'s main thread so far: uvicorn's event loop, where requests
    are parsed, routed and answered and where decisions with the offline writer run. The rest of
    `cpu_seconds` is other threads': Qdrant Edge's search pool (`edge-search-N`), ONNX Runtime,
    the copy-job and drift loops, uvloop's resolver."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """Ends the servers started for a bench, and waits for each."""
    started = list(processes)
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"server for {url} did not answer within {timeout} s")


def bodies(users: list[str], n: int = 400) -> list[str]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        body = {"user_id": str(rng.choice(users)), "channel": "web", "k": 10}
        query = QUERIES[i % len(QUERIES)]
        if query:
            body["query"] = query
        out.append(json.dumps(body))
    return out


def run_wrk(
    url: str, connections: int, duration: int, bodies_file: Path, script: Path, key: str | None
) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            url,
            str(bodies_file),
            key or "",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("JSON "))
    raw = json.loads(line[5:])
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": raw["errors"] + raw["non2xx"],
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
    }


async def _connection(
    host: str,
    port: int,
    payloads: list[bytes],
    until: float,
    samples: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    try:
        while time.perf_counter() < until:
            payload = payloads[i % len(payloads)]
            i += 1
            start = time.perf_counter()
            writer.write(payload)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            samples.append(time.perf_counter() - start)
            if not status_line.startswith(b"HTTP/1.1 2"):
                errors.append(1)
    finally:
        writer.close()


def run_python(
    url: str, connections: int, duration: int, body_lines: list[str], key: str | None
) -> dict:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    payloads = [
        (
            f"POST {parsed.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(body.encode())}\r\n\r\n{body}"
        ).encode()
        for body in body_lines
    ]
    samples: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        started = time.perf_counter()
        until = started + duration
        await asyncio.gather(
            *(
                _connection(host, port, payloads[c:] + payloads[:c], until, samples, errors)
                for c in range(connections)
            )
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    ms = np.array(samples) * 1000
    return {
        "requests": len(samples),
        "errors": len(errors),
        "rps": round(len(samples) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def create_key(env: dict[str, str], scopes: str = "decide", python: str = sys.executable) -> str:
    """A key with `scopes` (comma-separated; the `decide` scope by default) in the served home,
    made by `attune keys create` (the one beside `python`)."""
    attune = Path(python).parent / "attune"
    out = subprocess.run(
        [str(attune), "keys", "create", "--name", "bench-http", "--scopes", scopes],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out.strip().splitlines()[-1])["key"])


def median_of(runs: list[dict]) -> dict:
    """The median of each figure over the repeats, and the repeats' requests per second."""
    out: dict[str, Any] = {
        name: round(float(np.median([run[name] for run in runs])), 2) for name in FIGURES
    }
    for name in GC_FIGURES:
        if name in runs[0]:
            out[name] = round(float(np.median([run[name] for run in runs])), 4)
    out["spread_p99_over_p50"] = ratio(out["p99_ms"], out["p50_ms"])
    out["requests"] = sum(run["requests"] for run in runs)
    out["errors"] = sum(run["errors"] for run in runs)
    out["rps_each"] = [run["rps"] for run in runs]
    return out


FIGURES = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cpu_ms_per_request",
    "loop_cpu_ms_per_request",
    "other_threads_cpu_ms_per_request",
)
# Garbage collection in the served process, for the attune routes (`gc_figures`).
GC_FIGURES = ("gc_ms_per_request", "gc_full_per_1000_requests", "gc_longest_pause_ms")


def load_mix(lines: list[str], users: list[str]) -> dict[str, Any]:
    """What the load sends, to read its figures by: the share of bodies with a query, how many
    distinct query texts (each is seen before after the warm-up: the embedder caches its
    vectors, so the load has no first-seen query), and how many of the demo users it names."""
    parsed = [json.loads(line) for line in lines]
    queries = [body["query"] for body in parsed if body.get("query")]
    return {
        "bodies": len(parsed),
        "query_share": round(len(queries) / len(parsed), 3),
        "distinct_queries": sorted(set(queries)),
        "distinct_users": len({body["user_id"] for body in parsed}),
        "demo_users": len(users),
        "k": sorted({body["k"] for body in parsed}),
        "channels": sorted({body["channel"] for body in parsed}),
        # wrk runs one thread: each request takes the next body of one rotation.
        "order": "rotation",
    }


def _base_first(name: str) -> tuple[bool, str]:
    return (not name.endswith("_base"), name.removesuffix("_base"))


def ratio(over: float | None, under: float | None) -> float | None:
    """None when nothing finished within the level's duration."""
    return round(over / under, 2) if under and over is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint and level")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each level (medians)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--auth", choices=("keys", "off"), default="keys")
    parser.add_argument("--home", type=Path, default=None, help="a seeded home (default: seed one)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout the attune server runs (a baseline)"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout to A/B against (its own server)"
    )
    parser.add_argument(
        "--baseline-python",
        default=sys.executable,
        help="the baseline server's interpreter (a venv's bin/python; --baseline may then be the "
        "same checkout, to compare interpreters)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "http_load.json")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-attune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, access_log=False,
                    log_level="warning")  # fmt: skip
        return
    if args.serve_attune:
        serve_attune()
        return

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-http-"))
    codes = {"": args.code} | ({"_base": args.baseline} if args.baseline else {})
    pythons = {"": sys.executable, "_base": args.baseline_python}
    exports = product_settings(home=home).resolved_embedding_export_dir
    envs = {
        suffix: {
            **os.environ,
            # The checkout first; a PYTHONPATH given to this script after it.
            "PYTHONPATH": os.pathsep.join(
                [str(code), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            # The baseline on a home of its own (SQLite and Qdrant Edge lock theirs), seeded alike.
            "ATTUNE_HOME": str(
                home if not suffix else Path(tempfile.mkdtemp(prefix="attune-bench-http-base-"))
            ),
            "ATTUNE_SEED": "1",
            "ATTUNE_AUTH": args.auth,
            "ATTUNE_RATE_LIMIT_PER_MINUTE": "100000000",
            "ATTUNE_LOG_FORMAT": "text",
            # Both servers embed with the model's ONNX export, made here first as `make run`
            # makes it, not on torch for want of an export in their fresh homes.
            "ATTUNE_EMBEDDING_EXPORT_DIR": str(exports),
        }
        for suffix, code in codes.items()
    }
    bare_port = free_port()
    ports = {suffix: free_port() for suffix in codes}
    servers = {
        "bare": subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(bare_port)], env=envs[""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    } | {
        f"attune{suffix}": subprocess.Popen(
            [pythons[suffix], __file__, "--serve-attune"],
            env={**envs[suffix], "ATTUNE_PORT": str(ports[suffix])},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for suffix in codes
    }  # fmt: skip
    urls = {"bare": f"http://127.0.0.1:{bare_port}/v1/decide"}
    for suffix, port in ports.items():
        urls[f"app{suffix}"] = f"http://127.0.0.1:{port}{ECHO}"
        urls[f"decide{suffix}"] = f"http://127.0.0.1:{port}/v1/decide"
    targets = list(urls)
    try:
        for suffix, port in ports.items():
            wait_up(f"http://127.0.0.1:{port}/healthz", servers[f"attune{suffix}"])
        wait_up(f"http://127.0.0.1:{bare_port}/docs", servers["bare"])
        keys: dict[str, str | None] = {"bare": None}
        for suffix in codes:
            key = create_key(envs[suffix], python=pythons[suffix]) if args.auth == "keys" else None
            keys[f"app{suffix}"] = keys[f"decide{suffix}"] = key
        users = [
            json.loads(line)["user_id"]
            for line in (ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines()
            if line.strip()
        ]
        lines = bodies(users)
        work = Path(tempfile.mkdtemp(prefix="attune-bench-wrk-"))
        bodies_file, script = work / "bodies.jsonl", work / "bodies.lua"
        bodies_file.write_text("\n".join(lines) + "\n")
        script.write_text(WRK_SCRIPT)

        pids = {"bare": servers["bare"].pid}
        for suffix in codes:
            pids[f"app{suffix}"] = pids[f"decide{suffix}"] = servers[f"attune{suffix}"].pid

        def collections(name: str) -> dict[str, list[float]] | None:
            if name == "bare":
                return None
            port = ports[name.removeprefix("app").removeprefix("decide")]
            return httpx.get(f"http://127.0.0.1:{port}{GC_PAUSES}", timeout=30).json()

        def load(name: str, connections: int, duration: int) -> dict:
            collections(name)  # from now on
            before, loop_before = cpu_seconds(pids[name]), loop_cpu_seconds(pids[name])
            if client == "wrk":
                out = run_wrk(urls[name], connections, duration, bodies_file, script, keys[name])
            else:
                out = run_python(urls[name], connections, duration, lines, keys[name])
            # The server's CPU time per answered request: what the machine's load moves least.
            spent = cpu_seconds(pids[name]) - before
            in_loop = loop_cpu_seconds(pids[name]) - loop_before
            per = 1000 / max(out["requests"], 1)
            out["cpu_ms_per_request"] = round(spent * per, 3)
            out["loop_cpu_ms_per_request"] = round(in_loop * per, 3)
            out["other_threads_cpu_ms_per_request"] = round((spent - in_loop) * per, 3)
            seen = collections(name)
            if seen is not None:
                out |= gc_figures(seen, out["requests"])
            return out

        for name in targets:  # warm-up: imports, caches, SQLite pages
            load(name, 2, 3)
        results: dict[str, Any] = {
            "code": str(args.code),
            "baseline": str(args.baseline) if args.baseline else None,
            "python": sys.executable,
            "baseline_python": args.baseline_python if args.baseline else None,
            "client": client,
            "auth": args.auth,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "load_mix": load_mix(lines, users),
        }
        levels = {}
        for connections in (int(c) for c in args.concurrency.split(",")):
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            loads = []
            for repeat in range(args.repeat):  # interleaved, so a burst of load hits them all
                # The baseline's routes first in every other repeat: neither side always follows
                # the other.
                order = (
                    targets if repeat % 2 == 0 else ["bare", *sorted(targets[1:], key=_base_first)]
                )
                for name in order:
                    runs[name].append(load(name, connections, args.duration))
                loads.append(round(os.getloadavg()[0], 2))
            level: dict[str, Any] = {name: median_of(runs[name]) for name in targets}
            level["load_average_1m"] = loads
            level["rps_ratio_bare_over_decide"] = ratio(
                level["bare"]["rps"], level["decide"]["rps"]
            )
            level["rps_ratio_app_over_decide"] = ratio(level["app"]["rps"], level["decide"]["rps"])
            level["rps_ratio_bare_over_app"] = ratio(level["bare"]["rps"], level["app"]["rps"])
            if args.baseline:
                level["new_over_baseline"] = {
                    route: {
                        figure: ratio(level[route][figure], level[f"{route}_base"][figure])
                        for figure in (*FIGURES, "spread_p99_over_p50")
                    }
                    for route in ("app", "decide")
                }
            levels[str(connections)] = level
        results["concurrency"] = levels
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stop(servers.values())
    emit(results, args.out)


if __name__ == "__main__":
    main()
