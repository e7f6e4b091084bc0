"""What every request pays before its route runs: no hop through a worker thread to solve a
dependency, no middleware that runs the request in a task group of its own, no thread started by
the rate limit; and decisions made on the event loop take turns with it, in arrival order."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware

import api.routes.events
import api.routes.feedback
import api.routes.items
import api.routes.rank
from agents.decide.run import DecideRequest, Decision, decide
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from api.auth import MovingWindow, RateLimits
from api.cors import cors_for
from api.gate import Gate
from store.schemas import Channel
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


def _all_at_once(
    app: FastAPI,
    events: list[str],
    requests: Callable[[httpx.AsyncClient], list[Awaitable[httpx.Response]]],
) -> list[int]:
    """The statuses of `requests` sent at once to `app` (served with its lifespan), while a task
    appends "turn" to `events` each time the loop gives it a turn."""

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
                answers = await asyncio.gather(*requests(client))
                done = True
                await ticking
        return [answer.status_code for answer in answers]

    return asyncio.run(main())


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

    statuses = _all_at_once(
        app,
        events,
        lambda client: [
            client.post("/v1/decide", json={"channel": "web", "user_id": u}) for u in users
        ],
    )
    assert statuses == [200] * len(users)
    decisions = [event for event in events if event != "turn"]
    assert decisions == [f"decide {u}" for u in users]
    between = "".join("d" if event != "turn" else "t" for event in events)
    assert "dd" not in between, between


def test_ranks_and_similar_items_take_turns_with_decisions_on_the_loop(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rank and a similar-items read are CPU work like a decision: each runs on the loop's
    # thread, through the same gate, in arrival order among the decisions, with a loop turn
    # between any two. In a worker thread (as before) they contended with the decision on the
    # loop for the GIL.
    events: list[str] = []
    threads: set[int] = set()
    ranked, similar = api.routes.rank._rank, api.routes.items._similar

    def recorded_rank(services: Services, body: Any, caller: Any, user_id: str | None) -> Any:
        events.append(f"rank {user_id}")
        threads.add(threading.get_ident())
        return ranked(services, body, caller, user_id)

    def recorded_similar(services: Services, item_id: str, k: int, user_id: str | None) -> Any:
        events.append(f"similar {user_id}")
        threads.add(threading.get_ident())
        return similar(services, item_id, k, user_id)

    def recorded_decide(services: Services, request: DecideRequest) -> Decision:
        events.append(f"decide {request.user_id}")
        threads.add(threading.get_ident())
        return decide(services, request)

    monkeypatch.setattr("api.routes.rank._rank", recorded_rank)
    monkeypatch.setattr("api.routes.items._similar", recorded_similar)
    monkeypatch.setattr("api.routes.decide.decide", recorded_decide)
    app = create_app(services=lambda: demo_services)
    users = [f"u_{i:04d}" for i in range(1, 10)]
    kinds = ["decide", "rank", "similar"]
    rank_body = {
        "context_features": [{"time": "morning"}],
        "actions": [{"id": "a", "features": [{"topic": "news"}]}, {"id": "b"}],
    }

    def request(client: httpx.AsyncClient, n: int, user: str) -> Awaitable[httpx.Response]:
        if kinds[n % 3] == "rank":
            return client.post("/v1/rank", json={**rank_body, "user_id": user})
        if kinds[n % 3] == "similar":
            return client.get(f"/v1/catalog/items/itm_00004/similar?user_id={user}")
        return client.post("/v1/decide", json={"channel": "web", "user_id": user})

    statuses = _all_at_once(
        app, events, lambda client: [request(client, n, u) for n, u in enumerate(users)]
    )
    assert statuses == [200] * len(users)
    assert threads == {threading.get_ident()}  # the loop's thread: asyncio.run runs it here
    work = [event for event in events if event != "turn"]
    assert work == [f"{kinds[n % 3]} {u}" for n, u in enumerate(users)]
    between = "".join("w" if event != "turn" else "t" for event in events)
    assert "ww" not in between, between


def test_event_batches_are_stored_in_turn_with_decisions(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Event batches stored side by side in worker threads fought for SQLite's write lock (the
    # losers ran again after a pause: p99 1.9 s at 8 connections). Each batch is now stored in
    # its turn among decisions: a short one on the loop's thread, a long one in a worker thread
    # during which no decision runs.
    events: list[str] = []
    threads: dict[str, set[int]] = {"short": set(), "long": set(), "decide": set()}
    record = api.routes.events._record

    def recorded_record(services: Services, valid: Any, results: Any) -> Any:
        kind = "long" if len(valid) > api.routes.events.ON_LOOP else "short"
        events.append(f"{kind} start")
        threads[kind].add(threading.get_ident())
        try:
            return record(services, valid, results)
        finally:
            events.append(f"{kind} end")

    def recorded_decide(services: Services, request: DecideRequest) -> Decision:
        events.append(f"decide {request.anonymous_id}")
        threads["decide"].add(threading.get_ident())
        return decide(services, request)

    monkeypatch.setattr("api.routes.events._record", recorded_record)
    monkeypatch.setattr("api.routes.decide.decide", recorded_decide)
    app = create_app(services=lambda: demo_services)
    # Visitors no other test touches: the demo policy caps the offers a person sees a day, and
    # the decision service is shared with other modules.
    users = [f"batch-turns-{i}" for i in range(9)]
    sizes = {1: 2, 4: api.routes.events.ON_LOOP + 5, 7: 1}  # request number -> events

    def batch(n: int, user: str) -> dict[str, Any]:
        return {
            "events": [
                {
                    "event_id": f"turns-{n}-{j}",
                    "type": "view",
                    "ts": "2026-12-01T10:00:00Z",
                    "anonymous_id": user,
                    "item_id": "itm_00004",
                }
                for j in range(sizes[n])
            ]
        }

    def request(client: httpx.AsyncClient, n: int, user: str) -> Awaitable[httpx.Response]:
        if n in sizes:
            return client.post("/v1/events", json=batch(n, user))
        return client.post("/v1/decide", json={"channel": "web", "anonymous_id": user})

    statuses = _all_at_once(
        app, events, lambda client: [request(client, n, u) for n, u in enumerate(users)]
    )
    assert statuses == [200] * len(users)
    loop = threading.get_ident()  # asyncio.run runs the loop here
    assert threads["short"] == threads["decide"] == {loop}
    assert len(threads["long"]) == 1 and loop not in threads["long"]
    work = [event for event in events if event != "turn"]
    expected: list[str] = []
    for n, user in enumerate(users):
        kind = "long" if sizes.get(n, 0) > api.routes.events.ON_LOOP else "short"
        expected += [f"{kind} start", f"{kind} end"] if n in sizes else [f"decide {user}"]
    assert work == expected  # in arrival order, one at a time: nothing inside the long batch
    # A loop turn before each one starts: requests read meanwhile queue behind it.
    starts = "".join("t" if e == "turn" else "w" for e in events if not e.endswith(" end"))
    assert "ww" not in starts, starts


def test_rewards_are_written_in_worker_threads_in_turn_with_decisions(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rewards written side by side in worker threads fought for SQLite's write lock (p99 0.56 s
    # at 8 connections). Each write (a decision's reward, a rank's reward, a rank's activation)
    # now takes its turn among decisions, in a worker thread (on PostgreSQL it may wait for
    # another process's lock on its row, which must not hold the loop) during which no decision
    # runs.
    made = [
        decide(demo_services, DecideRequest(channel=Channel.web, anonymous_id=f"reward-turns-{n}"))
        for n in range(6)
    ]
    offered = iter([d.decision_id for d in made if d.offer is not None])
    rank_body = {"actions": [{"id": "a", "features": [{"topic": "news"}]}, {"id": "b"}]}
    with TestClient(create_app(services=lambda: demo_services)) as client:
        made_ranks = [
            client.post("/v1/rank", json={**rank_body, "defer_activation": defer}).json()
            for defer in (False, False, True)
        ]
    ranks = iter([rank["event_id"] for rank in made_ranks[:2]])
    deferred = iter([made_ranks[2]["event_id"]])
    events: list[str] = []
    threads: dict[str, set[int]] = {"write": set(), "decide": set()}

    def recorded(name: str, work: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            events.append(f"{name} start")
            threads["decide" if name == "decide" else "write"].add(threading.get_ident())
            try:
                return work(*args)
            finally:
                events.append(f"{name} end")

        return run

    monkeypatch.setattr(
        "api.routes.feedback._reward", recorded("reward", api.routes.feedback._reward)
    )
    monkeypatch.setattr("api.routes.rank._reward", recorded("rank reward", api.routes.rank._reward))
    monkeypatch.setattr(
        "api.routes.rank._activate", recorded("activate", api.routes.rank._activate)
    )
    monkeypatch.setattr("api.routes.decide.decide", recorded("decide", decide))
    app = create_app(services=lambda: demo_services)
    kinds = ["decide", "reward", "decide", "rank reward", "decide", "activate", "reward", "decide"]
    kinds += ["rank reward"]

    def request(client: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
        if kinds[n] == "reward":
            body = {"decision_id": next(offered), "reward": 1.0}
            return client.post("/v1/feedback", json=body)
        if kinds[n] == "rank reward":
            return client.post(f"/v1/rank/{next(ranks)}/reward", json={"value": 1.0})
        if kinds[n] == "activate":
            return client.post(f"/v1/rank/{next(deferred)}/activate")
        visitor = f"reward-turns-decide-{n}"  # one no other test touches (offers are capped)
        return client.post("/v1/decide", json={"channel": "web", "anonymous_id": visitor})

    statuses = _all_at_once(app, events, lambda client: [request(client, n) for n in range(9)])
    assert statuses == [200] * 9
    loop = threading.get_ident()  # asyncio.run runs the loop here
    assert threads["decide"] == {loop}
    assert threads["write"] and loop not in threads["write"]
    work = [event for event in events if event != "turn"]
    # In arrival order, one at a time: each one ends before the next starts.
    assert work == [f"{kind} {edge}" for kind in kinds for edge in ("start", "end")]


def test_the_decide_route_solves_one_dependency_per_request(tmp_path: Path) -> None:
    # FastAPI solves every sub-dependency on every request (its parameters, its cache key):
    # about 120 Python calls each. The services are read off the app's state by the route and
    # by the caller's check, so the caller is the route's one dependency, with none of its own.
    route = next(r for r in api_routes(_app(tmp_path).routes) if r.path == "/v1/decide")
    solved = [dep.call.__qualname__ for dep in _dependencies(route.dependant) if dep.call]
    assert solved == ["require.<locals>.dependency"]


def test_no_caller_check_has_a_dependency_of_its_own(tmp_path: Path) -> None:
    checks = {
        dep.call
        for route in api_routes(_app(tmp_path).routes)
        for dep in _dependencies(route.dependant)
        if dep.call is not None and dep.call.__qualname__ == "require.<locals>.dependency"
    }
    assert checks
    for check in checks:
        assert list(inspect.signature(check).parameters) == ["request"]


def test_the_access_log_finds_each_latency_child_once(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `labels()` (its checks and a lock) ran on every request; the children are kept by the
    # middleware, one lookup per request, and every request is still observed.
    family = demo_services.metrics.http_latency
    looked_up: list[tuple[str, ...]] = []
    labels = family.labels

    def counted(*values: str, **named: str) -> Any:
        looked_up.append(values or tuple(named.values()))
        return labels(*values, **named)

    def observed() -> float:
        child = labels(method="GET", route="/healthz", status="2xx")
        return next(
            s.value for m in child.collect() for s in m.samples if s.name.endswith("_count")
        )

    before = observed()
    monkeypatch.setattr(family, "labels", counted)
    with TestClient(create_app(services=lambda: demo_services)) as client:
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
        assert client.get("/v1/nothing").status_code == 404
    assert looked_up == [("GET", "/healthz", "2xx"), ("GET", "(no route)", "4xx")]
    assert observed() == before + 5


def test_a_request_without_an_origin_passes_cors_with_vary_only(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without an Origin header no browser page sent the request: Starlette's CORSMiddleware
    # (its Headers object, a wrapped `send`) is skipped, and the answer still says that it
    # varies by Origin, as CORSMiddleware's did.
    calls: list[str] = []
    handle = CORSMiddleware.__call__

    async def counted(self: CORSMiddleware, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await handle(self, scope, receive, send)

    monkeypatch.setattr(CORSMiddleware, "__call__", counted)
    with TestClient(create_app(services=lambda: demo_services)) as client:
        plain = client.get("/healthz")
        page = client.get("/healthz", headers={"Origin": "http://localhost:5173"})
        foreign = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert calls == ["/healthz", "/healthz"]
    assert plain.headers.get_list("vary") == ["Origin"]
    assert "access-control-allow-origin" not in plain.headers
    assert page.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert page.headers.get_list("vary") == ["Origin"]
    assert "access-control-allow-origin" not in foreign.headers


def test_vary_keeps_what_the_route_said_and_adds_origin() -> None:
    from api.cors import vary_origin

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"vary", b"Accept"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(vary_origin(send)({"type": "http.response.start", "status": 200}))
    asyncio.run(
        vary_origin(send)(
            {"type": "http.response.start", "status": 200, "headers": [(b"vary", b"Accept")]}
        )
    )
    assert sent[0]["headers"] == [(b"vary", b"Origin")]
    assert sent[1]["headers"] == [(b"vary", b"Accept, Origin")]
    # The same as Starlette's CORSMiddleware, for a request without an Origin.
    starlette_sent: list[Any] = []

    async def record(message: Any) -> None:
        starlette_sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "path": "/"}
    asyncio.run(cors_for(app, [])(scope, _nothing, record))
    ours: list[Any] = []

    async def record_ours(message: Any) -> None:
        ours.append(message)

    asyncio.run(app(scope, _nothing, vary_origin(record_ours)))
    assert ours == starlette_sent


async def _nothing() -> Any:
    return {"type": "http.disconnect"}
