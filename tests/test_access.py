"""API keys, scopes, subject binding, rate limits and size limits, over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agents.services import Services
from api.app import create_app
from api.cli import app as cli
from store.access import create_key

# Users of this module only, so that other modules' caps and counts are not disturbed.
ALICE, BOB = "u_0030", "u_0031"


@pytest.fixture(scope="module")
def secured(demo_services: Services) -> Services:
    settings = demo_services.settings.model_copy(
        update={"auth": "keys", "rate_limit_per_minute": 1000, "max_body_bytes": 4096}
    )
    return replace(demo_services, settings=settings)


@pytest.fixture(scope="module")
def client(secured: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: secured)) as test_client:
        yield test_client


def key(services: Services, *scopes: str, subject: str | None = None) -> dict[str, str]:
    with services.db.session() as session:
        plain, _ = create_key(session, name="test", scopes=scopes, subject_user_id=subject)
    return {"Authorization": f"Bearer {plain}"}


def test_health_needs_no_key_and_says_auth_is_on(client: TestClient) -> None:
    assert client.get("/healthz").json()["auth"] == "keys"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer att_nope_nope"},
        {"Authorization": "Basic abc"},
        {"X-API-Key": "junk"},
    ],
)
def test_no_valid_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/decide", json={"user_id": ALICE, "channel": "web"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


def test_a_revoked_key_stops_working(client: TestClient, secured: Services) -> None:
    admin = key(secured, "admin", "decide")  # a key grants only scopes it holds
    made = client.post(
        "/v1/admin/keys", json={"name": "frontend", "scopes": ["decide"]}, headers=admin
    )
    assert made.status_code == 201
    frontend = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (
        client.post(
            "/v1/decide", json={"user_id": ALICE, "channel": "web"}, headers=frontend
        ).status_code
        == 200
    )
    assert (
        client.delete(f"/v1/admin/keys/{made.json()['key_id']}", headers=admin).status_code == 200
    )
    again = client.post("/v1/decide", json={"user_id": ALICE, "channel": "web"}, headers=frontend)
    assert again.status_code == 401
    actions = [entry["action"] for entry in client.get("/v1/admin/audit", headers=admin).json()]
    assert {"key.create", "key.revoke"} <= set(actions)
    listed = client.get("/v1/admin/keys", headers=admin).json()
    assert all("secret" not in json.dumps(k) and "key" not in k for k in listed)


def test_a_key_revoked_by_another_process_is_refused_at_once(
    client: TestClient, secured: Services
) -> None:
    """The key check keeps nothing between requests: a revocation written by another process
    (here `attune keys revoke`) is seen by this worker's very next request."""
    with secured.db.session() as session:
        plain, info = create_key(session, name="other-process", scopes=["decide"])
    headers = {"Authorization": f"Bearer {plain}"}
    body = {"user_id": ALICE, "channel": "web"}
    assert client.post("/v1/decide", json=body, headers=headers).status_code == 200
    env = {**os.environ, "ATTUNE_HOME": str(secured.settings.home)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    revoked = subprocess.run(
        [sys.executable, "-c", "from api.cli import app; app()", "keys", "revoke", info.key_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert revoked.returncode == 0, revoked.stderr
    refused = client.post("/v1/decide", json=body, headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_a_missing_scope_is_403_naming_it(client: TestClient, secured: Services) -> None:
    decide_only = key(secured, "decide")
    item = {"item_id": "x1", "title": "X", "category": "kitchen", "price": 1, "margin": 0.1}
    response = client.post("/v1/catalog/items", json={"items": [item]}, headers=decide_only)
    assert response.status_code == 403
    assert "'admin'" in response.json()["detail"] and "decide" in response.json()["detail"]
    assert client.get(f"/v1/users/{ALICE}", headers=decide_only).status_code == 403
    assert (
        client.post(
            "/v1/admin/keys", json={"name": "x", "scopes": ["admin"]}, headers=decide_only
        ).status_code
        == 403
    )


def test_a_key_bound_to_alice_never_reaches_bob(client: TestClient, secured: Services) -> None:
    alice = key(secured, "chat", subject=ALICE)
    # Bob's own decision, made by an unbound frontend key.
    bobs = client.post(
        "/v1/decide", json={"user_id": BOB, "channel": "web"}, headers=key(secured, "decide")
    ).json()

    ok = client.post("/v1/decide", json={"user_id": ALICE, "channel": "web"}, headers=alice)
    assert ok.status_code == 200
    assert client.get(f"/v1/users/{ALICE}", headers=alice).status_code == 200
    for method, path, body in [
        ("post", "/v1/decide", {"user_id": BOB, "channel": "web"}),
        ("post", "/v1/decide", {"anonymous_id": "anon-bob", "channel": "web"}),
        ("get", f"/v1/users/{BOB}", None),
        ("put", f"/v1/users/{BOB}", {"consent": {"email": True}}),
        ("get", f"/v1/users/{BOB}/export", None),
        ("delete", f"/v1/users/{BOB}", None),
        ("get", f"/v1/decisions/{bobs['decision_id']}", None),
        ("post", "/v1/feedback", {"decision_id": bobs["decision_id"], "reward": 1}),
    ]:
        response = client.request(method, path, json=body, headers=alice)
        assert response.status_code == 403, (method, path, response.text)
        assert ALICE in response.json()["detail"]
    events = client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "acc-1",
                    "type": "view",
                    "ts": "2026-11-01T10:00:00Z",
                    "user_id": BOB,
                    "item_id": "itm_00001",
                },
                {
                    "event_id": "acc-2",
                    "type": "view",
                    "ts": "2026-11-01T10:00:00Z",
                    "user_id": ALICE,
                    "item_id": "itm_00001",
                },
            ]
        },
        headers=key(secured, "events", subject=ALICE),
    ).json()
    assert [r["status"] for r in events["results"]] == ["rejected", "accepted"]
    assert ALICE in events["results"][0]["reason"]


def test_rate_limit_per_key(secured: Services) -> None:
    tight = replace(
        secured, settings=secured.settings.model_copy(update={"rate_limit_per_minute": 3})
    )
    with TestClient(create_app(services=lambda: tight)) as client:
        headers = key(tight, "admin")
        codes = [client.get("/v1/admin/keys", headers=headers).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limited = client.get("/v1/admin/keys", headers=headers)
        assert int(limited.headers["retry-after"]) >= 1
        other = key(tight, "admin")  # another key has its own budget
        assert client.get("/v1/admin/keys", headers=other).status_code == 200


def test_request_size_limit(client: TestClient, secured: Services) -> None:
    headers = {**key(secured, "events"), "content-type": "application/json"}
    big = json.dumps({"events": [{"event_id": f"e{i}", "pad": "x" * 100} for i in range(100)]})
    response = client.post("/v1/events", content=big, headers=headers)
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000].encode()

    streamed = client.post("/v1/events", content=chunks(), headers=headers)
    assert streamed.status_code == 413


def test_keys_command(secured: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTUNE_HOME", str(secured.settings.home))
    made = CliRunner().invoke(cli, ["keys", "create", "--name", "ops", "--scopes", "admin,eval"])
    assert made.exit_code == 0, made.output
    info = json.loads(made.output)
    assert info["key"].startswith("att_") and info["scopes"] == ["admin", "eval"]
    listed = CliRunner().invoke(cli, ["keys", "list"])
    assert info["key_id"] in listed.output and info["key"] not in listed.output
    assert CliRunner().invoke(cli, ["keys", "revoke", info["key_id"]]).exit_code == 0
    bad = CliRunner().invoke(cli, ["keys", "create", "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2 and "scopes: must be some of" in bad.output


def test_the_key_check_reads_on_a_driver_cursor_as_the_orm_read_does(database_url: str) -> None:
    # `check_key` is what the API runs on every request: the same answer as the ORM's
    # `verify_key`, on both dialects, without a SQLAlchemy Connection around the SELECT.
    from sqlalchemy import event

    from store.access import check_key, revoke_key, verify_key
    from store.db import Database

    db = Database(database_url)
    try:
        with db.session() as session:
            plain, _ = create_key(session, name="a", scopes=["decide", "events"])
            bound, _ = create_key(
                session, name="b", scopes=["decide", "chat"], subject_user_id=ALICE
            )
            gone, info = create_key(session, name="c", scopes=["decide"])
            revoke_key(session, info.key_id)
        key_id = plain.split("_")[1]
        presented = [
            plain,
            bound,
            gone,
            f"att_{key_id}_{'0' * 43}",  # the right key id, a wrong secret
            "att_nokey_nosecret",
            "nothing like a key",
            plain + "x",
        ]
        opened: list[object] = []

        def connected(connection: object) -> None:
            opened.append(connection)

        event.listen(db.engine, "engine_connect", connected)
        found = [check_key(db.engine, each) for each in presented]
        event.remove(db.engine, "engine_connect", connected)
        assert opened == []
        with db.session() as session:
            assert found == [verify_key(session, each) for each in presented]
        assert found[0] is not None and found[0].scopes == ("decide", "events")
        assert found[1] is not None and found[1].scopes == ("decide", "chat")
        assert found[1].subject_user_id == ALICE
        assert found[1].created_at.tzinfo is not None
        assert found[2:] == [None] * 5
    finally:
        db.engine.dispose()
