"""Personalizer-style Rank and Reward over HTTP: the reward teaches the model, events are
rewarded once, deferred events count only once activated, multi-slot fills slots in order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from agents.services import Services
from api.app import create_app
from store.models import RankEventRow, utcnow

ACTIONS = [
    {"id": "news", "features": [{"topic": "news", "length": 0.3}]},
    {"id": "sport", "features": [{"topic": "sport", "length": 0.5}]},
    {"id": "music", "features": [{"topic": "music", "length": 0.7}]},
]
CONTEXT = [{"time": "morning", "device": {"os": "android"}}]


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def rank(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rank", json={"actions": ACTIONS, **body})
    assert response.status_code == 200, response.text
    return response.json()


def scores(ranked: dict[str, Any]) -> dict[str, float]:
    return {a["id"]: a["score"] for a in ranked["ranking"]}


def test_a_reward_raises_the_rewarded_actions_next_score_in_that_context(
    client: TestClient,
) -> None:
    context = [{"time": "evening", "reader": "rank-test-1"}]
    before = rank(client, context_features=context)
    assert sorted(a["id"] for a in before["ranking"]) == ["music", "news", "sport"]
    # Each probability is rounded to 6 places in the answer, so their sum is 1 within n * 5e-7.
    assert abs(sum(a["probability"] for a in before["ranking"]) - 1) < 1e-5
    chosen = before["reward_action_id"]
    assert before["ranking"][0]["id"] == chosen
    rewarded = client.post(f"/v1/rank/{before['event_id']}/reward", json={"value": 1})
    assert rewarded.status_code == 200, rewarded.text
    assert rewarded.json()["rewarded"] == [{"slot_id": "main", "action_id": chosen, "value": 1.0}]
    after = rank(client, context_features=context)
    assert scores(after)[chosen] > scores(before)[chosen] + 0.1
    # A zero reward for another action in the same context lowers nothing of the first.
    others = [a for a in scores(after) if a != chosen]
    assert max(scores(after)[a] for a in others) < scores(after)[chosen]


def test_excluded_actions_are_never_ranked(client: TestClient) -> None:
    for _ in range(5):
        ranked = rank(client, context_features=CONTEXT, excluded_actions=["news", "music"])
        assert [a["id"] for a in ranked["ranking"]] == ["sport"]
        assert ranked["reward_action_id"] == "sport"


def test_a_reward_is_recorded_once_and_unknown_or_expired_events_are_refused(
    client: TestClient, demo_services: Services
) -> None:
    ranked = rank(client, context_features=CONTEXT, event_id="rank-once-1")
    url = "/v1/rank/rank-once-1/reward"
    first = client.post(url, json={"value": 0.5}).json()
    again = client.post(url, json={"value": 0.5})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["observations"] == first["observations"]  # learned from once
    other = client.post(url, json={"value": 1})
    assert other.status_code == 409 and "rewarded 0.5 already" in other.json()["detail"]
    assert ranked["event_id"] == "rank-once-1"
    taken = client.post("/v1/rank", json={"actions": ACTIONS, "event_id": "rank-once-1"})
    assert taken.status_code == 409 and taken.json()["detail"].startswith("event_id:")

    unknown = client.post("/v1/rank/no-such-event/reward", json={"value": 1})
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("event_id:")

    rank(client, context_features=CONTEXT, event_id="rank-expired-1")
    with demo_services.db.session() as session:
        session.execute(
            update(RankEventRow)
            .where(RankEventRow.event_id == "rank-expired-1")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = client.post("/v1/rank/rank-expired-1/reward", json={"value": 1})
    assert expired.status_code == 409 and "expired" in expired.json()["detail"]


def test_a_deferred_event_takes_rewards_only_once_activated(client: TestClient) -> None:
    ranked = rank(client, context_features=CONTEXT, defer_activation=True)
    assert ranked["activated"] is False
    url = f"/v1/rank/{ranked['event_id']}"
    early = client.post(f"{url}/reward", json={"value": 1})
    assert early.status_code == 409 and "not activated" in early.json()["detail"]
    activated = client.post(f"{url}/activate")
    assert activated.status_code == 200 and activated.json()["activated"] is True
    assert client.post(f"{url}/reward", json={"value": 1}).status_code == 200


def test_multi_slot_fills_each_slot_with_a_different_action_and_rewards_per_slot(
    client: TestClient,
) -> None:
    slots = [
        {"id": "hero", "features": [{"size": "large"}], "baseline_action": "news"},
        {
            "id": "side",
            "features": [{"size": "small"}],
            "baseline_action": "music",
            "excluded_actions": ["sport"],
        },
    ]
    for _ in range(5):
        ranked = rank(client, context_features=CONTEXT, slots=slots)
        hero, side = ranked["slots"]
        assert (hero["id"], side["id"]) == ("hero", "side")
        assert hero["reward_action_id"] != side["reward_action_id"]
        assert side["reward_action_id"] != "sport"
        assert (hero["baseline_action"], side["baseline_action"]) == ("news", "music")
    url = f"/v1/rank/{ranked['event_id']}/reward"
    single = client.post(url, json={"value": 1})
    assert single.status_code == 422 and single.json()["errors"][0]["field"] == "value"
    wrong = client.post(url, json={"slots": [{"slot_id": "footer", "value": 1}]})
    assert wrong.status_code == 404 and wrong.json()["detail"].startswith("slot_id:")
    done = client.post(url, json={"slots": [{"slot_id": "side", "value": 1}]})
    assert done.status_code == 200
    assert done.json()["rewarded"][0]["action_id"] == side["reward_action_id"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"actions": []}, "actions"),
        ({"actions": ACTIONS, "excluded_actions": ["nope"]}, "excluded_actions[0]"),
        ({"actions": ACTIONS, "excluded_actions": ["news", "sport", "music"]}, "excluded_actions"),
        ({"actions": [ACTIONS[0], ACTIONS[0]]}, "actions[1].id"),
        ({"actions": ACTIONS, "context_features": [{"x": "y" * 300}]}, "context_features[0].x"),
        (
            {
                "actions": ACTIONS[:1],
                "slots": [
                    {"id": "a", "baseline_action": "news"},
                    {"id": "b", "baseline_action": "news"},
                ],
            },
            "slots",
        ),
        (
            {"actions": ACTIONS, "slots": [{"id": "a", "baseline_action": "nope"}]},
            "slots[0].baseline_action",
        ),
    ],
)
def test_bad_ranks_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"], response.json()


def test_a_persons_ranks_are_in_their_export_and_go_with_their_erasure(
    client: TestClient,
) -> None:
    person = "u_0075"
    ranked = rank(client, context_features=CONTEXT, user_id=person)
    client.post(f"/v1/rank/{ranked['event_id']}/reward", json={"value": 1})
    exported = client.get(f"/v1/users/{person}/export").json()["rank_events"]
    assert [e["event_id"] for e in exported] == [ranked["event_id"]]
    assert exported[0]["slots"][0]["reward"] == 1
    assert "features" not in str(exported) and "morning" not in str(exported)
    assert client.delete(f"/v1/users/{person}").status_code == 200
    gone = client.post(f"/v1/rank/{ranked['event_id']}/reward", json={"value": 1})
    assert gone.status_code == 404


def test_ranking_for_an_unknown_person_is_a_404_naming_the_field(client: TestClient) -> None:
    response = client.post("/v1/rank", json={"actions": ACTIONS, "user_id": "u_nobody"})
    assert response.status_code == 404 and response.json()["detail"].startswith("user_id:")
