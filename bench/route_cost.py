"""What `POST /v1/decide` adds to the decision it makes, in process: the route through the ASGI app.

Drives the app with plain ASGI calls in one event loop (no sockets, no HTTP client), beside
`decide()` called directly with the same requests, in interleaved blocks so that machine load
hits all alike, and reports the CPU time of each (`time.process_time`, which other processes
move least; the access lines are written, to /dev/null, as `attune serve` writes them):

- `decide`: the in-process decision only;
- `route_keys`: `POST /v1/decide` with `ATTUNE_AUTH=keys` and a key with the `decide` scope
  (middleware, routing, body validation, the key check and rate limit, the decision, the
  response model and its JSON);
- `route_auth_off`: the same route with authentication off;
- `bare`, `echo_keys`, `echo_auth_off`: the stack without a decision, as `bench/http_load.py`
  loads it: a bare FastAPI app parsing the same body, and our app's echo route (decide's body
  and caller, a small answer) with keys on and off. Many more requests per block than the
  decision arms (`--echo-per-block`).

Also the Python calls per request of each arm (cProfile's count, which no load moves), the key
check three ways, interleaved on their own (an ORM session and `store.access.verify_key`, as in
session 6; `read_key` on a SQLAlchemy connection, sessions 7-8; `check_key` on a pooled driver
cursor, now), and a cProfile of `route_keys` requests split into the parts of the route (ms per
request, inclusive). Prints JSON and writes it to `--out`.

    .venv/bin/python bench/route_cost.py [--blocks 10] [--per-block 10] [--home HOME]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from agents.services import Services
from agents.settings import PROJECT_ROOT
from api.app import create_app
from api.auth import RateLimits
from api.cli_logging import configure_logging
from api.gate import Gate
from bench.http_load import ECHO, Out, add_echo_route
from bench.report import emit, product_settings
from store.access import check_key, create_key, read_key, verify_key
from store.schemas import Channel

USERS = [f"u_{i:04d}" for i in range(1, 241)]
# Parts of a route request: (label, file fragment, function), inclusive ms per request.
PARTS = [
    ("whole ASGI call", "api/access_log.py", "__call__"),
    ("key check + rate limit (require)", "api/auth.py", "dependency"),
    ("key read (check_key)", "store/access.py", "check_key"),
    ("route handler", "api/routes/decide.py", "post_decide"),
    ("the decision (decide)", "agents/decide/run.py", "decide"),
    ("DecideOut built (_decide minus decide)", "api/routes/decide.py", "_decide"),
    (
        "dependencies and body (solve_dependencies)",
        "fastapi/dependencies/utils.py",
        "solve_dependencies",
    ),
    (
        "response model validation and JSON (serialize_response)",
        "fastapi/routing.py",
        "serialize_response",
    ),
    ("access line and latency (_record)", "api/access_log.py", "_record"),
]


def bare_app() -> Any:
    """The floor: FastAPI parsing a body of the same shape into a model and answering JSON."""

    class Body(BaseModel):
        user_id: str | None = None
        channel: str
        query: str | None = None
        k: int = 10

    app = FastAPI()

    async def bare(body: Body) -> Out:
        return Out(ok=True, channel=body.channel)

    bare.__annotations__ = {"body": Body, "return": Out}
    app.add_api_route("/v1/decide", bare, methods=["POST"], response_model=Out)
    return app


def app_for(services: Services) -> Any:
    """The service's app with its state set as its lifespan sets it (no job or drift loops)."""
    app = create_app(services=lambda: services)
    app.state.services = services
    app.state.rate_limits = RateLimits(10**9)
    app.state.cpu_gate = Gate(1)
    return app


async def post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = [0]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(scope, receive, send)
    return status[0]


def calls_per_call(call: Callable[[int], Any], n: int = 50) -> float:
    """Python function calls per call of `call` (cProfile's count: no load moves it), on calls
    seen once before (a decision's caches, a query's PII findings, hold the same for every arm)."""
    for i in range(n):
        call(i)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        call(i)
    profiler.disable()
    return round(pstats.Stats(profiler).total_calls / n, 1)  # type: ignore[attr-defined]


def interleaved(
    scenarios: Mapping[str, tuple[Callable[[int], Any], int]], blocks: int
) -> dict[str, float]:
    """The median over `blocks` of each scenario's CPU ms per call, in alternating order."""
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    for block in range(blocks):
        names = list(scenarios) if block % 2 == 0 else list(scenarios)[::-1]
        for name in names:
            call, per_block = scenarios[name]
            started = time.process_time()
            for i in range(per_block):
                call(block * per_block + i)
            times[name].append((time.process_time() - started) / per_block * 1000)
    return {name: round(statistics.median(values), 4) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=10, help="decisions per block")
    parser.add_argument("--echo-per-block", type=int, default=200, help="echo requests per block")
    parser.add_argument("--profiled", type=int, default=60, help="route requests profiled")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "route_cost.json"
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-route-"))
    settings = product_settings(
        home=home, seed=1, auth="keys", rate_limit_per_minute=10**9, log_format="text"
    )
    # Access lines formatted and written as `attune serve` writes them (to /dev/null here).
    configure_logging(settings)
    sink = open(os.devnull, "w")  # noqa: SIM115  # open for the whole run
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)
    add_echo_route()
    fresh = not (home / "attune.db").exists()
    services = build_services(settings)
    if fresh:
        start_service(services, settings.demo_dir)
    open_services = replace(services, settings=settings.model_copy(update={"auth": "off"}))
    with services.db.session() as session:
        plain, _ = create_key(session, name="bench", scopes=["decide"])
    auth = [(b"authorization", f"Bearer {plain}".encode())]
    keyed, unkeyed, bare = app_for(services), app_for(open_services), bare_app()
    loop = asyncio.new_event_loop()

    def body(i: int) -> bytes:
        return json.dumps({"user_id": USERS[i % len(USERS)], "channel": "web"}).encode()

    def direct(i: int) -> None:
        decide(services, DecideRequest(channel=Channel.web, user_id=USERS[i % len(USERS)]))

    def route(app: Any, headers: list[tuple[bytes, bytes]], path: str) -> Callable[[int], None]:
        def call(i: int) -> None:
            status = loop.run_until_complete(post(app, path, body(i), headers))
            assert status == 200, status

        return call

    decisions: dict[str, tuple[Callable[[int], Any], int]] = {
        "decide": (direct, args.per_block),
        "route_keys": (route(keyed, auth, "/v1/decide"), args.per_block),
        "route_auth_off": (route(unkeyed, [], "/v1/decide"), args.per_block),
    }
    stack: dict[str, tuple[Callable[[int], Any], int]] = {
        "bare": (route(bare, [], "/v1/decide"), args.echo_per_block),
        "echo_keys": (route(keyed, auth, ECHO), args.echo_per_block),
        "echo_auth_off": (route(unkeyed, [], ECHO), args.echo_per_block),
    }
    for i in range(15):  # warm-up
        for call, _ in (decisions | stack).values():
            call(i)
    settle()
    medians = interleaved(decisions, args.blocks)
    stack_medians = interleaved(stack, args.blocks)
    calls = {name: calls_per_call(call) for name, (call, _) in (decisions | stack).items()}

    def orm_check(_: int) -> None:
        with services.db.session() as session:
            assert verify_key(session, plain) is not None

    def connection_check(_: int) -> None:
        with services.db.engine.connect() as connection:
            assert read_key(connection, plain) is not None

    def cursor_check(_: int) -> None:
        assert check_key(services.db.engine, plain) is not None

    checks = {
        "orm_session_verify_key": (orm_check, 100),
        "connection_read_key": (connection_check, 100),
        "cursor_check_key": (cursor_check, 100),
    }
    check_ms = interleaved(checks, 20)
    check_calls = {name: calls_per_call(call, 100) for name, (call, _) in checks.items()}

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(args.profiled):
        decisions["route_keys"][0](i)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts = {}
    for label, fragment, function in PARTS:
        total = sum(
            cumulative
            for (file, _, name), (_, _, _, cumulative, _) in stats.items()
            if name == function and file.endswith(fragment)
        )
        parts[label] = round(total / args.profiled * 1000, 3)
    parts["DecideOut built (_decide minus decide)"] = round(
        parts["DecideOut built (_decide minus decide)"] - parts["the decision (decide)"], 3
    )
    services.close()
    emit(
        {
            "blocks": args.blocks,
            "per_block": args.per_block,
            "echo_per_block": args.echo_per_block,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpu_ms_median_of_blocks": medians | stack_medians,
            "route_minus_decide_cpu_ms": {
                "keys": round(medians["route_keys"] - medians["decide"], 3),
                "auth_off": round(medians["route_auth_off"] - medians["decide"], 3),
            },
            "echo_over_bare": {
                "keys": round(stack_medians["echo_keys"] / stack_medians["bare"], 2),
                "auth_off": round(stack_medians["echo_auth_off"] / stack_medians["bare"], 2),
            },
            "python_calls_per_request": calls
            | {
                "route_keys_minus_decide": round(calls["route_keys"] - calls["decide"], 1),
                "route_auth_off_minus_decide": round(calls["route_auth_off"] - calls["decide"], 1),
            },
            "key_check_cpu_ms": check_ms,
            "key_check_python_calls": check_calls,
            "profile_ms_per_route_request": parts,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
