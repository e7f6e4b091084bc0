"""The user boundary and key delegation, attacked through the real app with `ATTUNE_AUTH=keys`.

A key bound to the thief tries every route against the victim's data: each try is refused, the
answer carries nothing of the victim, and the victim's export is the same before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from agents.services import Services
from api.app import create_app
from api.cli import app as cli
from store.access import SCOPES, UNBINDABLE, create_key, list_keys
from store.models import ApiKey
from store.users import link_owner
from tests.routing import api_routes

# Users of this module only, so that other modules' caps and counts are not disturbed.
VICTIM, THIEF = "u_0050", "u_0051"
VICTIM_ANON, VICTIM_DEVICE = "anon-boundary-victim", "dev-boundary-victim"
ITEM = {"item_id": "bnd_1", "title": "X", "category": "kitchen", "price": 1, "margin": 0.1}
NOT_ADMIN = tuple(s for s in SCOPES if s not in UNBINDABLE)
RANK_ACTIONS = [{"id": "a", "features": [{"x": 1}]}, {"id": "b", "features": [{"x": 2}]}]


@pytest.fixture(scope="module")
def secured(demo_services: Services) -> Services:
    settings = demo_services.settings.model_copy(
        update={"auth": "keys", "rate_limit_per_minute": 10_000}
    )
    return replace(demo_services, settings=settings)


@pytest.fixture(scope="module")
def client(secured: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: secured)) as test_client:
        yield test_client


def key(services: Services, *scopes: str, subject: str | None = None) -> dict[str, str]:
    with services.db.session() as session:
        plain, _ = create_key(session, name="boundary", scopes=scopes, subject_user_id=subject)
    return {"Authorization": f"Bearer {plain}"}


def legacy_bound_admin(services: Services, subject: str) -> dict[str, str]:
    """A key bound to `subject` with every scope, `admin` too, as one made before the rule."""
    with services.db.session() as session:
        plain, info = create_key(session, name="legacy", scopes=SCOPES)
        session.execute(
            update(ApiKey).where(ApiKey.key_id == info.key_id).values(subject_user_id=subject)
        )
    return {"Authorization": f"Bearer {plain}"}


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "view",
        "ts": "2026-11-01T10:00:00Z",
        "item_id": "itm_00001",
        **fields,
    }


@dataclass(frozen=True)
class Victim:
    decision_id: str
    campaign_id: str
    variant_id: str
    copy_decision_id: str
    key_id: str
    rank_event_id: str
    secrets: tuple[str, ...]  # strings no answer to the thief may contain


@pytest.fixture(scope="module")
def victim(client: TestClient, secured: Services) -> Victim:
    """The victim's data, made by trusted unbound keys: anonymous browsing, then a login that
    links it; a decision; a copy campaign that served them a variant."""
    trusted = key(secured, *SCOPES)
    posted = client.post(
        "/v1/events",
        json={
            "events": [
                event("bnd-v1", anonymous_id=VICTIM_ANON, item_id="itm_00002"),
                event("bnd-v2", anonymous_id=VICTIM_ANON, item_id="itm_00003"),
                event("bnd-v3", user_id=VICTIM, anonymous_id=VICTIM_ANON, device_id=VICTIM_DEVICE),
            ]
        },
        headers=trusted,
    ).json()
    assert posted["accepted"] == 3, posted
    decision = client.post(
        "/v1/decide", json={"user_id": VICTIM, "channel": "web"}, headers=trusted
    )
    assert decision.status_code == 200, decision.text
    body = {
        "brief": {"goal": "a treat for coffee lovers", "categories": ["coffee_tea"]},
        "channel": "web_banner",
        "audience": {"user_ids": [VICTIM, THIEF]},
        "variants": 2,
    }
    campaign = client.post("/v1/copy", json=body, headers=trusted)
    assert campaign.status_code == 200, campaign.text
    result = campaign.json()
    variant_id = result["segments"][0]["variants"][0]["variant_id"]
    registered = client.post(
        f"/v1/copy/{result['campaign_id']}/variants/{variant_id}/register", headers=trusted
    )
    assert registered.status_code == 200, registered.text
    served = client.post(
        f"/v1/copy/{result['campaign_id']}/serve", json={"user_id": VICTIM}, headers=trusted
    )
    assert served.status_code == 200, served.text
    ranked = client.post(
        "/v1/rank",
        json={"user_id": VICTIM, "actions": RANK_ACTIONS, "defer_activation": True},
        headers=trusted,
    )
    assert ranked.status_code == 200, ranked.text
    profile = client.get(f"/v1/users/{VICTIM}", headers=trusted).json()["profile"]
    with secured.db.session() as session:
        key_id = list_keys(session)[-1].key_id  # a key the thief would like to revoke
    return Victim(
        decision_id=decision.json()["decision_id"],
        campaign_id=result["campaign_id"],
        variant_id=variant_id,
        copy_decision_id=served.json()["decision_id"],
        key_id=key_id,
        rank_event_id=ranked.json()["event_id"],
        secrets=(
            VICTIM,
            VICTIM_ANON,
            VICTIM_DEVICE,
            profile["email"],
            profile["first_name"],
            profile["last_name"],
        ),
    )


def export(client: TestClient, services: Services, user_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/users/{user_id}/export", headers=key(services, "admin"))
    assert response.status_code == 200, response.text
    return response.json()


# Every route under /v1, with what the thief sends to reach the victim through it. A route
# added without a row here fails `test_the_table_covers_every_route`.
ATTACKS: list[tuple[str, str, dict[str, str], Any]] = [
    ("POST", "/v1/decide", {}, {"user_id": VICTIM, "channel": "web"}),
    ("POST", "/v1/decide", {}, {"anonymous_id": VICTIM_ANON, "channel": "web"}),
    ("POST", "/v1/decide", {}, {"user_id": THIEF, "anonymous_id": VICTIM_ANON, "channel": "web"}),
    ("POST", "/v1/chat", {}, {"user_id": VICTIM, "message": "hi", "stream": False}),
    ("POST", "/v1/chat", {}, {"anonymous_id": VICTIM_ANON, "message": "hi", "stream": False}),
    (
        "POST",
        "/v1/chat",
        {},
        {"user_id": THIEF, "anonymous_id": VICTIM_ANON, "message": "hi", "stream": True},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {},
        {"messages": [{"role": "user", "content": "hi"}], "user": VICTIM},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {},
        {
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"anonymous_id": VICTIM_ANON},
            "stream": True,
        },
    ),
    ("POST", "/v1/feedback", {}, {"decision_id": "{decision_id}", "reward": 1}),
    ("GET", "/v1/decisions/{decision_id}", {"decision_id": "{decision_id}"}, None),
    ("GET", "/v1/users/{user_id}", {"user_id": VICTIM}, None),
    ("PUT", "/v1/users/{user_id}", {"user_id": VICTIM}, {"consent": {"email": False}}),
    ("GET", "/v1/users/{user_id}/export", {"user_id": VICTIM}, None),
    ("DELETE", "/v1/users/{user_id}", {"user_id": VICTIM}, None),
    (
        "POST",
        "/v1/copy",
        {},
        {
            "brief": {"goal": "a treat", "categories": ["coffee_tea"]},
            "channel": "web_banner",
            "audience": {"user_ids": [VICTIM]},
        },
    ),
    (
        "POST",
        "/v1/copy/{campaign_id}/variants/{variant_id}/register",
        {"campaign_id": "{campaign_id}", "variant_id": "{variant_id}"},
        None,
    ),
    (
        "POST",
        "/v1/copy/{campaign_id}/serve",
        {"campaign_id": "{campaign_id}"},
        {"user_id": VICTIM},
    ),
    (
        "POST",
        "/v1/copy/{campaign_id}/feedback",
        {"campaign_id": "{campaign_id}"},
        {"decision_id": "{copy_decision_id}", "reward": 1},
    ),
    ("GET", "/v1/jobs/{job_id}", {"job_id": "{campaign_id}"}, None),
    ("GET", "/v1/jobs/{job_id}/results", {"job_id": "{campaign_id}"}, None),
    ("GET", "/v1/jobs/{job_id}/recipients", {"job_id": "{campaign_id}"}, None),
    (
        "POST",
        "/v1/copy/audience",
        {},
        {"channel": "push", "audience": {"user_ids": [VICTIM]}, "sample": 5},
    ),
    ("GET", "/v1/evals/reports", {}, None),
    ("GET", "/v1/evals/reports/{report_id}", {"report_id": "any"}, None),
    ("POST", "/v1/catalog/items", {}, {"items": [ITEM]}),
    ("POST", "/v1/admin/keys", {}, {"name": "mine", "scopes": ["admin"]}),
    (
        "POST",
        "/v1/admin/keys",
        {},
        {"name": "mine", "scopes": ["decide"], "subject_user_id": VICTIM},
    ),
    ("GET", "/v1/admin/keys", {}, None),
    ("DELETE", "/v1/admin/keys/{key_id}", {"key_id": "{key_id}"}, None),
    ("GET", "/v1/admin/audit", {}, None),
    ("GET", "/v1/experiments/report", {}, None),  # aggregates: a bound key never has `reports`
    (
        "POST",
        "/v1/admin/links",
        {},
        {"kind": "anonymous", "external_id": VICTIM_ANON, "user_id": THIEF, "move": True},
    ),
    ("GET", "/v1/drift", {}, None),  # service-wide: `reports` or `admin`, never a bound key
    ("POST", "/v1/rank", {}, {"user_id": VICTIM, "actions": RANK_ACTIONS}),
    ("POST", "/v1/rank/{event_id}/activate", {"event_id": "{rank_event_id}"}, None),
    ("POST", "/v1/rank/{event_id}/reward", {"event_id": "{rank_event_id}"}, {"value": 1}),
    (
        "GET",
        "/v1/catalog/items/{item_id}/similar",
        {"item_id": "itm_00001", "?user_id": VICTIM},
        None,
    ),
    ("POST", "/v1/catalog/items/{item_id}/hide", {"item_id": "itm_00001"}, None),
    ("POST", "/v1/catalog/items/{item_id}/unhide", {"item_id": "itm_00001"}, None),
    ("DELETE", "/v1/catalog/items/{item_id}", {"item_id": "itm_00001"}, None),
    ("POST", "/v1/recommendations/batch", {}, {"user_ids": [VICTIM]}),
    # Events answer 200 with a verdict per event: checked by `test_events_...` below.
    ("POST", "/v1/events", {}, None),
]
OPEN_ROUTES = {  # no data of anyone
    ("GET", "/healthz"),
    ("GET", "/"),  # the landing page
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# The console's static files: the page holds no data; it calls the routes above with a key.
OPEN_ROUTES |= {("GET", "/console"), ("GET", "/console/"), ("GET", "/console/{name}")}
# Prometheus counts and histograms: aggregates labelled by route, channel and writer, no one's data
# (its scope — metrics or admin — is tested in tests/test_metrics.py).
OPEN_ROUTES |= {("GET", "/metrics")}
# The catalog, read by any key that decides, chats or writes copy: it holds no one's data, so
# the thief reads it too (`test_catalog_reads_hold_nothing_of_the_victim`).
CATALOG_READS = [
    ("GET", "/v1/catalog/items/{item_id}", {"item_id": "itm_00001"}),
    ("GET", "/v1/catalog/items/{item_id}/similar", {"item_id": "itm_00001"}),
]


def _fill(value: Any, victim: Victim) -> Any:
    if isinstance(value, str):
        return value.format(**victim.__dict__) if value.startswith("{") else value
    if isinstance(value, dict):
        return {k: _fill(v, victim) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, victim) for v in value]
    return value


def test_the_table_covers_every_route(client: TestClient) -> None:
    routes = {
        (method, route.path)
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        for method in route.methods
    }
    covered = (
        {(method, path) for method, path, _, _ in ATTACKS}
        | OPEN_ROUTES
        | {(method, path) for method, path, _ in CATALOG_READS}
    )
    assert routes <= covered, f"routes with no attack in the table: {sorted(routes - covered)}"


@pytest.mark.parametrize("thief_key", ["bound", "legacy bound admin"])
def test_a_key_bound_to_the_thief_reaches_nothing_of_the_victim(
    client: TestClient, secured: Services, victim: Victim, thief_key: str
) -> None:
    headers = (
        key(secured, *NOT_ADMIN, subject=THIEF)
        if thief_key == "bound"
        else legacy_bound_admin(secured, THIEF)
    )
    before = export(client, secured, VICTIM)
    for method, template, params, body in ATTACKS:
        if template == "/v1/events":
            continue
        filled = _fill(params, victim)
        path = template.format(**{k: v for k, v in filled.items() if not k.startswith("?")})
        query = {k[1:]: v for k, v in filled.items() if k.startswith("?")}
        response = client.request(
            method, path, json=_fill(body, victim), params=query, headers=headers
        )
        assert response.status_code in (403, 404), (method, path, body, response.text)
        for secret in victim.secrets:
            assert secret not in response.text, (method, path, secret)
    # The thief still works for themself: the refusals above are about the victim, not the key.
    own = client.post("/v1/decide", json={"user_id": THIEF, "channel": "web"}, headers=headers)
    assert own.status_code == 200, own.text
    assert export(client, secured, VICTIM) == before
    with secured.db.session() as session:
        assert not any(k.name == "mine" for k in list_keys(session))  # no key was minted
    with secured.db.session() as session:
        assert link_owner(session, "anonymous", VICTIM_ANON) == VICTIM


def test_catalog_reads_hold_nothing_of_the_victim(
    client: TestClient, secured: Services, victim: Victim
) -> None:
    headers = key(secured, *NOT_ADMIN, subject=THIEF)
    for method, template, params in CATALOG_READS:
        response = client.request(method, template.format(**params), headers=headers)
        assert response.status_code == 200, (template, response.text)
        for secret in victim.secrets:
            assert secret not in response.text, (template, secret)


@pytest.mark.parametrize("thief_scopes", [("events",), NOT_ADMIN])
def test_events_cannot_take_over_the_victims_identity(
    client: TestClient, secured: Services, victim: Victim, thief_scopes: tuple[str, ...]
) -> None:
    headers = key(secured, *thief_scopes, subject=THIEF)
    before = export(client, secured, VICTIM)
    stamp = len(thief_scopes)
    out = client.post(
        "/v1/events",
        json={
            "events": [
                event(f"bnd-t{stamp}-1", user_id=THIEF, anonymous_id=VICTIM_ANON),
                event(f"bnd-t{stamp}-2", user_id=THIEF, device_id=VICTIM_DEVICE),
                event(f"bnd-t{stamp}-3", user_id=VICTIM, item_id="itm_00009"),
                event(f"bnd-t{stamp}-4", anonymous_id=VICTIM_ANON),
                event(f"bnd-t{stamp}-5", user_id=THIEF, anonymous_id=f"anon-thief-{stamp}"),
            ]
        },
        headers=headers,
    )
    assert out.status_code == 200, out.text
    results = out.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 4 + ["accepted"]
    assert results[0]["reason"].startswith("anonymous_id: linked to another user")
    assert results[1]["reason"].startswith("device_id: linked to another user")
    assert results[2]["reason"].startswith("user_id:")
    assert all(secret not in out.text for secret in victim.secrets[:1] + victim.secrets[3:])
    assert export(client, secured, VICTIM) == before
    mine = export(client, secured, THIEF)
    assert VICTIM_ANON not in json.dumps(mine) and VICTIM_DEVICE not in json.dumps(mine)
    assert f"anon-thief-{stamp}" in mine["identity_links"]["anonymous"]  # their own login links


def test_an_unbound_key_does_not_move_a_link_by_event_either(
    client: TestClient, secured: Services, victim: Victim
) -> None:
    before = export(client, secured, VICTIM)
    out = client.post(
        "/v1/events",
        json={"events": [event("bnd-u1", user_id=THIEF, anonymous_id=VICTIM_ANON)]},
        headers=key(secured, "events"),
    ).json()
    assert out["results"][0]["status"] == "rejected"
    assert out["results"][0]["reason"].startswith("anonymous_id:")
    assert export(client, secured, VICTIM) == before
    # Naming a user with someone else's anonymous id mixes two people: a conflict for anyone.
    mixed = client.post(
        "/v1/decide",
        json={"user_id": THIEF, "anonymous_id": VICTIM_ANON, "channel": "web"},
        headers=key(secured, "decide"),
    )
    assert mixed.status_code == 409 and mixed.json()["detail"].startswith("anonymous_id:")


def test_only_an_unbound_admin_moves_a_link_explicitly(
    client: TestClient, secured: Services
) -> None:
    first, second, anon = "u_0052", "u_0053", "anon-boundary-merge"
    trusted = key(secured, "events")
    client.post(
        "/v1/events",
        json={"events": [event("bnd-m1", user_id=first, anonymous_id=anon)]},
        headers=trusted,
    )
    admin = key(secured, "admin")
    link = {"kind": "anonymous", "external_id": anon, "user_id": second}
    refused = client.post("/v1/admin/links", json=link, headers=admin)
    assert refused.status_code == 409 and "move" in refused.json()["detail"]
    assert anon in export(client, secured, first)["identity_links"]["anonymous"]

    moved = client.post("/v1/admin/links", json={**link, "move": True}, headers=admin)
    assert moved.status_code == 200 and moved.json()["outcome"] == "moved", moved.text
    assert anon not in export(client, secured, first)["identity_links"]["anonymous"]
    merged = export(client, secured, second)
    assert anon in merged["identity_links"]["anonymous"]
    assert "bnd-m1" in {e["event_id"] for e in merged["events"]}  # the history moved with it
    entries = client.get("/v1/admin/audit", params={"limit": 20}, headers=admin).json()
    entry = next(e for e in entries if e["action"] == "link.moved")
    assert first not in json.dumps(entry) and second not in json.dumps(entry)


# -- Delegation: a key never mints a key wider than itself -------------------------------------


def test_a_bound_admin_key_is_refused_by_the_api_and_the_command(
    client: TestClient, secured: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = key(secured, *SCOPES)
    response = client.post(
        "/v1/admin/keys",
        json={"name": "x", "scopes": ["decide", "admin"], "subject_user_id": THIEF},
        headers=admin,
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("scopes:") and "'admin'" in response.text

    monkeypatch.setenv("ATTUNE_HOME", str(secured.settings.home))
    made = CliRunner().invoke(
        cli, ["keys", "create", "--name", "x", "--scopes", "admin", "--subject", THIEF]
    )
    assert made.exit_code == 2 and "'admin' cannot be given to a key bound" in made.output
    with secured.db.session() as session:
        assert not any(k.name == "x" for k in list_keys(session))


def test_a_legacy_bound_admin_key_cannot_mint_an_unbound_admin(
    client: TestClient, secured: Services
) -> None:
    headers = legacy_bound_admin(secured, THIEF)
    for body in (
        {"name": "escape", "scopes": ["admin"]},
        {"name": "escape", "scopes": ["decide"]},
        {"name": "escape", "scopes": ["decide"], "subject_user_id": THIEF},
    ):
        response = client.post("/v1/admin/keys", json=body, headers=headers)
        assert response.status_code == 403, response.text
        ignored = f"{', '.join(sorted(UNBINDABLE))} ignored on a key bound to a user"
        assert ignored in response.json()["detail"]
    assert client.get("/v1/admin/audit", headers=headers).status_code == 403
    assert (
        client.post("/v1/catalog/items", json={"items": [ITEM]}, headers=headers).status_code == 403
    )


@pytest.mark.parametrize(
    "issuer, asked, status",
    [
        (("admin",), {"scopes": ["admin"]}, 201),
        (("admin",), {"scopes": ["admin", "decide"]}, 403),
        (("admin",), {"scopes": ["decide"], "subject_user_id": THIEF}, 403),
        (("admin", "decide"), {"scopes": ["decide"], "subject_user_id": THIEF}, 201),
        (("admin", "decide"), {"scopes": ["decide", "eval"]}, 403),
        (("admin", "events"), {"scopes": ["admin"], "subject_user_id": THIEF}, 422),
    ],
)
def test_a_key_grants_only_scopes_it_holds(
    client: TestClient,
    secured: Services,
    issuer: tuple[str, ...],
    asked: dict[str, Any],
    status: int,
) -> None:
    response = client.post(
        "/v1/admin/keys", json={"name": "child", **asked}, headers=key(secured, *issuer)
    )
    assert response.status_code == status, response.text
    if status == 201:
        made = response.json()
        assert set(made["scopes"]) <= set(issuer)
        assert made["subject_user_id"] == asked.get("subject_user_id")
    else:
        assert response.json()["detail"].startswith("scopes:")
