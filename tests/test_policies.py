"""The policy file's validation and the engine's verdicts, rule by rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.seed import read_jsonl
from policies.engine import Exposure, Facts, PolicyEngine
from policies.rules import PolicyError, load_policy, parse_policy
from store.features import Purchases
from store.schemas import Channel, Item, Offer, Purpose

DEMO_POLICY = Path(__file__).parents[1] / "data" / "demo" / "policy.yaml"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
ALL_CONSENT = dict.fromkeys(Purpose, True)


_ENGINE = PolicyEngine(load_policy(DEMO_POLICY))


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return _ENGINE


def facts(age: int | None = 30, channel: Channel = Channel.web, **kw) -> Facts:
    return Facts(age=age, consent=kw.pop("consent", ALL_CONSENT), channel=channel, now=NOW, **kw)


def item(item_id: str = "i1", **kw) -> Item:
    base = {"title": "Thing", "category": "wine", "price": 10.0, "margin": 0.2, "stock": 5}
    return Item(item_id=item_id, **{**base, **kw})


def offer(offer_id: str = "o1", **kw) -> Offer:
    base = {
        "title": "Deal",
        "terms": "Ten percent off.",
        "discount_percent": 10,
        "categories": ["wine"],
        "channels": ["web", "email"],
        "valid_from": NOW - timedelta(days=10),
        "valid_until": NOW + timedelta(days=10),
    }
    return Offer(offer_id=offer_id, **{**base, **kw})


def test_demo_policy_loads_with_a_hash_version() -> None:
    policy = load_policy(DEMO_POLICY)
    assert len(policy.version) == 12
    assert {rule.id for rule in policy.rules} >= {"age-gate", "same-offer-once-24h", "no-rebuy-90d"}


def test_version_changes_with_the_file() -> None:
    raw = DEMO_POLICY.read_bytes()
    assert parse_policy(raw).version != parse_policy(raw + b"\n# edited\n").version


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name: x\nrules:\n  - {id: cap, type: frequency_cap, max: 0, window_hours: 24}\n",
            "rules[0] (cap).max",
        ),
        (
            "name: x\nrules:\n  - {id: cap, type: frequency_cap, max: 1, window_hours: -1}\n",
            "rules[0] (cap).window_hours",
        ),
        ("name: x\nrules:\n  - {id: a, type: stok}\n", "does not match any of the expected tags"),
        (
            "name: x\nrules:\n  - {id: a, type: stock}\n  - {id: a, type: stock}\n",
            "rule id 'a' is used twice",
        ),
        (
            "name: x\nrules:\n  - {id: c, type: consent, purpose: gossip, guards: offers}\n",
            "rules[0] (c).purpose",
        ),
        ("name: x\nrules:\n  - {id: a, type: stock, colour: red}\n", "colour"),
        ("name: x\nrules: [\n", "not valid YAML"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_invalid_policies_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as caught:
        parse_policy(text.encode())
    assert message in str(caught.value)


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_age_gate_constrains_minors_and_unknown_ages(engine: PolicyEngine) -> None:
    assert engine.item_constraints(facts(age=15)).max_min_age == 15
    assert engine.item_constraints(facts(age=None)).max_min_age == 0
    # From the highest minimum age an item can carry on, the rule removes nothing: no filter.
    assert engine.item_constraints(facts(age=20)).max_min_age == 20
    assert engine.item_constraints(facts(age=21)).max_min_age is None
    assert engine.item_constraints(facts(age=64)).max_min_age is None
    adult = engine.item_constraints(facts(age=40))
    assert "age-gate" not in [f.rule_id for f in adult.firings]
    verdict = engine.check_items(
        [item("wine", min_age=18), item("juice", category="food")], facts(age=15)
    )
    assert [i.item_id for i in verdict.kept] == ["juice"]
    assert verdict.removed["wine"][0].rule_id == "age-gate"


def test_stock_and_suppression_remove_items(engine: PolicyEngine) -> None:
    bought = (("old", NOW - timedelta(days=200)), ("recent", NOW - timedelta(days=3)))
    f = facts(purchases=Purchases.of(bought))
    verdict = engine.check_items([item("empty", stock=0), item("recent"), item("old")], f)
    assert [i.item_id for i in verdict.kept] == ["old"]
    assert {r: [x.rule_id for x in v] for r, v in verdict.removed.items()} == {
        "empty": ["in-stock"],
        "recent": ["no-rebuy-90d"],
    }
    assert engine.item_constraints(f).exclude_ids == ("recent",)


def test_personalization_needs_consent(engine: PolicyEngine) -> None:
    allowed, fired = engine.personalization(facts(consent={Purpose.personalization: False}))
    assert not allowed and fired[0].rule_id == "consent-personalization"
    assert engine.personalization(facts())[0]


@pytest.mark.parametrize(
    "the_offer, the_facts, rule",
    [
        (offer(min_age=18), facts(age=17), "age-gate"),
        (
            offer(valid_until=NOW - timedelta(days=1), valid_from=NOW - timedelta(days=5)),
            facts(),
            "offer-validity",
        ),
        (offer(channels=["app"]), facts(), "offer-channel"),
        (offer(categories=["books"]), facts(), "offer-relevance"),
        (
            offer(),
            facts(channel=Channel.email, consent={**ALL_CONSENT, Purpose.email: False}),
            "consent-email",
        ),
    ],
)
def test_each_offer_rule_removes(
    engine: PolicyEngine, the_offer: Offer, the_facts: Facts, rule: str
) -> None:
    verdict = engine.check_offers([the_offer], the_facts, item_categories=["wine"], exposures={})
    assert verdict.kept == []
    assert rule in [f.rule_id for f in verdict.removed[the_offer.offer_id]]


def test_frequency_cap_counts_exposures(engine: PolicyEngine) -> None:
    fresh = engine.check_offers([offer()], facts(), item_categories=["wine"], exposures={})
    assert [o.offer_id for o in fresh.kept] == ["o1"]
    capped = engine.check_offers(
        [offer()],
        facts(),
        item_categories=["wine"],
        exposures={"same-offer-once-24h": Exposure({"o1": 1}, {"web": 1})},
    )
    assert capped.removed["o1"][0].rule_id == "same-offer-once-24h"


def test_offer_facts_follow_the_offers_passed() -> None:
    """The engine keeps what it derived from the last offer list: a reloaded list, or the same
    list changed in place, is checked afresh; validity edges hold across time zones."""
    engine = PolicyEngine(load_policy(DEMO_POLICY))
    offers = [offer("o1"), offer("o2")]
    check = lambda: engine.check_offers(offers, facts(), item_categories=["wine"], exposures={})  # noqa: E731
    assert [o.offer_id for o in check().kept] == ["o1", "o2"]
    offers[1] = offer("o2", valid_until=NOW - timedelta(microseconds=1))  # changed in place
    assert [o.offer_id for o in check().kept] == ["o1"]
    offers = [offer("o1", channels=["app"]), *offers[1:]]  # a reload: another list
    assert check().kept == [] and check().removed["o1"][0].rule_id == "offer-channel"
    # The edges of the window count as inside it, whatever zone `now` is written in.
    plus_two = timezone(timedelta(hours=2))
    edge = [
        offer("o3", valid_from=NOW.astimezone(plus_two), valid_until=NOW + timedelta(days=1)),
        offer("o4", valid_from=NOW - timedelta(days=1), valid_until=NOW),
    ]
    local = Facts(age=30, consent=ALL_CONSENT, channel=Channel.web, now=NOW.astimezone(plus_two))
    assert engine.check_offers(edge, local, item_categories=["wine"], exposures={}).kept == edge


@pytest.mark.parametrize(
    ("valid_from", "valid_until"),
    [
        ("2026-11-01T00:00:00", "2026-12-01T00:00:00Z"),
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00"),
        ("2026-11-01T00:00:00", "2026-12-01T00:00:00"),
    ],
)
def test_an_offer_window_without_a_timezone_is_refused_naming_the_field(
    tmp_path: Path, valid_from: str, valid_until: str
) -> None:
    # A naive instant passed validation and then failed every decision, compared with the
    # service's aware clock (or, beside an aware one, broke validation with a TypeError).
    row = offer().model_dump(mode="json") | {"valid_from": valid_from, "valid_until": valid_until}
    naive = [name for name in ("valid_from", "valid_until") if not row[name].endswith("Z")]
    with pytest.raises(ValidationError) as caught:
        Offer.model_validate(row)
    assert [error["loc"] for error in caught.value.errors()] == [(name,) for name in naive]
    assert all("timezone" in error["msg"] for error in caught.value.errors())
    # From a seed folder's offers.jsonl: the file and line, then the field.
    path = tmp_path / "offers.jsonl"
    path.write_text(json.dumps(offer("o0").model_dump(mode="json")) + "\n" + json.dumps(row))
    with pytest.raises(ValueError, match=rf"(?s)offers.jsonl:2: .*{naive[0]}.*timezone"):
        list(read_jsonl(path, Offer))


@settings(max_examples=200, deadline=None)
@given(
    age=st.one_of(st.none(), st.integers(0, 90)),
    min_age=st.sampled_from([0, 16, 18, 21]),
    channel=st.sampled_from(list(Channel)),
    offer_channels=st.lists(st.sampled_from(list(Channel)), min_size=1, unique=True),
    consent=st.fixed_dictionaries({p: st.booleans() for p in Purpose}),
    shown=st.integers(0, 3),
    days=st.integers(-30, 30),
)
def test_kept_offers_satisfy_every_rule(
    age, min_age, channel, offer_channels, consent, shown, days
) -> None:
    engine = _ENGINE
    the_offer = offer(
        min_age=min_age,
        channels=offer_channels,
        valid_from=NOW + timedelta(days=days),
        valid_until=NOW + timedelta(days=days + 5),
    )
    the_facts = facts(age=age, channel=channel, consent=consent)
    verdict = engine.check_offers(
        [the_offer],
        the_facts,
        item_categories=["wine"],
        exposures={"same-offer-once-24h": Exposure({"o1": shown}, {"web": shown})},
    )
    if verdict.kept:
        assert min_age == 0 or (age is not None and age >= min_age)
        assert channel in offer_channels
        assert the_offer.valid_from <= NOW <= the_offer.valid_until
        assert shown == 0
        if channel is Channel.email:
            assert consent[Purpose.email]
        if channel is Channel.push:
            assert consent[Purpose.push]


CAPS = parse_policy(
    b"name: caps\nrules:\n"
    b"  - {id: per-offer, type: frequency_cap, max: 2, window_hours: 24}\n"
    b"  - {id: per-channel, type: frequency_cap, max: 3, window_hours: 12, scope: channel}\n"
    b"  - {id: overall, type: frequency_cap, max: 5, window_hours: 168, scope: overall}\n"
)


@pytest.mark.parametrize(
    ("exposures", "expected"),
    [
        ({}, {}),
        (
            {"per-offer": Exposure({"o1": 2, "o2": 1}, {"web": 3})},
            {"o1": [("per-offer", "this offer shown 2× in the last 24 h (cap 2)")]},
        ),
        (
            {"per-channel": Exposure({"o1": 3}, {"web": 3, "app": 9})},
            {
                o: [("per-channel", "offers shown on web 3× in the last 12 h (cap 3)")]
                for o in ("o1", "o2", "o3")
            },
        ),
        ({"per-channel": Exposure({"o1": 9}, {"web": 2, "app": 9})}, {}),
        (
            {
                "per-offer": Exposure({"o3": 4}, {"web": 4}),
                "overall": Exposure({"o3": 4}, {"web": 4, "app": 2}),
            },
            {
                "o1": [("overall", "offers shown 6× in the last 168 h (cap 5)")],
                "o2": [("overall", "offers shown 6× in the last 168 h (cap 5)")],
                "o3": [
                    ("per-offer", "this offer shown 4× in the last 24 h (cap 2)"),
                    ("overall", "offers shown 6× in the last 168 h (cap 5)"),
                ],
            },
        ),
    ],
)
def test_each_cap_removes_the_offers_it_counts_with_its_count(
    exposures: dict[str, Exposure], expected: dict[str, list[tuple[str, str]]]
) -> None:
    """A cap per offer counts each offer's showings; a cap per channel or overall counts the
    same showings for every offer and removes every one of them, each named in its own firing."""
    offers = [offer("o1"), offer("o2"), offer("o3")]
    verdict = PolicyEngine(CAPS).check_offers(
        offers, facts(), item_categories=["wine"], exposures=exposures
    )
    removed = {
        offer_id: [(f.rule_id, f.reason) for f in firings]
        for offer_id, firings in verdict.removed.items()
    }
    assert removed == expected
    assert all(f.targets == (o,) for o, firings in verdict.removed.items() for f in firings)
    assert [o.offer_id for o in verdict.kept] == [
        o for o in ("o1", "o2", "o3") if o not in expected
    ]


LOCALES = parse_policy(b"name: locales\nrules:\n  - {id: offer-locale, type: offer_locale}\n")


@settings(max_examples=200, deadline=None)
@given(
    locale=st.one_of(st.none(), st.sampled_from(["en", "en-GB", "en-US", "de", "de-AT", "fr"])),
    wanted=st.lists(st.sampled_from(["en", "en-GB", "en-US", "de", "de-AT", "fr"]), unique=True),
)
def test_an_offer_fits_its_locales_or_their_language(locale: str | None, wanted: list[str]) -> None:
    verdict = PolicyEngine(LOCALES).check_offers(
        [offer(locales=wanted)], facts(locale=locale), item_categories=["wine"], exposures={}
    )
    language = locale.split("-")[0] if locale else None
    fits = not wanted or any(w == locale or ("-" not in w and w == language) for w in wanted)
    assert bool(verdict.kept) == fits
    if not fits:
        [firing] = verdict.removed["o1"]
        shown = locale or "an unknown locale"
        assert firing.reason == f"made for {', '.join(wanted)}, not {shown}"
