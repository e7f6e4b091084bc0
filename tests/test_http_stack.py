"""What every request pays before its route runs: no hop through a worker thread to solve a
dependency, no middleware that runs the request in a task group of its own, no thread started by
the rate limit; and decisions made on the event loop take turns with it, in arrival order."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from starlette.middleware.base import BaseHTTPMiddleware

from agents.decide.run import DecideRequest, Decision, decide
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from api.auth import MovingWindow, RateLimits
from api.gate import Gate
from tests.routing import api_routes


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(home=tmp_path))  # services are built at start-up, not here


def test_no_dependency_of_any_route_runs_in_the_threadpool(tmp_path: Path) -> None:
    # FastAPI runs a plain `def` dependency in its threadpool: a worker-thread hop on every
    # request for what is an attribute read (the services) or a check on the loop (the caller).
    routes = list(api_routes(_app(tmp_path).routes))
    assert any(route.path == "/v1/decide" for route in routes)
    hopping = sorted(
        {
            f"{route.path}: {dep.call.__qualname__}"
            for route in routes
            for dep in _dependencies(route.dependant)
            if dep.call is not None and not inspect.iscoroutinefunction(dep.call)
        }
    )
    assert hopping == []


def test_no_middleware_is_a_base_http_middleware(tmp_path: Path) -> None:
    # `@app.middleware("http")` wraps the rest of the stack in a task group and memory streams
    # for each request; the access log watches the response start go by instead.
    kinds = [middleware.cls for middleware in _app(tmp_path).user_middleware]
    assert kinds and BaseHTTPMiddleware not in kinds


def test_the_per_process_rate_limit_starts_no_thread_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `limits`' memory storage started a timer thread on every hit that found the last one
    # finished (after 10 ms), and the request waited for it to start: a thread's creation and a
    # turn of the GIL on nearly every request.
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    limits = RateLimits(3)
    waits = []
    for key in ("k1", "k1", "k1", "k1", "k2"):
        waits.append(limits.hit(key))
        threading.Event().wait(0.02)  # requests some time apart, as they come
    assert started == []
    assert waits[:3] == [None] * 3 and waits[4] is None
    assert waits[3] is not None and 1 <= waits[3] <= 61


def test_a_hit_leaves_the_moving_window_after_a_minute() -> None:
    window = MovingWindow(2, 60.0)
    assert [window.hit("k"), window.hit("k")] == [None, None]
    assert window.hit("k") is not None
    window._hits["k"][0] -= 61  # the first hit, a minute and a second ago
    assert window.hit("k") is None and window.hit("k") is not None


def test_the_gate_serves_waiters_in_arrival_order_and_lets_none_jump_the_queue() -> None:
    order: list[str] = []

    async def holder(gate: Gate, name: str, hold: asyncio.Event | None = None) -> None:
        async with gate:
            order.append(name)
            if hold is not None:
                await hold.wait()

    async def main() -> None:
        gate = Gate(1)
        release = asyncio.Event()
        first = asyncio.create_task(holder(gate, "first", release))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(holder(gate, f"w{i}")) for i in range(4)]
        await asyncio.sleep(0)
        assert gate.waiting == 4
        cancelled = waiters.pop(1)
        cancelled.cancel()  # a client gone while it waited gives up its place
        release.set()
        await first
        late = asyncio.create_task(holder(gate, "late"))  # arrives as the slot is handed on
        await asyncio.gather(*waiters, late)

    asyncio.run(main())
    assert order == ["first", "w0", "w2", "w3", "late"]


def test_decisions_on_the_loop_take_turns_with_it(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight requests read in one go: each decision runs alone on the loop, and before the next
    # one starts the loop has had a turn (to read, accept, answer); they run in arrival order.
    # Before the gate the loop ran all eight back to back, reading nothing in between.
    events: list[str] = []

    def recorded(services: Services, request: DecideRequest) -> Decision:
        events.append(f"decide {request.user_id}")
        return decide(services, request)

    monkeypatch.setattr("api.routes.decide.decide", recorded)
    app = create_app(services=lambda: demo_services)
    users = [f"u_{i:04d}" for i in range(1, 9)]

    async def main() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                done = False

                async def probe() -> None:
                    while not done:
                        events.append("turn")
                        await asyncio.sleep(0)

                ticking = asyncio.create_task(probe())
                await asyncio.sleep(0)
                answers = await asyncio.gather(
                    *(
                        client.post("/v1/decide", json={"channel": "web", "user_id": u})
                        for u in users
                    )
                )
                done = True
                await ticking
        return [answer.status_code for answer in answers]

    assert asyncio.run(main()) == [200] * len(users)
    decisions = [event for event in events if event != "turn"]
    assert decisions == [f"decide {u}" for u in users]
    between = "".join("d" if event != "turn" else "t" for event in events)
    assert "dd" not in between, between
