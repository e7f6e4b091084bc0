"""The committed demo world meets the minimums that the demo, evals and benchmarks rely on."""

from __future__ import annotations

import re
import runpy
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

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


# Words that give a product away, and words that contradict them in the same title: a red
# grape in a white wine, a tea in a coffee, a coffee origin or roast in a tea, foam in cat litter,
# cast iron in a knife. Written here by hand, not read from the generator's vocabulary, so a
# vocabulary that goes wrong is caught too.
CONTRADICTIONS = [
    (r"Cabernet|Merlot|Malbec|Tempranillo|Syrah|Shiraz|Sangiovese|Pinot Noir|Grenache",
     r"White Wine|Dessert Wine"),
    (r"Sauvignon Blanc|Chardonnay|Riesling|Pinot Grigio|Chenin Blanc|Albariño|Sémillon|Muscat",
     r"Red Wine|Rosé"),
    (r"Darjeeling|Assam|Ceylon|Nilgiri|Keemun|Sencha|Gyokuro|Matcha|Dragonwell|Gunpowder|Chai"
     r"|Rooibos|Earl Grey|Tea", r"Coffee|Espresso|Roast"),
    (r"Ethiopian|Colombian|Kenyan|Sumatran|Brazilian|Guatemalan|Roast|Coffee|Espresso", r"Tea"),
    (r"Memory Foam|Fleece|Rubber|Hemp|Salmon|Chicken", r"Cat Litter"),
    (r"Cast-iron|Cast Iron|Enamelled|Ceramic|Copper", r"Knife"),
    (r"Damascus|Forged", r"Pan|Oven|Tray|Saucepan"),
    (r"Sugar Cane|Agave|Juniper|Single Malt", r"Wine"),
]  # fmt: skip
# A word in a title that only one category sells.
CATEGORY_WORDS = [
    (r"Wine|Rosé|Cabernet|Merlot|Chardonnay|Riesling", "wine"),
    (r"Coffee|Espresso|Tea|Darjeeling|Sencha|Chai", "coffee_tea"),
    (r"Whisky|Gin|Rum|Vodka|Tequila|Cognac|Liqueur|Bitters", "spirits"),
    (r"Knife|Frying Pan|Saucepan|Dutch Oven", "kitchen"),
    (r"Cat Litter|Dog|Aquarium|Scratching Post|Pet Carrier", "pet_supplies"),
]


def _has(pattern: str, text: str) -> bool:
    return re.search(rf"\b(?:{pattern})\b", text, re.IGNORECASE) is not None


def _words_after_brand(item: Item, brands: set[str]) -> str:
    """The title without its brand, whose name may hold any word ("Juniper & Oak")."""
    brand = max((b for b in brands if item.title.startswith(b + " ")), key=len, default="")
    return item.title[len(brand) :]


@pytest.fixture(scope="module")
def vocab() -> dict[str, Any]:
    return runpy.run_path(str(DEMO / "catalog_vocab.py"), run_name="demo_vocab")


@pytest.fixture(scope="module")
def brands(vocab: dict[str, Any]) -> set[str]:
    return {
        brand
        for category in vocab["CATEGORIES"].values()
        for brand in (*category.brands, *(b for kind in category.kinds for b in kind.brands))
    }


@pytest.mark.parametrize("words, contradicting", CONTRADICTIONS)
def test_no_title_holds_words_that_contradict_each_other(
    items: list[Item], brands: set[str], words: str, contradicting: str
) -> None:
    clashes = [
        item.title
        for item in items
        if _has(words, title := _words_after_brand(item, brands)) and _has(contradicting, title)
    ]
    assert not clashes, clashes[:5]


@pytest.mark.parametrize("words, category", CATEGORY_WORDS)
def test_words_that_name_a_product_stay_in_its_category(
    items: list[Item], brands: set[str], words: str, category: str
) -> None:
    strays = [
        (item.category, item.title)
        for item in items
        if _has(words, _words_after_brand(item, brands)) and item.category != category
    ]
    assert not strays, strays[:5]


def test_coffee_and_tea_are_tagged_for_what_they_are(items: list[Item]) -> None:
    """A "coffee" campaign or search that goes by tags must not pick up a green tea."""
    for item in items:
        if "coffee" in item.tags:
            assert not _has(r"Tea|Chai", item.title), item.title
        if "tea" in item.tags:
            assert not _has(r"Coffee|Espresso", item.title), item.title


def test_titles_and_descriptions_are_built_from_one_kind_of_their_category(
    items: list[Item], vocab: dict[str, Any]
) -> None:
    """Brand, style, attribute and noun all belong to one kind, and the description repeats them."""
    for item in items:
        category = vocab["CATEGORIES"][item.category]
        title = item.title.lower()
        kinds = [k for k in category.kinds if title.endswith(" " + k.noun.lower())]
        kind = max(kinds, key=lambda k: len(k.noun))
        built = {
            f"{style} {attribute} {kind.noun}".lower(): brand
            for brand in kind.brands or category.brands
            for style in kind.styles
            for attribute in kind.attributes
            if title == f"{brand} {style} {attribute} {kind.noun}".lower()
        }
        assert len(built) == 1, item.title
        [(words, brand)] = built.items()
        assert f"{words} from {brand}, made for {kind.use}.".lower() in item.description.lower()
        assert item.tags[0] == kind.noun.lower().replace(" ", "-").replace("'", "")
        assert set(item.tags[1:]) <= set(kind.tags) | set(category.tags), item.item_id
        low, high = kind.price or category.price
        assert low <= round(item.price) <= high, item.title


def test_age_rated_games_are_of_a_kind_that_carries_the_rating(
    items: list[Item], vocab: dict[str, Any]
) -> None:
    games = [item for item in items if item.category == "video_games"]
    assert {item.min_age for item in games} == {0, 16, 18}
    for item in games:
        assert not (_has("Horror", item.title) and item.min_age < 18), item.title
        assert not (_has("Puzzle|Platformer|Racing", item.title) and item.min_age > 0), item.title
        assert (f"Rated PEGI {item.min_age}." in item.description) == (item.min_age > 0)


@pytest.mark.slow
def test_generator_rewrites_the_committed_files_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The generator imports its sibling modules, as it does when run as a script.
    monkeypatch.syspath_prepend(str(DEMO))
    generator = runpy.run_path(str(DEMO / "generate.py"), run_name="demo_generate")
    generator["main"](["--seed", "20261123", "--out", str(tmp_path)])
    for name in FILES:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DEMO / f"{name}.jsonl").read_bytes()
