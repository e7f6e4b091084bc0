"""What `POST /v1/decide` adds to the decision it makes, in process: the route through the ASGI app.

Drives the app with plain ASGI calls in one event loop (no sockets, no HTTP client), beside
`decide()` called directly with the same requests, in interleaved blocks so that machine load
hits all alike:

- `decide`: the in-process decision only;
- `route_keys`: `POST /v1/decide` with `ATTUNE_AUTH=keys` and a key with the `decide` scope
  (middleware, routing, body validation, the key check and rate limit, the decision, the
  response model and its JSON);
- `route_auth_off`: the same route with authentication off.

Also, interleaved on their own: the key check as the route made it before (an ORM session and
`store.access.verify_key`) and as it makes it now (`store.access.read_key` on a pooled
connection), and a cProfile of `route_keys` requests split into the parts of the route (ms per
request, inclusive). Prints JSON and writes it to `--out`.

    .venv/bin/python bench/route_cost.py [--blocks 10] [--per-block 10] [--home HOME]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from api.app import create_app
from api.auth import RateLimits
from api.gate import Gate
from bench.report import emit
from store.access import create_key, read_key, verify_key
from store.schemas import Channel

USERS = [f"u_{i:04d}" for i in range(1, 241)]
# Parts of a route request: (label, file fragment, function), inclusive ms per request.
PARTS = [
    ("whole ASGI call", "api/access_log.py", "__call__"),
    ("key check + rate limit (require)", "api/auth.py", "dependency"),
    ("key read (read_key)", "store/access.py", "read_key"),
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
    ("JSONResponse.render", "starlette/responses.py", "render"),
]


def app_for(services: Services) -> Any:
    """The service's app with its state set as its lifespan sets it (no job or drift loops)."""
    app = create_app(services=lambda: services)
    app.state.services = services
    app.state.rate_limits = RateLimits(10**9)
    app.state.decide_gate = Gate(1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--profiled", type=int, default=60, help="route requests profiled")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "route_cost.json"
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-route-"))
    settings = Settings(home=home, seed=1, auth="keys", rate_limit_per_minute=10**9)
    fresh = not (home / "attune.db").exists()
    services = build_services(settings)
    if fresh:
        start_service(services, settings.demo_dir)
    open_services = replace(services, settings=settings.model_copy(update={"auth": "off"}))
    with services.db.session() as session:
        plain, _ = create_key(session, name="bench", scopes=["decide"])
    auth = [(b"authorization", f"Bearer {plain}".encode())]
    keyed, unkeyed = app_for(services), app_for(open_services)
    loop = asyncio.new_event_loop()

    def body(i: int) -> bytes:
        return json.dumps({"user_id": USERS[i % len(USERS)], "channel": "web"}).encode()

    def direct(i: int) -> None:
        decide(services, DecideRequest(channel=Channel.web, user_id=USERS[i % len(USERS)]))

    def route(app: Any, headers: list[tuple[bytes, bytes]]) -> Callable[[int], None]:
        def call(i: int) -> None:
            status = loop.run_until_complete(post(app, "/v1/decide", body(i), headers))
            assert status == 200, status

        return call

    scenarios: dict[str, Callable[[int], None]] = {
        "decide": direct,
        "route_keys": route(keyed, auth),
        "route_auth_off": route(unkeyed, []),
    }
    for i in range(15):  # warm-up
        for call in scenarios.values():
            call(i)
    settle()
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    for block in range(args.blocks):
        names = list(scenarios) if block % 2 == 0 else list(scenarios)[::-1]
        for name in names:
            started = time.perf_counter()
            for i in range(args.per_block):
                scenarios[name](block * args.per_block + i)
            times[name].append((time.perf_counter() - started) / args.per_block * 1000)
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}

    def old_check() -> None:
        with services.db.session() as session:
            assert verify_key(session, plain) is not None

    def new_check() -> None:
        with services.db.engine.connect() as connection:
            assert read_key(connection, plain) is not None

    checks: dict[str, list[float]] = {"orm_session_verify_key": [], "connection_read_key": []}
    for block in range(20):
        pairs = [("orm_session_verify_key", old_check), ("connection_read_key", new_check)]
        for name, check in pairs if block % 2 == 0 else pairs[::-1]:
            started = time.perf_counter()
            for _ in range(100):
                check()
            checks[name].append((time.perf_counter() - started) / 100 * 1000)
    calls = {}
    for name, check in (("orm_session_verify_key", old_check), ("connection_read_key", new_check)):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(100):
            check()
        profiler.disable()
        calls[name] = round(pstats.Stats(profiler).total_calls / 100)  # type: ignore[attr-defined]

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(args.profiled):
        scenarios["route_keys"](i)
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
            "median_of_block_means_ms": medians,
            "route_minus_decide_ms": {
                "keys": round(medians["route_keys"] - medians["decide"], 3),
                "auth_off": round(medians["route_auth_off"] - medians["decide"], 3),
            },
            "key_check_ms": {k: round(statistics.median(v), 4) for k, v in checks.items()},
            "key_check_python_calls": calls,
            "profile_ms_per_route_request": parts,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
