"""Decisioning you can trust: the full rule set through the real offer tools, holdouts, shadow
mode, priorities, the decision trace — and a property test that no chosen offer is ever ineligible."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from agents.decide.record import offer_trace
from agents.decide.run import DecideRequest, decide
from agents.services import Services
from policies.engine import Exposure, Facts, PolicyEngine
from policies.rules import parse_policy
from store.bandit import ArmState
from store.catalog import bump_catalog_version, upsert_offers
from store.decisions import log_decision
from store.models import CatalogOffer
from store.schemas import Channel, Offer, Purpose, UserRecord
from store.users import Subject, upsert_user
from tools.bandit import ThompsonSampling
from tools.context import RunContext
from tools.offers import eligible_offers, select_offer
from tools.schemas import EligibleOffersInput, SelectOfferInput

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
ALL = dict.fromkeys(Purpose, True)


def policy_text(**extra: object) -> dict:
    return {
        "name": "test",
        "rules": [
            {"id": "age-gate", "type": "age_gate"},
            {
                "id": "consent-email",
                "type": "consent",
                "purpose": "email",
                "guards": "offers",
                "channels": ["email"],
            },
            {"id": "offer-validity", "type": "offer_validity"},
            {"id": "offer-channel", "type": "offer_channel"},
            {"id": "offer-locale", "type": "offer_locale"},
            {"id": "offer-relevance", "type": "offer_relevance"},
            {"id": "cap-offer", "type": "frequency_cap", "max": 1, "window_hours": 24},
            *extra.pop("rules", []),
        ],
        **extra,
    }


def engine(**extra: object) -> PolicyEngine:
    return PolicyEngine(parse_policy(yaml.safe_dump(policy_text(**extra)).encode()))


def offer(offer_id: str, **kw: object) -> Offer:
    base = {
        "title": f"Deal {offer_id}",
        "terms": "Ten percent off.",
        "discount_percent": 10,
        "categories": ["wine"],
        "channels": ["web", "email"],
        "valid_from": NOW - timedelta(days=10),
        "valid_until": NOW + timedelta(days=10),
    }
    return Offer.model_validate({"offer_id": offer_id, **base, **kw})


def facts(**kw: object) -> Facts:
    base = {"age": 30, "consent": ALL, "channel": Channel.web, "now": NOW, "locale": "en-GB"}
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


# --- the engine, rule by rule -------------------------------------------------------------


def test_locale_rule() -> None:
    offers = [
        offer("any"),
        offer("en", locales=["en"]),
        offer("uk", locales=["en-GB"]),
        offer("de", locales=["de"]),
    ]
    kept = engine().check_offers(
        offers, facts(locale="en-US"), item_categories=["wine"], exposures={}
    )
    assert [o.offer_id for o in kept.kept] == ["any", "en"]
    assert kept.removed["uk"][0].rule_id == "offer-locale"
    unknown = engine().check_offers(
        offers, facts(locale=None), item_categories=["wine"], exposures={}
    )
    assert [o.offer_id for o in unknown.kept] == ["any"]


@pytest.mark.parametrize(
    ("scope", "exposure", "kept"),
    [
        ("offer", Exposure({"a": 1}, {"web": 1}), ["b"]),
        ("channel", Exposure({"a": 1}, {"web": 1}), []),
        ("channel", Exposure({"a": 1}, {"email": 1}), ["a", "b"]),
        ("overall", Exposure({"a": 1}, {"email": 1}), []),
    ],
)
def test_frequency_cap_scopes(scope: str, exposure: Exposure, kept: list[str]) -> None:
    rules = [{"id": "cap-x", "type": "frequency_cap", "max": 1, "window_hours": 6, "scope": scope}]
    policy = PolicyEngine(parse_policy(yaml.safe_dump({"name": "t", "rules": rules}).encode()))
    verdict = policy.check_offers(
        [offer("a"), offer("b")], facts(), item_categories=["wine"], exposures={"cap-x": exposure}
    )
    assert [o.offer_id for o in verdict.kept] == kept


def test_holdout_membership_is_stable_and_about_its_share() -> None:
    policy = engine(rules=[{"id": "ctl", "type": "holdout", "share": 0.2, "channels": ["web"]}])
    keys = [f"user:u{n}" for n in range(5000)]
    held = [k for k in keys if policy.holdout(k, Channel.web)]
    assert 0.18 < len(held) / len(keys) < 0.22
    assert held == [k for k in keys if policy.holdout(k, Channel.web)]
    assert not any(policy.holdout(k, Channel.email) for k in held)


def test_priority_weights_the_choice_by_margin() -> None:
    arms = {"cheap": ArmState("cheap", 50, 950, 1000), "rich": ArmState("rich", 40, 960, 1000)}
    plain = ThompsonSampling(np.random.default_rng(0)).choose(arms)
    weighted = ThompsonSampling(np.random.default_rng(0)).choose(
        arms, weights={"cheap": 1.0, "rich": 2.0}
    )
    assert plain.probabilities["cheap"] > 0.8
    assert weighted.probabilities["rich"] > 0.95 and weighted.offer_id == "rich"
    assert sum(weighted.probabilities.values()) == pytest.approx(1.0, abs=0.01)


def test_per_offer_priors_from_the_policy_file() -> None:
    policy = engine(
        bandit_prior={"alpha": 1, "beta": 19}, bandit_priors={"new": {"alpha": 5, "beta": 5}}
    )
    assert policy.policy.prior("new") == (5, 5)
    assert policy.policy.prior("other") == (1, 19)


# --- the tools on a small store -------------------------------------------------------------

OFFERS = [
    offer("wine-web", channels=["web"]),
    offer("wine-any"),
    offer("wine-adult", min_age=18),
    offer("wine-en", locales=["en"]),
    offer("wine-de", locales=["de"]),
    offer("wine-old", valid_until=NOW - timedelta(days=1)),
    offer("shoes", categories=["shoes"]),
    offer("wine-email", channels=["email"]),
]


@pytest.fixture(scope="module")
def world(demo_services: Services) -> Iterator[Services]:
    """The demo services with this module's offers added for the module's duration."""
    with demo_services.db.session() as session:
        upsert_offers(session, OFFERS)
    demo_services.tools.offers.invalidate()
    yield demo_services
    with demo_services.db.session() as session:
        session.execute(
            delete(CatalogOffer).where(CatalogOffer.offer_id.in_([o.offer_id for o in OFFERS]))
        )
        # A writer bumps the catalog's version with its change, so caches keyed by it reload.
        bump_catalog_version(session)
    demo_services.tools.offers.invalidate()


def run_for(
    services: Services,
    *,
    policy: PolicyEngine,
    age: int | None,
    locale: str,
    consent: dict,
    channel: Channel,
) -> RunContext:
    user = f"prop_{uuid.uuid4().hex[:10]}"
    birth = None if age is None else f"{2026 - age - 1}-12-31"  # age on NOW (23 Nov 2026)
    with services.db.session() as session:
        upsert_user(
            session,
            UserRecord.model_validate(
                {
                    "user_id": user,
                    "profile": {
                        "first_name": "Ann",
                        "last_name": "Lee",
                        "email": f"{user}@example.org",
                        "birth_date": birth,
                        "locale": locale,
                    },
                    "consent": consent,
                }
            ),
        )
    deps = replace(services.tools, policy=policy, bandit=ThompsonSampling(np.random.default_rng(1)))
    return RunContext(deps=deps, subject=Subject(user, None), channel=channel, now=NOW)


def eligible_by_hand(
    o: Offer, *, age: int | None, locale: str, consent: dict, channel: Channel, shown: set[str]
) -> bool:
    """What the test policy means, written without the engine."""
    language = locale.split("-")[0]
    return (
        (o.min_age == 0 or (age is not None and age >= o.min_age))
        and channel in o.channels
        and o.valid_from <= NOW <= o.valid_until
        and (not o.locales or locale in o.locales or language in o.locales)
        and "wine" in o.categories
        and not (channel is Channel.email and not consent.get(Purpose.email, False))
        and o.offer_id not in shown
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    age=st.one_of(st.none(), st.integers(10, 70)),
    locale=st.sampled_from(["en-GB", "en-US", "de-DE", "fr-FR"]),
    email_consent=st.booleans(),
    channel=st.sampled_from([Channel.web, Channel.email, Channel.app]),
    shown=st.sets(st.sampled_from([o.offer_id for o in OFFERS]), max_size=3),
    priority=st.booleans(),
)
def test_no_chosen_offer_is_ever_ineligible(
    world: Services, age, locale, email_consent, channel, shown, priority
) -> None:
    policy = engine(rules=[{"id": "prio", "type": "priority"}] if priority else [])
    consent = {**ALL, Purpose.email: email_consent}
    ctx = run_for(world, policy=policy, age=age, locale=locale, consent=consent, channel=channel)
    with world.db.session() as session:
        for offer_id in shown:
            log_decision(
                session,
                decision_id=uuid.uuid4().hex,
                subject_key=ctx.subject.key,
                user_id=ctx.subject.user_id,
                channel=channel.value,
                segment=channel.value,
                offer_id=offer_id,
                created_at=NOW - timedelta(hours=2),
                record={},
            )
    ctx.memo["categories"] = {"itm_x": "wine"}
    found = eligible_offers(ctx, EligibleOffersInput(item_ids=["itm_x"]))
    mine = [o for o in OFFERS if o.offer_id in found.candidates]
    expected = {
        o.offer_id
        for o in mine
        if eligible_by_hand(
            o, age=age, locale=locale, consent=consent, channel=channel, shown=shown
        )
    }
    ours = {o.offer_id for o in found.offers if o.offer_id in {x.offer_id for x in OFFERS}}
    assert ours == expected
    if found.offers:
        choice = select_offer(ctx, SelectOfferInput(offer_ids=[o.offer_id for o in found.offers]))
        assert choice.offer_id in {o.offer_id for o in found.offers}
        assert choice.offer_id not in {o.offer_id for o in OFFERS} or choice.offer_id in expected
        trace = offer_trace(found, choice)
        assert trace["chosen"] == choice.offer_id
        assert set(trace["capped"]) == {o for o in shown if o in trace["eligible"]}
        assert [r["offer_id"] for r in trace["ranked"]] and trace["ranked"][0][
            "probability"
        ] >= trace["ranked"][-1]["probability"]


# --- through the decision graph -------------------------------------------------------------


def test_holdout_people_get_the_baseline_and_say_so(world: Services, tmp_path: Path) -> None:
    policy = PolicyEngine(
        parse_policy(
            (
                Path(world.settings.policy_path).read_text()
                + "\n  - id: control-web\n    type: holdout\n    share: 0.999\n    channels: [web]\n"
            ).encode()
        )
    )
    services = replace(world, policy=policy, tools=replace(world.tools, policy=policy))
    decision = decide(services, DecideRequest(channel=Channel.web, user_id="u_0020"))
    assert decision.items and all(c.parts.popularity is not None for c in decision.items)
    rules = [r.rule_id for r in decision.explanation.rules_fired]
    assert "control-web" in rules
    if decision.choice is not None:
        assert decision.choice.experiment == "control-web"
        assert decision.choice.propensity == pytest.approx(
            1 / len(decision.choice.probabilities), abs=1e-3
        )
        assert "control group" in decision.explanation.summary


def test_shadow_policy_is_logged_and_never_shown(world: Services) -> None:
    strict = PolicyEngine(
        parse_policy(
            yaml.safe_dump(
                policy_text(
                    rules=[
                        {
                            "id": "no-offers-at-all",
                            "type": "frequency_cap",
                            "max": 1,
                            "window_hours": 1,
                            "scope": "overall",
                        }
                    ]
                )
            ).encode()
        )
    )
    services = replace(world, tools=replace(world.tools, shadow_policy=strict))
    decision = decide(services, DecideRequest(channel=Channel.web, user_id="u_0021"))
    with services.db.session() as session:
        from store.decisions import get_decision

        record = get_decision(session, decision.decision_id).record
    shadow = record["shadow"]
    assert shadow["policy_version"] == strict.version
    assert set(shadow["eligible"]) <= set(record["trace"]["candidates"])
    assert decision.offer is None or decision.offer.offer_id == record["choice"]["offer_id"]
    assert shadow["agrees"] == (shadow["chosen"] == (record["choice"] or {}).get("offer_id"))


def test_the_trace_of_a_real_decision(world: Services) -> None:
    decision = decide(world, DecideRequest(channel=Channel.web, user_id="u_0022"))
    with world.db.session() as session:
        from store.decisions import get_decision

        trace = get_decision(session, decision.decision_id).record["trace"]
    assert len(trace["candidates"]) >= 27
    assert set(trace["eligible"]) <= set(trace["candidates"])
    assert set(trace["not_eligible"]).isdisjoint(trace["eligible"])
    if decision.choice is not None:
        assert trace["chosen"] == decision.choice.offer_id
        assert decision.choice.offer_id in [r["offer_id"] for r in trace["ranked"]]


def test_the_app_surface_learns_with_the_contextual_bandit(world: Services) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from store.models import LinearObservation

    with TestClient(create_app(services=lambda: world)) as client:
        decision = client.post("/v1/decide", json={"user_id": "u_0023", "channel": "app"}).json()
        offer = decision["offer"]
        assert offer is not None and offer["policy"].startswith("lints@")
        assert "contextual bandit" in decision["explanation"]["summary"]
        assert sum(
            c["probability"] or 0 for c in _trace(world, decision["decision_id"])["ranked"]
        ) == pytest.approx(1.0, abs=0.01)
        reward = client.post(
            "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 1}
        )
        assert reward.status_code == 200, reward.text
        assert reward.json()["policy"] == offer["policy"] and reward.json()["observations"] >= 1
        with world.db.session() as session:
            from sqlalchemy import select

            row = session.scalars(
                select(LinearObservation).where(
                    LinearObservation.decision_id == decision["decision_id"]
                )
            ).one()
        assert row.reward == 1.0 and len(row.x) > 27
        again = client.post(
            "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 1}
        )
        assert again.status_code == 409


def _trace(services: Services, decision_id: str) -> dict:
    from store.decisions import get_decision

    with services.db.session() as session:
        return get_decision(session, decision_id).record["trace"]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("channel", {"web"}),
        ("global", {"all"}),
        ("lifecycle", {"new", "active", "lapsing", "lapsed"}),
    ],
)
def test_thompson_segment_comes_from_the_policy(world: Services, how: str, expected: set) -> None:
    policy = engine(bandit_segment=how)
    ctx = run_for(world, policy=policy, age=30, locale="en-GB", consent=ALL, channel=Channel.web)
    choice = select_offer(ctx, SelectOfferInput(offer_ids=["wine-any", "wine-web"]))
    assert choice.segment in expected
