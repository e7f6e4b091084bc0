"""Single catalog items over HTTP: read, similar items, hide (never recommended), delete (gone
from the store and the index); and batch recommendations for a list of people as a job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.services import Services
from api.app import create_app

SCARF = {
    "item_id": "wte_scarf",
    "title": "Alpaca wool scarf, undyed",
    "description": "A soft alpaca wool scarf knitted from undyed yarn.",
    "category": "wte_textiles",
    "tags": ["alpaca", "wool"],
    "price": 59,
}
THROW = {
    "item_id": "wte_throw",
    "title": "Undyed vicuna fleece throw",
    "description": "A soft undyed vicuna fleece throw, knitted.",
    "category": "wte_textiles",
    "tags": ["alpaca", "wool"],
    "price": 129,
}


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client
        for item_id in (SCARF["item_id"], THROW["item_id"]):
            test_client.delete(f"/v1/catalog/items/{item_id}")


@pytest.fixture(scope="module")
def items(client: TestClient) -> None:
    response = client.post("/v1/catalog/items", json={"items": [SCARF, THROW]})
    assert response.status_code == 200, response.text


def similar(client: TestClient, item_id: str, **params: Any) -> list[str]:
    response = client.get(f"/v1/catalog/items/{item_id}/similar", params={"k": 10, **params})
    assert response.status_code == 200, response.text
    assert response.json()["degraded"] == []
    return [i["item_id"] for i in response.json()["items"]]


def searched(client: TestClient, query: str) -> list[str]:
    response = client.post(
        "/v1/decide", json={"anonymous_id": "anon-wte-1", "channel": "web", "query": query, "k": 10}
    )
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def test_similar_items_exclude_the_item_itself(client: TestClient, items: None) -> None:
    found = similar(client, "wte_scarf")
    assert "wte_scarf" not in found
    assert "wte_throw" in found


def test_a_hidden_item_is_never_recommended_and_stays_hidden_when_upserted_again(
    client: TestClient, demo_services: Services, items: None
) -> None:
    indexed = demo_services.index.count()
    assert "wte_throw" in searched(client, "undyed vicuna fleece throw")
    hidden = client.post("/v1/catalog/items/wte_throw/hide")
    assert hidden.status_code == 200 and hidden.json()["indexed_total"] == indexed - 1
    assert client.get("/v1/catalog/items/wte_throw").json()["hidden"] is True
    assert "wte_throw" not in similar(client, "wte_scarf")
    assert "wte_throw" not in searched(client, "undyed vicuna fleece throw")
    # A catalog feed sending it again does not bring it back.
    assert client.post("/v1/catalog/items", json={"items": [THROW]}).status_code == 200
    assert "wte_throw" not in searched(client, "undyed vicuna fleece throw")
    assert demo_services.index.count() == indexed - 1
    health = client.get("/healthz").json()
    assert not any(d.startswith("vectors") for d in health["degraded"]), health
    # Similar items of a hidden item still work, from its stored text.
    assert "wte_scarf" in similar(client, "wte_throw")
    shown = client.post("/v1/catalog/items/wte_throw/unhide")
    assert shown.status_code == 200 and shown.json()["indexed_total"] == indexed
    assert "wte_throw" in similar(client, "wte_scarf")


def test_a_deleted_item_is_gone_from_the_store_and_the_index(
    client: TestClient, demo_services: Services, items: None
) -> None:
    client.post("/v1/catalog/items", json={"items": [{**SCARF, "item_id": "wte_gone"}]})
    indexed = demo_services.index.count()
    assert "wte_gone" in similar(client, "wte_scarf")
    deleted = client.delete("/v1/catalog/items/wte_gone")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert demo_services.index.count() == indexed - 1
    assert client.get("/v1/catalog/items/wte_gone").status_code == 404
    assert "wte_gone" not in similar(client, "wte_scarf")
    again = client.delete("/v1/catalog/items/wte_gone")
    assert again.status_code == 404 and "wte_gone" in again.json()["detail"]


@pytest.mark.parametrize(
    "method, path, field",
    [
        ("GET", "/v1/catalog/items/no_such_item", None),
        ("GET", "/v1/catalog/items/no_such_item/similar", None),
        ("POST", "/v1/catalog/items/no_such_item/hide", None),
        ("GET", "/v1/catalog/items/wte_scarf/similar?k=0", "query.k"),
        ("GET", "/v1/catalog/items/wte_scarf/similar?user_id=%20x", "query.user_id"),
    ],
)
def test_unknown_items_are_404_and_bad_parameters_422(
    client: TestClient, items: None, method: str, path: str, field: str | None
) -> None:
    response = client.request(method, path)
    if field is None:
        assert response.status_code == 404 and "no_such_item" in response.json()["detail"]
    else:
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field


def test_similar_items_for_a_person_leave_out_what_they_bought(
    client: TestClient, items: None
) -> None:
    buyer = "u_0061"
    posted = client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "wte-buy-1",
                    "type": "purchase",
                    "ts": "2026-11-30T10:00:00Z",
                    "item_id": "wte_throw",
                    "user_id": buyer,
                    "value": 129,
                }
            ]
        },
    )
    assert posted.json()["accepted"] == 1, posted.text
    assert "wte_throw" in similar(client, "wte_scarf")
    assert "wte_throw" not in similar(client, "wte_scarf", user_id=buyer)


def wait_done(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_batch_recommendations_write_one_line_per_person_erased_and_unknown_explicit(
    client: TestClient,
) -> None:
    erased = "u_0062"
    assert client.delete(f"/v1/users/{erased}").status_code == 200
    people = ["u_0063", "u_9999", erased, "u_0064"]
    accepted = client.post("/v1/recommendations/batch", json={"user_ids": people, "k": 3})
    assert accepted.status_code == 202, accepted.text
    job = wait_done(client, accepted.json()["job_id"])
    assert job["status"] == "done", job
    assert job["summary"] == {"people": 4, "ok": 2, "unknown": 1, "erased": 1}
    results = client.get(accepted.json()["results_url"])
    assert results.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in results.headers["content-disposition"]
    lines = [json.loads(line) for line in results.text.splitlines()]
    assert [line["position"] for line in lines] == [0, 1, 2, 3]
    assert [line["status"] for line in lines] == ["ok", "unknown", "erased", "ok"]
    assert lines[0]["user_id"] == "u_0063" and len(lines[0]["items"]) == 3
    assert lines[1]["items"] == [] and lines[2]["user_id"] is None
    assert erased not in results.text
    # Each line is a logged decision, rewarded like any other.
    reward = client.post("/v1/feedback", json={"decision_id": lines[0]["decision_id"], "reward": 1})
    assert reward.status_code in (200, 409), reward.text  # 409 only if the decision had no offer
    csv_text = client.get(accepted.json()["results_url"], params={"format": "csv"}).text
    assert csv_text.splitlines()[0] == "position,user_id,status,decision_id,item_ids,offer_id"
    # Erased after the job ran: their line names them no more.
    assert client.delete("/v1/users/u_0064").status_code == 200
    after = [json.loads(x) for x in client.get(accepted.json()["results_url"]).text.splitlines()]
    assert after[3] == {"position": 3, "user_id": None, "status": "erased", "items": []}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_ids": []}, "user_ids"),
        ({"user_ids": ["u_0001", "u_0001"]}, "user_ids[1]"),
        ({"user_ids": ["u_0001"], "k": 0}, "k"),
        ({"user_ids": ["u_0001"], "channel": "fax"}, "channel"),
    ],
)
def test_bad_batches_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/recommendations/batch", json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"], response.json()
