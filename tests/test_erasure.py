"""Export and erasure: everything about a person comes out, then nothing about them stays —
checked byte by byte over every file in the service's home folder, and in the logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from at_rest import file_bytes
from fastapi.testclient import TestClient
from sqlalchemy import text

from agents.privacy.rights import subject_ref
from agents.services import Services
from agents.settings import PROJECT_ROOT
from api.app import create_app
from store.models import Base

PERSON = "u_0184"  # a demo user with a linked anonymous id and profiling consent; no other test uses them


def _person() -> dict:
    for line in (PROJECT_ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["user_id"] == PERSON:
            return record
    raise AssertionError(PERSON)


def _linked_ids() -> tuple[set[str], set[str]]:
    anonymous, devices = set(), set()
    for line in (PROJECT_ROOT / "data" / "demo" / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["user_id"] == PERSON and event["anonymous_id"]:
            anonymous.add(event["anonymous_id"])
    for line in (PROJECT_ROOT / "data" / "demo" / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["anonymous_id"] in anonymous and event["device_id"]:
            devices.add(event["device_id"])
    return anonymous, devices


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def test_export_then_erasure_reaches_every_store(
    client: TestClient, demo_services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    profile = _person()["profile"]
    anonymous, devices = _linked_ids()
    assert anonymous, "the chosen person must have linked anonymous ids"
    query = f"I'm {profile['first_name']} {profile['last_name']}, mail {profile['email']}: a gift?"
    decision = client.post(
        "/v1/decide", json={"user_id": PERSON, "channel": "web", "query": query}
    ).json()
    if decision["offer"]:
        assert (
            client.post(
                "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 1}
            ).status_code
            == 200
        )
    client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "erase-1",
                    "type": "view",
                    "ts": "2026-11-20T10:00:00Z",
                    "user_id": PERSON,
                    "item_id": "itm_00002",
                }
            ]
        },
    )
    assert demo_services.tools.collab is not None
    assert demo_services.tools.collab.user_vector(f"user:{PERSON}") is not None

    exported = client.get(f"/v1/users/{PERSON}/export").json()
    assert exported["profile"]["email"] == profile["email"]
    assert set(exported["identity_links"]["anonymous"]) == anonymous
    assert any(e["event_id"] == "erase-1" for e in exported["events"])
    assert decision["decision_id"] in [d["decision_id"] for d in exported["decisions"]]
    assert f"user:{PERSON}" in exported["collaborative_factors"]

    erased = client.delete(f"/v1/users/{PERSON}")
    assert erased.status_code == 200, erased.text
    removed = erased.json()["removed"]
    assert removed["events"] > 1 and removed["decisions"] >= 1 and removed["identity_links"] >= 1
    assert removed["collaborative_factors"] >= 1

    assert client.get(f"/v1/users/{PERSON}").status_code == 404
    assert client.get(f"/v1/decisions/{decision['decision_id']}").status_code == 404
    assert demo_services.tools.collab.user_vector(f"user:{PERSON}") is None

    identifiers = {PERSON, profile["email"], profile["email"].upper(), *anonymous, *devices}
    if profile.get("phone"):
        identifiers.add(profile["phone"])
    # Every table, row by row.
    with demo_services.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            dump = str(connection.execute(text(f"SELECT * FROM {table.name}")).all())
            for value in identifiers:
                assert value not in dump, (table.name, value)
    # Every file of the home folder: the database and its log, vectors, models, markers.
    files = [p for p in Path(demo_services.settings.home).rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        data = file_bytes(path)  # not `read_bytes`: see tests/at_rest.py
        for value in identifiers:
            assert value.encode() not in data, (str(path), value)
    # The service's logs of everything above (httpx's lines are the test client's own).
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    for value in identifiers:
        assert value not in logged, value
    # The audit log knows that this person was erased, by a keyed pseudonym only.
    with demo_services.db.session() as session:
        from store.access import audit_entries

        entries = audit_entries(session, limit=50)
    assert any(
        e["action"] == "user.erase" and e["target"] == subject_ref(demo_services, PERSON)
        for e in entries
    )


def test_erasing_someone_unknown_is_404(client: TestClient) -> None:
    assert client.delete("/v1/users/u_nobody_here").status_code == 404
