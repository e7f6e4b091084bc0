"""The committed demo world meets the minimums that the demo, evals and benchmarks rely on."""

from __future__ import annotations

import runpy
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import BaseModel

from store.schemas import Channel, Event, EventType, Item, Offer, Purpose, UserRecord

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
FILES = ("items", "offers", "users", "events")
REFERENCE_DAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)

M = TypeVar("M", bound=BaseModel)


def _load(name: str, model: type[M]) -> list[M]:
    lines = (DEMO / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [model.model_validate_json(line) for line in lines]


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return _load("items", Item)


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return _load("offers", Offer)


@pytest.fixture(scope="module")
def users() -> list[UserRecord]:
    return _load("users", UserRecord)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return _load("events", Event)


def test_catalog_is_large_and_varied(items: list[Item]) -> None:
    assert len(items) >= 1000
    assert len({item.category for item in items}) >= 10
    assert len({item.item_id for item in items}) == len(items)
    assert all(3 <= len(item.tags) <= 6 and item.description for item in items)


def test_catalog_has_age_restricted_and_out_of_stock_items(items: list[Item]) -> None:
    assert any(item.min_age >= 18 for item in items)
    assert any(item.stock == 0 for item in items)
    assert all(item.min_age == 18 for item in items if item.category in {"wine", "spirits"})


def test_offers_have_every_required_field(offers: list[Offer], items: list[Item]) -> None:
    categories = {item.category for item in items}
    assert len(offers) >= 20
    assert len({offer.offer_id for offer in offers}) == len(offers)
    for offer in offers:
        assert offer.title and offer.terms and offer.channels
        assert 5 <= offer.discount_percent <= 40
        assert 1 <= len(offer.categories) <= 3 and set(offer.categories) <= categories
        alcohol = {"wine", "spirits"} & set(offer.categories)
        assert offer.min_age == (18 if alcohol else 0), offer.offer_id


def test_offers_include_expired_future_and_broad_ones(offers: list[Offer]) -> None:
    valid = [o for o in offers if o.valid_from <= NOW < o.valid_until]
    broad = [o for o in valid if o.min_age == 0 and set(o.channels) == set(Channel)]
    assert len(broad) >= 4
    assert any(o.valid_until < NOW for o in offers)
    assert any(o.valid_from > NOW for o in offers)


def test_users_have_full_pii_and_consent(users: list[UserRecord]) -> None:
    assert len(users) >= 200
    assert len({user.user_id for user in users}) == len(users)
    for user in users:
        profile = user.profile
        assert profile.phone and profile.birth_date and profile.address
        assert profile.email.split("@")[1] in {"example.com", "example.org", "example.net"}
        assert set(user.consent) == set(Purpose)


def test_some_users_are_minors(users: list[UserRecord]) -> None:
    ages = [user.profile.age_on(REFERENCE_DAY) for user in users]
    assert sum(age is not None and age < 18 for age in ages) >= 10


def test_events_cover_every_type_on_devices(events: list[Event]) -> None:
    assert len(events) >= 20_000
    assert set(Counter(event.type for event in events)) == set(EventType)
    assert all(event.device_id for event in events)
    assert all(e.value for e in events if e.type is EventType.purchase)


def test_events_are_sorted_and_reference_known_records(
    events: list[Event], items: list[Item], users: list[UserRecord]
) -> None:
    item_ids, user_ids = {i.item_id for i in items}, {u.user_id for u in users}
    assert len({event.event_id for event in events}) == len(events)
    assert all(a.ts <= b.ts for a, b in pairwise(events))
    assert datetime(2026, 8, 1, tzinfo=UTC) <= events[0].ts <= events[-1].ts
    assert events[-1].ts <= datetime(2026, 11, 20, tzinfo=UTC)
    assert {event.item_id for event in events} <= item_ids
    assert {event.user_id for event in events if event.user_id} <= user_ids


def test_anonymous_visits_are_later_linked_to_one_user(events: list[Event]) -> None:
    anonymous = {e.anonymous_id for e in events if e.user_id is None}
    owners: defaultdict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.user_id and event.anonymous_id:
            owners[event.anonymous_id].add(event.user_id)
    assert anonymous & set(owners)
    assert all(len(users) == 1 for users in owners.values())
    assert anonymous - set(owners), "some visitors should stay anonymous"


def test_no_one_buys_an_item_they_are_too_young_for(
    events: list[Event], items: list[Item], users: list[UserRecord]
) -> None:
    min_age = {item.item_id: item.min_age for item in items}
    profiles = {user.user_id: user.profile for user in users}
    purchases = [event for event in events if event.type is EventType.purchase]
    assert all(event.user_id for event in purchases), "checkout requires a login"
    restricted = [event for event in purchases if min_age[event.item_id] > 0]
    assert restricted, "adults should buy some age-restricted items"
    for event in restricted:
        assert event.user_id is not None
        age = profiles[event.user_id].age_on(event.ts.date())
        assert age is not None and age >= min_age[event.item_id], event.event_id


@pytest.mark.slow
def test_generator_rewrites_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    generator = runpy.run_path(str(DEMO / "generate.py"), run_name="demo_generate")
    generator["main"](["--seed", "20261123", "--out", str(tmp_path)])
    for name in FILES:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DEMO / f"{name}.jsonl").read_bytes()
