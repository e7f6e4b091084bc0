"""Copy a marketer could send: segments with different lifecycles get different copy and items,
the brief's objective shapes the copy, and the export says which person gets which variant."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from statistics import mean
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.copy.persona import Objective, Persona, objective_of, persona_of
from agents.copy.segments import Segment
from agents.services import Services
from api.app import create_app

SEGMENTS = [
    {"name": "lapsing", "rule": {"lifecycle": ["lapsing", "lapsed"]}},
    {"name": "big-spenders", "rule": {"min_monetary": 300}},
    {"name": "everyone", "rule": {}},
]


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def campaign(client: TestClient, goal: str, **brief: Any) -> dict[str, Any]:
    body = {
        "channel": "email",
        "variants": 2,
        "brief": {"goal": goal, "categories": ["coffee_tea", "kitchen"], **brief},
        "audience": {"segments": SEGMENTS},
    }
    response = client.post("/v1/copy", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "rule, persona",
    [
        ({}, Persona.everyone),
        ({"lifecycle": "new"}, Persona.new),
        ({"lifecycle": ["lapsing", "lapsed"]}, Persona.lapsing),
        ({"lifecycle": "lapsed"}, Persona.lapsed),
        ({"min_monetary": 500}, Persona.big_spender),
        ({"price_band": "high"}, Persona.big_spender),
        ({"price_band": "low"}, Persona.bargain),
        ({"lifecycle": "active"}, Persona.active),
    ],
)
def test_a_segments_rule_names_its_persona(rule: dict[str, Any], persona: Persona) -> None:
    assert persona_of(Segment.model_validate({"name": "s", "rule": rule})) == persona


@pytest.mark.parametrize(
    "goal, objective",
    [
        ("bring back coffee lovers", Objective.winback),
        ("win back lapsed customers", Objective.winback),
        ("launch our new range of grinders", Objective.launch),
        ("upgrade people to a better espresso machine", Objective.upsell),
        ("thank our regulars", Objective.loyalty),
        ("sell more coffee", Objective.promote),
    ],
)
def test_the_goals_words_name_its_objective(goal: str, objective: Objective) -> None:
    assert objective_of(goal) == objective
    assert objective_of(goal, Objective.launch) == Objective.launch  # given wins


def test_segments_with_different_lifecycles_get_different_copy_and_items(
    client: TestClient,
) -> None:
    result = campaign(client, "bring back coffee lovers")
    segments = {s["name"]: s for s in result["segments"]}
    assert all(segments[name]["size"] > 0 for name in segments), segments
    assert {s["name"]: s["persona"] for s in result["segments"]} == {
        "lapsing": "lapsing",
        "big-spenders": "big_spender",
        "everyone": "everyone",
    }
    assert {s["objective"] for s in result["segments"]} == {"winback"}
    texts = {name: [v["text"] for v in s["variants"]] for name, s in segments.items()}
    items = {name: tuple(s["item_ids"]) for name, s in segments.items()}
    for v in (0, 1):
        firsts = [texts[name][v] for name in texts]
        assert len(set(firsts)) == len(firsts), firsts
    assert len(set(items.values())) == len(items), items
    assert all(v["checks_passed"] for s in segments.values() for v in s["variants"])

    prices = {
        name: mean(
            client.get(f"/v1/catalog/items/{item_id}").json()["item"]["price"]
            for item_id in segment["item_ids"]
        )
        for name, segment in segments.items()
    }
    assert prices["big-spenders"] > prices["everyone"], prices
    assert texts["lapsing"][0].startswith("We have missed you!")


def test_the_objective_shapes_the_copy_of_the_same_segment(client: TestClient) -> None:
    winback = campaign(client, "bring back coffee lovers")
    launch = campaign(client, "launch our new coffee range")
    given = campaign(client, "coffee for the season", objective="upsell")
    for name in ("lapsing", "big-spenders", "everyone"):
        texts = {
            tuple(
                v["text"] for v in next(s for s in run["segments"] if s["name"] == name)["variants"]
            )
            for run in (winback, launch, given)
        }
        assert len(texts) == 3, (name, texts)
    assert {s["objective"] for s in given["segments"]} == {"upsell"}


def test_the_export_lists_which_person_gets_which_variant(client: TestClient) -> None:
    result = campaign(client, "bring back coffee lovers")
    sizes = {s["name"]: s["size"] for s in result["segments"]}
    variants = {v["variant_id"]: s["name"] for s in result["segments"] for v in s["variants"]}
    url = f"/v1/jobs/{result['campaign_id']}/recipients"
    rows = [json.loads(line) for line in client.get(url).text.splitlines()]
    people = [r["user_id"] for r in rows]
    assert len(people) == len(set(people)) == sizes["everyone"]  # each person once
    assert all(variants[r["variant_id"]] == r["segment"] for r in rows)
    # The first segment a person is in is theirs: every lapsing member gets lapsing copy.
    assert sum(r["segment"] == "lapsing" for r in rows) == sizes["lapsing"]
    assert 0 < sum(r["segment"] == "big-spenders" for r in rows) <= sizes["big-spenders"]
    # Within a segment the people are split between its variants, the same way every time.
    lapsing = [r["variant_id"] for r in rows if r["segment"] == "lapsing"]
    assert set(lapsing) == {"lapsing-v1", "lapsing-v2"}
    assert [json.loads(line) for line in client.get(url).text.splitlines()] == rows
    as_csv = list(csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}).text)))
    assert [(r["user_id"], r["variant_id"]) for r in as_csv] == [
        (r["user_id"], r["variant_id"]) for r in rows
    ]
