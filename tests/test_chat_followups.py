"""Chat that remembers without an LLM: in the offline plan a follow-up refines the previous turn
from the thread's memory (cheaper, something else, what was the first one?) instead of being
searched as new text, and consecutive replies do not open alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.chat.followup import FollowUp, classify
from agents.services import Services
from api.app import create_app

MEMORY = {"query": "coffee", "shown": [{"item_id": "a", "price": 5}], "seen": ["a"], "turns": 1}


@pytest.mark.parametrize(
    "message, expected",
    [
        ("cheaper", FollowUp("cheaper")),
        ("Anything cheaper?", FollowUp("cheaper")),
        ("that's too expensive", FollowUp("cheaper")),
        ("something else", FollowUp("else")),
        ("show me other options", FollowUp("else")),
        ("what was the first one?", FollowUp("recall", 1)),
        ("tell me about the second one", FollowUp("recall", 2)),
        ("and the last one?", FollowUp("recall", -1)),
        ("running shoes for the rain", None),
        (
            "a cheaper espresso machine with a milk frother and a grinder built in for my office",
            None,
        ),
    ],
)
def test_follow_ups_are_recognised(message: str, expected: FollowUp | None) -> None:
    assert classify(message, MEMORY) == expected


def test_without_a_previous_turn_nothing_is_a_follow_up() -> None:
    assert classify("cheaper", None) is None
    assert classify("something else", {"shown": []}) is None


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def say(client: TestClient, message: str, thread: str, user: str = "u_0071") -> dict[str, Any]:
    response = client.post(
        "/v1/chat",
        json={"user_id": user, "message": message, "thread_id": thread, "stream": False},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "chat: no LLM configured; answered by the offline plan" in answer["degraded"]
    return answer


def searched(client: TestClient, answer: dict[str, Any]) -> list[str]:
    """The queries the turn's retrievals searched, from its decision record."""
    record = client.get(f"/v1/decisions/{answer['decision_id']}").json()["record"]
    return [
        call["arguments"].get("query", "")
        for call in record["chat"]["tool_calls"]
        if call["name"] == "retrieve_items"
    ]


def test_follow_ups_refine_the_previous_turn_from_memory(client: TestClient) -> None:
    thread = "follow-ups-1"
    first = say(client, "a present for a coffee lover", thread)
    shown = [i["item_id"] for i in first["items"]]
    assert len(shown) >= 2
    average = sum(i["price"] for i in first["items"]) / len(first["items"])

    cheaper = say(client, "cheaper", thread)
    assert cheaper["items"], cheaper["reply"]
    prices = [i["price"] for i in cheaper["items"]]
    assert all(p < average for p in prices) and prices == sorted(prices)
    assert not set(shown) & {i["item_id"] for i in cheaper["items"]}
    # The last turn's request was searched again; "cheaper" was not searched as text.
    assert all("coffee" in q for q in searched(client, cheaper)), searched(client, cheaper)

    other = say(client, "something else", thread)
    so_far = set(shown) | {i["item_id"] for i in cheaper["items"]}
    assert other["items"] and not so_far & {i["item_id"] for i in other["items"]}
    assert all("coffee" in q for q in searched(client, other))

    recall = say(client, "what was the first one?", thread)
    first_of_last = other["items"][0]
    assert [i["item_id"] for i in recall["items"]] == [first_of_last["item_id"]]
    assert first_of_last["title"] in recall["reply"]
    assert searched(client, recall) == []  # answered from memory, no search

    openings = [" ".join(a["reply"].split()[:2]) for a in (first, cheaper, other, recall)]
    assert len(set(openings)) == len(openings), openings


def test_a_new_request_in_a_thread_is_searched_and_opens_differently(
    client: TestClient,
) -> None:
    thread = "follow-ups-2"
    first = say(client, "a present for a coffee lover", thread)
    second = say(client, "running shoes for the rain", thread)
    assert all("running" in q for q in searched(client, second))
    assert second["reply"].split()[:2] != first["reply"].split()[:2]
    third = say(client, "a good book", thread)
    assert third["reply"].split()[:2] != second["reply"].split()[:2]


def test_the_same_words_in_a_fresh_thread_are_a_new_search(client: TestClient) -> None:
    answer = say(client, "cheaper", "follow-ups-3")
    [query] = searched(client, answer)  # the message itself (minimized in the record)
    assert len(query.split()) == 1 and "coffee" not in query


def test_a_follow_up_never_reaches_another_persons_thread(client: TestClient) -> None:
    say(client, "a present for a coffee lover", "follow-ups-4", user="u_0072")
    # The same thread id for someone else is their own, empty thread: nothing to refine.
    other = say(client, "cheaper", "follow-ups-4", user="u_0073")
    [query] = searched(client, other)
    assert len(query.split()) == 1 and "coffee" not in query
