"""The service on PostgreSQL: the demo world served over HTTP with the store on a real
PostgreSQL server, through every journey that writes — decide, events, feedback, chat (its
memory in PostgreSQL too), a copy job, export and erasure. The embedder is the tiny test model: what is under test is the store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from postgres import create_database
from sqlalchemy import func, select, text

from agents.chat.memory import PostgresCheckpoints
from agents.factory import build_services
from agents.seed import seed
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from api.app import create_app
from store.models import BanditArm, EventRow, User


@pytest.fixture(scope="module")
def services(
    postgres: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    settings = Settings(
        home=tmp_path_factory.mktemp("pg-home"),
        database_url=create_database(postgres, "service"),
        embedding_model=str(tiny_model_dir),
        seed=3,
    )
    built = build_services(settings)
    seed(built, PROJECT_ROOT / "data" / "demo")
    yield built
    built.close()


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: services)) as test_client:
        yield test_client


def test_the_store_is_postgresql(services: Services) -> None:
    assert services.db.engine.dialect.name == "postgresql"
    with services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) > 100


def test_decide_and_feedback_update_the_bandit_on_postgresql(
    client: TestClient, services: Services
) -> None:
    decision = client.post(
        "/v1/decide", json={"user_id": "u_0002", "channel": "web", "query": "coffee"}
    )
    assert decision.status_code == 200, decision.text
    body = decision.json()
    assert body["items"] and body["decision_id"]
    assert client.get(f"/v1/decisions/{body['decision_id']}").status_code == 200
    if body["offer"] is None:
        pytest.fail(f"the demo world should offer u_0002 something on web: {body['explanation']}")
    with services.db.session() as session:
        pulls_before = session.scalar(select(func.sum(BanditArm.pulls))) or 0
    reward = client.post("/v1/feedback", json={"decision_id": body["decision_id"], "reward": 1})
    assert reward.status_code == 200, reward.text
    again = client.post("/v1/feedback", json={"decision_id": body["decision_id"], "reward": 1})
    assert again.status_code == 409
    with services.db.session() as session:
        assert session.scalar(select(func.sum(BanditArm.pulls))) == pulls_before + 1


def test_events_are_stored_once_and_rejected_alone(client: TestClient, services: Services) -> None:
    batch = [
        {
            "event_id": "pg-e1",
            "user_id": "u_0003",
            "type": "view",
            "item_id": "itm_00001",
            "ts": "2026-11-30T10:00:00Z",
        },
        {
            "event_id": "pg-e2",
            "user_id": "u_0003",
            "type": "view",
            "item_id": "itm_00001",
            "ts": "9999-01-01T00:00:00Z",
        },
    ]
    first = client.post("/v1/events", json={"events": batch}).json()
    assert (first["accepted"], first["rejected"]) == (1, 1)
    second = client.post("/v1/events", json={"events": batch[:1]}).json()
    assert second["duplicates"] == 1
    with services.db.session() as session:
        stored = session.scalar(
            select(func.count()).select_from(EventRow).where(EventRow.event_id == "pg-e1")
        )
    assert stored == 1


def test_a_batch_waiting_for_another_process_row_lock_leaves_the_loop_free(
    services: Services,
) -> None:
    # Storing events locks the people's feature rows (FOR UPDATE); on PostgreSQL another worker
    # process may hold them, for a long batch about 0.3 s. A short batch stored on the event loop
    # held the loop for that wait: no request of that worker was read or answered. The loop
    # here releases the lock itself once it sees the batch waiting for it, which it can only do
    # while the batch waits elsewhere; a timer releases it (and the test fails) if the loop
    # never gets to.
    visitor = "pg-lock-wait"
    app = create_app(services=lambda: services)

    def batch(n: int) -> dict[str, object]:
        event = {"type": "view", "ts": "2026-12-01T10:00:00Z", "item_id": "itm_00004"}
        return {"events": [{**event, "event_id": f"lock-wait-{n}", "anonymous_id": visitor}]}

    holder = services.db.engine.connect()  # another backend, as another worker process is
    released: list[str] = []
    releasing = threading.Lock()

    def release(by: str) -> None:
        with releasing:
            if not released:
                released.append(by)
                holder.rollback()
                holder.close()

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                first = await client.post("/v1/events", json=batch(0))  # the visitor's row
                holder.execute(
                    text("SELECT 1 FROM person_features WHERE subject_key = :key FOR UPDATE"),
                    {"key": f"anon:{visitor}"},
                ).one()
                timer = threading.Timer(20, release, ["timer"])
                timer.start()
                storing = asyncio.create_task(client.post("/v1/events", json=batch(1)))
                with services.db.engine.connect() as watcher:
                    while not released:
                        waiting = watcher.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND wait_event_type = 'Lock'"
                            )
                        ).scalar_one()
                        # pg_stat_activity is read once per transaction: a new one each time.
                        watcher.rollback()
                        if waiting:
                            release("loop")
                        await asyncio.sleep(0.01)
                second = await storing
                timer.cancel()
        return first, second

    first, second = asyncio.run(main())
    assert released == ["loop"]
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["accepted"] == second.json()["accepted"] == 1


def test_chat_memory_lives_in_postgresql_and_is_erased_with_the_person(
    client: TestClient, services: Services
) -> None:
    assert services.chat is not None
    memory = services.chat.checkpoints
    assert isinstance(memory, PostgresCheckpoints)
    answer = client.post(
        "/v1/chat", json={"user_id": "u_0004", "message": "any tea ideas?", "stream": False}
    )
    assert answer.status_code == 200, answer.text
    thread = answer.json()["thread_id"]
    assert memory.threads("user:u_0004") == [thread]
    again = client.post(
        "/v1/chat",
        json={"user_id": "u_0004", "thread_id": thread, "message": "and coffee?", "stream": False},
    )
    assert again.status_code == 200 and again.json()["thread_id"] == thread
    # Another worker (a second pool on the same database) sees the same thread.
    other = PostgresCheckpoints(services.settings.resolved_database_url, max_size=1)
    try:
        assert other.threads("user:u_0004") == [thread]
    finally:
        other.close()
    erased = client.delete("/v1/users/u_0004")
    assert erased.status_code == 200 and erased.json()["removed"]["checkpoints"] == 1
    assert memory.threads("user:u_0004") == []


def test_a_copy_job_completes_on_postgresql(client: TestClient) -> None:
    body = {
        "brief": {"goal": "a treat for coffee lovers", "categories": ["coffee_tea"]},
        "channel": "push",
        "audience": {"user_ids": ["u_0005", "u_0006", "u_0007"]},
        "variants": 1,
        "async": True,
    }
    accepted = client.post("/v1/copy", json=body)
    assert accepted.status_code == 202, accepted.text
    url = accepted.json()["status_url"]
    deadline = time.monotonic() + 120
    status = client.get(url).json()
    while status["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.get(url).json()
    assert status["status"] == "done", status


def test_export_then_erase_on_postgresql(client: TestClient, services: Services) -> None:
    exported = client.get("/v1/users/u_0008/export")
    assert exported.status_code == 200 and exported.json()["events"]
    erased = client.delete("/v1/users/u_0008")
    assert erased.status_code == 200 and erased.json()["removed"]["events"] > 0
    assert client.get("/v1/users/u_0008/export").status_code == 404
    with services.db.session() as session:
        assert session.get(User, "u_0008") is None
        left = session.scalar(
            select(func.count()).select_from(EventRow).where(EventRow.user_id == "u_0008")
        )
    assert left == 0
