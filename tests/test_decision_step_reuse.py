"""What the decision's smaller steps derive once and reuse (issue 14): the subject's known values,
the firings that remove offers, the app surface's linear prior. Reused values are the values a
fresh derivation gives; the checks that skip scans find what a full scan finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import tools.contextual
from policies.engine import Facts, Firing, PolicyEngine, Verdict
from policies.output import _DATES, _date_mentions
from policies.pii import KnownValues
from policies.rules import load_policy
from store.db import Database
from store.schemas import Channel, Offer, Purpose
from tests.people import JANE
from tools.bandit_priors import bandit_priors
from tools.contextual import ContextualBandits

DEMO_POLICY = Path(__file__).parents[1] / "data" / "demo" / "policy.yaml"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_known_values_are_derived_once_per_profile_values() -> None:
    first = KnownValues.from_profile(JANE)

    # The same values, read again for the next decision: the same known values, not parsed again.
    assert KnownValues.from_profile(JANE.model_copy(deep=True)) is first
    moved = KnownValues.from_profile(JANE.model_copy(update={"phone": "020 7946 0958"}))
    assert moved.phones == ("+442079460958",) and first.phones == ("+447911123456",)
    renamed = KnownValues.from_profile(JANE.model_copy(update={"first_name": "Janet"}))
    assert renamed.first_names == ("Janet",) and renamed is not first


def _offer(offer_id: str, **kw: object) -> Offer:
    base: dict[str, object] = {
        "title": "Deal",
        "terms": "Ten percent off.",
        "discount_percent": 10,
        "categories": ["wine"],
        "channels": ["web"],
        "valid_from": NOW - timedelta(days=10),
        "valid_until": NOW + timedelta(days=10),
    }
    return Offer(offer_id=offer_id, **{**base, **kw})  # type: ignore[arg-type]


def test_an_offer_removed_again_for_the_same_reason_reuses_its_firing() -> None:
    engine = PolicyEngine(load_policy(DEMO_POLICY))
    offers = [_offer("o1", channels=["app"]), _offer("o2", categories=["books"]), _offer("o3")]
    facts = Facts(age=30, consent=dict.fromkeys(Purpose, True), channel=Channel.web, now=NOW)

    def check() -> Verdict[Offer]:
        return engine.check_offers(offers, facts, item_categories=["wine"], exposures={})

    first, again = check(), check()

    assert [o.offer_id for o in again.kept] == ["o3"]
    assert first.removed == again.removed
    assert all(
        a is b
        for offer_id, firings in first.removed.items()
        for a, b in zip(firings, again.removed[offer_id], strict=True)
    )
    assert again.removed["o1"] == [
        Firing("offer-channel", "removed", "not offered on web", ("o1",))
    ]
    # Another channel is another reason: a firing of its own.
    app = engine.check_offers(
        offers,
        Facts(age=30, consent=dict.fromkeys(Purpose, True), channel=Channel.app, now=NOW),
        item_categories=["wine"],
        exposures={},
    )
    assert app.removed["o2"][0].reason == "not offered on app"


def test_verdict_firings_merge_targets_in_order_with_the_last_reason() -> None:
    verdict: Verdict[Offer] = Verdict(
        kept=[],
        removed={
            "o1": [
                Firing("cap", "removed", "shown 1×", ("o1",)),
                Firing("age", "removed", "18", ("o1",)),
            ],
            "o2": [Firing("cap", "removed", "shown 2×", ("o2",))],
            "o3": [Firing("cap", "removed", "shown 3×", ("o3",))],
        },
    )

    assert verdict.firings == [
        Firing("cap", "removed", "shown 3×", ("o1", "o2", "o3")),
        Firing("age", "removed", "18", ("o1",)),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Ends 31 Dec 2027, or 2027-12-31, or 31/12/2027.",
        "Until DECEMBER 31st, 2027 and 1 ſept 2027",  # the long s is an s under re.I
        "Ends ſep 3 2027",
        "Oak-aged, no date here; 20% off €5.99",
        "12/31 is not a date without its year; 2027-1-1 is not ISO",
        "",
    ],
)
def test_dates_are_found_as_a_scan_of_every_pattern_finds_them(text: str) -> None:
    every = [m.group(0) for pattern, _ in _DATES for m in pattern.finditer(text)]

    assert [found for found, _ in _date_mentions(text)] == every
    assert _date_mentions(text, text.casefold()) == _date_mentions(text)


def test_the_linear_prior_is_derived_again_only_for_other_offers_or_priors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    derived = []

    def counted(*args: object, **kwargs: object) -> object:
        derived.append(args)
        return bandit_priors(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tools.contextual, "bandit_priors", counted)
    bandits = ContextualBandits(np.random.default_rng(1))
    db = Database(f"sqlite:///{tmp_path / 'attune.db'}")
    offers = [_offer("o1"), _offer("o2", categories=["books"])]
    user = {"channel": "app", "recency_days": 2.0, "frequency_30d": 3, "price_band": "low"}

    def choose(priors: dict[str, dict[str, float]], current: list[Offer]) -> str:
        with db.session() as session:
            _, choice = bandits.choose(
                session,
                "lints",
                user=user,
                eligible=current,
                all_offer_ids=[o.offer_id for o in current],
                priors=priors,
                default_prior=(1.0, 1.0),
                weights=None,
            )
        return choice.offer_id

    choose({}, offers)
    choose({}, offers)
    assert len(derived) == 1
    choose({"o1": {"alpha": 9.0, "beta": 1.0}}, offers)
    assert len(derived) == 2
    choose({}, [*offers, _offer("o3")])
    assert len(derived) == 3
