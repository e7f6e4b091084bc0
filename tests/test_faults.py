"""Faults from outside: a model server that sends bytes that are not UTF-8, JSON of the wrong
shape or type, or a stream that stops half-way; a full disk. Each ends in the documented
degraded answer (a flagged 200, or a 503 with Retry-After), never a 500."""

from __future__ import annotations

import json
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy
import uvicorn
from fake_openai import FAULTS, Fault, Reply, fake_openai
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from agents.llm.breaker import CircuitBreaker
from agents.llm.client import LLMClient
from agents.llm.errors import LLMError
from agents.llm.retry import RetryPolicy
from agents.services import Services
from agents.settings import PROJECT_ROOT
from agents.writing.llm_writer import OpenAIWriter
from api.app import create_app
from api.deps import get_services
from retrieval.edge import EdgeIndex
from retrieval.embedder import CachedEmbedder
from retrieval.index import IndexUnavailable
from store.db import Database
from store.schemas import Event, Item, Offer

PROMPT = [{"role": "user", "content": "a secret prompt about Ada Lovelace"}]
DEMO = PROJECT_ROOT / "data" / "demo"
# People of the demo world who consent to personalization and to LLM processing, so their
# requests reach the model; each test below uses its own, as decisions change frequency caps.
CONSENTING = [
    u["user_id"]
    for u in map(json.loads, (DEMO / "users.jsonl").read_text().splitlines())
    if u["consent"].get("llm_processing") and u["consent"].get("personalization")
]


def _client(base_url: str, breaker: CircuitBreaker) -> LLMClient:
    return LLMClient(
        base_url=base_url,
        api_key="test",
        model="fake-model",
        retry=RetryPolicy(max_retries=1, base_s=0.01, cap_s=0.02),
        breaker=breaker,
    )


@contextmanager
def misbehaving(fault: Fault, content: Any = "Something nice for you.") -> Iterator[LLMClient]:
    """A client of a model server that answers every request with `fault`; its breaker opens
    after one failure, so a test sees whether the failure was counted."""
    with fake_openai([Reply(content=content, fault=fault)]) as server:
        yield _client(server.base_url, CircuitBreaker(failures=1, cooldown_s=60))


# -- the client ------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_malformed_reply_is_an_llm_error_counted_by_the_breaker(
    fault: Fault, streamed: bool
) -> None:
    with misbehaving(fault) as llm, pytest.raises(LLMError) as caught:
        if streamed:
            list(llm.stream(PROMPT))
        else:
            llm.complete(PROMPT)
    assert llm.breaker.state == "open"
    message = str(caught.value)
    assert "Ada" not in message and "secret" not in message


def test_usage_of_the_wrong_type_in_a_whole_reply_is_malformed() -> None:
    # A count that pydantic cannot read ("many") once slipped past as a TypeError.
    with misbehaving("wrong-types") as llm, pytest.raises(LLMError, match="shape"):
        llm.complete(PROMPT)


# -- through the API: decide, chat (streamed and not), copy -----------------------------------


@pytest.fixture
def api(demo_services: Services) -> Iterator[Callable[[Services], TestClient]]:
    """A test client of the app over the demo world with some services swapped."""
    clients: list[TestClient] = []

    def make(services: Services) -> TestClient:
        client = TestClient(create_app(services=lambda: services), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _draft(body: dict[str, Any]) -> str:
    return json.dumps({"text": "Something nice for you.", "item_ids": [], "offer_id": None})


@pytest.mark.parametrize("fault", FAULTS)
def test_decide_answers_with_the_offline_writer_and_says_so(
    fault: Fault, api: Callable[[Services], TestClient], demo_services: Services
) -> None:
    user = CONSENTING[1 + FAULTS.index(fault)]
    with misbehaving(fault, _draft) as llm:
        client = api(replace(demo_services, writer=OpenAIWriter(llm), llm=llm))
        assert not any(d.startswith("llm:") for d in client.get("/healthz").json()["degraded"])
        response = client.post("/v1/decide", json={"user_id": user, "channel": "web"})
        health = client.get("/healthz").json()
    assert response.status_code == 200, response.text
    assert health["status"] == "degraded"
    assert any(d.startswith("llm: circuit breaker open") for d in health["degraded"])
    decision = response.json()
    assert decision["content"]
    assert any(d.startswith("writer: openai failed") for d in decision["degraded"])
    assert llm.breaker.state == "open"  # counted, so a broken server is soon skipped


class BrokenModel:
    """An embedding model that fails on every query, with the text in its error message."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.dim, self.degraded = inner.name, inner.dim, inner.degraded

    def embed(self, texts: Any) -> np.ndarray:
        return np.asarray(self.inner.embed(texts))

    def embed_query(self, text: str) -> np.ndarray:
        raise RuntimeError(f"onnxruntime: failed to allocate for input {text!r}")


def test_a_failing_embedding_model_matches_the_words_and_says_so(
    api: Callable[[Services], TestClient],
    demo_services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model fails on the query (begun ahead, then asked again by retrieval): the decision
    is a 200 whose items match the request's words, flagged, and neither the answer nor the log
    repeats the error's message, which quotes the query."""
    broken = CachedEmbedder(BrokenModel(demo_services.tools.embedder.inner))
    client = api(replace(demo_services, tools=replace(demo_services.tools, embedder=broken)))
    query = "wooden train set zq7"
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/v1/decide", json={"user_id": CONSENTING[0], "channel": "web", "query": query, "k": 5}
        )
    assert response.status_code == 200, response.text
    decision = response.json()
    reason = "query: the embedding model failed (RuntimeError); matched the request's words only"
    assert reason in decision["degraded"]
    assert decision["items"]
    titles = " ".join(item["title"].lower() for item in decision["items"])
    assert "train" in titles or "wooden" in titles
    assert "failed to allocate" not in response.text
    assert "failed to allocate" not in caplog.text and "zq7" not in caplog.text
    assert "the embedding model failed (RuntimeError)" in caplog.text


def _events(text: str) -> list[tuple[str, Any]]:
    events, name = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
    return events


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", FAULTS)
def test_chat_answers_with_the_offline_plan_and_says_so(
    fault: Fault,
    streamed: bool,
    api: Callable[[Services], TestClient],
    demo_services: Services,
) -> None:
    user = CONSENTING[10 + 2 * FAULTS.index(fault) + streamed]
    with misbehaving(fault, "Here is what I found for you today.") as llm:
        client = api(replace(demo_services, llm=llm))
        response = client.post(
            "/v1/chat",
            json={"user_id": user, "message": "a gift for a tea lover", "stream": streamed},
        )
    assert response.status_code == 200, response.text
    if streamed:
        events = _events(response.text)
        assert events[-1][0] == "final", events
        answer = events[-1][1]
    else:
        answer = response.json()
    assert answer["reply"]
    assert any(
        d.startswith("chat: the model failed") and "offline plan" in d for d in answer["degraded"]
    ), answer["degraded"]
    assert llm.breaker.state == "open"


@pytest.mark.parametrize("fault", FAULTS)
def test_copy_falls_back_to_the_offline_writer_and_says_so(
    fault: Fault, api: Callable[[Services], TestClient], demo_services: Services
) -> None:
    body = {
        "brief": {"goal": "a treat for tea lovers", "categories": ["coffee_tea"]},
        "channel": "push",
        "audience": {"segments": [{"name": "active", "rule": {"lifecycle": ["active"]}}]},
        "variants": 1,
    }
    with misbehaving(fault, _draft) as llm:
        client = api(replace(demo_services, writer=OpenAIWriter(llm)))
        response = client.post("/v1/copy", json=body)
    assert response.status_code == 200, response.text
    [variant] = response.json()["segments"][0]["variants"]
    assert variant["writer"] == "offline" and variant["checks_passed"], variant
    assert any(d.startswith("writer: openai failed") for d in variant["degraded"]), variant
    assert llm.breaker.state == "open"


# -- an unhandled error: a problem document, logged, and the connection stays usable ----------


@pytest.fixture
def served(demo_services: Services) -> Iterator[tuple[FastAPI, str]]:
    """The app over the demo world, served by uvicorn on 127.0.0.1."""
    app = create_app(services=lambda: demo_services)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("socket").getsockname()[1]


def test_an_unhandled_error_is_a_logged_problem_and_the_connection_survives(
    served: tuple[FastAPI, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, base_url = served

    def broken() -> Services:
        # Built at run time, as PII in an error message would be (source lines are logged).
        raise RuntimeError("a bug that quotes " + ".".join(["ada", "lovelace@example", "com"]))

    caplog.set_level(logging.INFO, logger="attune")
    with httpx.Client(base_url=base_url, limits=httpx.Limits(max_connections=1)) as client:
        before = client.get("/healthz")
        ports = [_local_port(before)]
        app.dependency_overrides[get_services] = broken
        try:
            failed = client.get("/v1/users/u_0001")
            ports.append(_local_port(failed))
        finally:
            app.dependency_overrides.clear()
        after = client.get("/healthz")
        ports.append(_local_port(after))
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    problem = failed.json()
    assert problem["status"] == 500 and re.fullmatch(r"[0-9a-f]{32}", problem["error_id"])
    assert failed.headers.get("connection", "").lower() != "close"
    assert after.status_code == 200
    assert len(set(ports)) == 1  # one connection, kept open across the 500
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("attune")]
    errors = [m for m in logged if problem["error_id"] in m]
    assert errors and "RuntimeError" in errors[0] and "/v1/users/{user_id}" in errors[0]
    assert "GET /v1/users/{user_id} 500" in " ".join(logged)  # the access log has it too
    assert not any("ada.lovelace" in m or "u_0001" in m for m in logged)


# -- edge values: bounded by the schemas, rejected with the field named (per event) -----------

ITEM = {"item_id": "edge_1", "title": "Edge", "category": "tests", "price": 10.0, "margin": 0.2}
EVENT = {"event_id": "edge_e1", "type": "view", "ts": "2026-01-01T00:00:00Z", "item_id": "i_0001"}
EVENT["user_id"] = "u_0002"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"stock": 1180591620717411303424}, "stock"),  # past SQLite's signed 64 bits
        ({"stock": 2**63 - 1}, "stock"),
        ({"stock": -1}, "stock"),
        ({"price": "Infinity"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"margin": "-inf"}, "margin"),
        ({"min_age": 2**64}, "min_age"),
        ({"tags": ["x" * 65]}, "tags[0]"),
        ({"tags": ["t"] * 51}, "tags"),
        ({"title": "x" * 301}, "title"),
    ],
)
def test_an_item_out_of_bounds_is_a_422_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Item.model_validate({**ITEM, **change})
    assert [".".join(map(str, e["loc"])).replace(".0", "[0]") for e in caught.value.errors()] == [
        field
    ]


@pytest.mark.parametrize(
    "ts",
    [
        "0001-01-01T00:00:00+14:00",  # converting to UTC overflows
        "9999-12-31T23:59:59-14:00",  # and so does this
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
    ],
)
def test_an_event_time_out_of_bounds_is_rejected(ts: str) -> None:
    with pytest.raises(ValidationError, match="between 1970"):
        Event.model_validate({**EVENT, "ts": ts})


@pytest.mark.parametrize(
    "ts",
    ["1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "2026-06-01T12:00:00+14:00"],
)
def test_an_event_time_within_bounds_is_accepted(ts: str) -> None:
    assert Event.model_validate({**EVENT, "ts": ts}).ts.tzinfo is not None


@pytest.mark.parametrize(
    "change",
    [
        {"valid_until": "9999-12-31T23:59:59-14:00"},
        {"valid_from": "0001-01-01T00:00:00+14:00"},
        {"margin_weight": "Infinity"},
        {"categories": ["c"] * 101},
    ],
)
def test_an_offer_out_of_bounds_is_rejected(change: dict[str, Any]) -> None:
    offer = {
        "offer_id": "o_edge",
        "title": "Edge",
        "terms": "Terms.",
        "discount_percent": 10,
        "categories": ["tests"],
        "channels": ["web"],
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2026-12-31T00:00:00Z",
    }
    Offer.model_validate(offer)  # the base is valid
    with pytest.raises(ValidationError):
        Offer.model_validate({**offer, **change})


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/decide", {"user_id": "u_0002", "channel": "web", "k": 2**64}, "k"),
        ("/v1/decide", {"user_id": "u_0002", "channel": "web", "context": {"k" * 65: "v"}}, ""),
        ("/v1/feedback", {"decision_id": "d", "reward": float("nan")}, "reward"),
        ("/v1/catalog/items", {"items": [{**ITEM, "stock": 1180591620717411303424}]}, "stock"),
    ],
)
def test_edge_values_through_the_api_are_422s_naming_the_field(
    path: str,
    body: dict[str, Any],
    field: str,
    api: Callable[[Services], TestClient],
    demo_services: Services,
) -> None:
    client = api(demo_services)
    # json.dumps writes NaN as the bare literal NaN, which the server's JSON parser accepts.
    response = client.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in response.json()["detail"]


def test_an_event_out_of_bounds_is_rejected_alone_and_the_batch_goes_on(
    api: Callable[[Services], TestClient], demo_services: Services
) -> None:
    events = [
        {**EVENT, "event_id": "edge_ok_1"},
        {**EVENT, "event_id": "edge_bad_1", "ts": "9999-12-31T23:59:59-14:00"},
        {**EVENT, "event_id": "edge_bad_2", "ts": "0001-01-01T00:00:00+14:00"},
        {**EVENT, "event_id": "edge_bad_3", "type": "purchase", "value": 1e300},
        {**EVENT, "event_id": "edge_ok_2"},
    ]
    response = api(demo_services).post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert results[1]["reason"].startswith("ts:") and results[2]["reason"].startswith("ts:")
    assert results[3]["reason"].startswith("value:")


# -- a full disk: 503 with Retry-After, reported by /healthz, and recovery without a restart ---


@pytest.fixture
def cramped(demo_services: Services, tmp_path: Path) -> Iterator[tuple[Services, dict[str, int]]]:
    """A copy of the demo database whose SQLite page limit a test sets, as a full disk would
    set it: `limit["pages"]` is applied to every new connection; 0 means no limit."""
    copy = tmp_path / "attune.db"
    source = sqlite3.connect(demo_services.db.engine.url.database)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close(), target.close()
    db = Database(f"sqlite:///{copy}")
    limit = {"pages": 0}

    @sqlalchemy.event.listens_for(db.engine, "connect")
    def _limit(connection: Any, _record: Any) -> None:
        if limit["pages"]:
            connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    yield replace(demo_services, db=db), limit
    db.dispose()


def _pages(db: Database) -> int:
    with db.engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA page_count").scalar_one()


def test_a_full_disk_is_a_503_with_retry_after_and_heals_when_space_returns(
    cramped: tuple[Services, dict[str, int]], api: Callable[[Services], TestClient]
) -> None:
    services, limit = cramped
    client = api(services)
    events = [
        {**EVENT, "event_id": f"full_{n}", "anonymous_id": f"anon_full_{n}"} for n in range(1000)
    ]
    limit["pages"] = _pages(services.db)
    services.db.engine.dispose()  # new connections, with the limit

    full = client.post("/v1/events", json={"events": events})
    assert full.status_code == 503, full.text
    assert full.headers["content-type"] == "application/problem+json"
    assert int(full.headers["retry-after"]) > 0
    assert "full" in full.json()["detail"]
    with services.db.engine.connect() as connection:  # nothing half written
        stored = connection.exec_driver_sql(
            "SELECT count(*) FROM events WHERE event_id LIKE 'full_%'"
        ).scalar_one()
    assert stored == 0
    health = client.get("/healthz").json()
    assert health["storage"] is False and health["status"] == "degraded"
    assert any(d.startswith("storage:") for d in health["degraded"])

    limit["pages"] = 0  # space returns; the service is not restarted
    services.db.engine.dispose()
    again = client.post("/v1/events", json={"events": events})
    assert again.status_code == 200 and again.json()["accepted"] == len(events), again.text
    health = client.get("/healthz").json()
    assert health["storage"] is True
    assert not any(d.startswith("storage:") for d in health["degraded"])


class _FailingShard:
    """A real Qdrant Edge shard whose first write is applied and then fails, as a write that
    runs out of disk half-way would."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shard, name)

    def update(self, operation: Any) -> None:
        self.writes += 1
        self.shard.update(operation)
        if self.writes == 1:
            raise RuntimeError("No space left on device (os error 28)")


def test_a_failed_index_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "index", dim=8)
    items = [
        Item(item_id=f"i_{n}", title=f"Item {n}", category="tests", price=1.0, margin=0.1)
        for n in range(3)
    ]
    rng = np.random.default_rng(0)
    index.upsert(items[:2], rng.random((2, 8), dtype=np.float32))
    kept = index.vectors(["i_0", "i_1"])
    real = index._shard
    index._shard = _FailingShard(real)
    with pytest.raises(IndexUnavailable, match="nothing was written"):
        index.upsert(items, rng.random((3, 8), dtype=np.float32))
    index._shard = real
    assert index.count() == 2
    after = index.vectors(["i_0", "i_1", "i_2"])
    assert after.keys() == kept.keys()
    assert all(np.allclose(after[i], kept[i]) for i in kept)
    index.close()
