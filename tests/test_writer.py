"""The offline writer's copy is grounded, and the output guard catches copy that is not."""

from __future__ import annotations

import pytest

from agents.writing.writer import Brief, BriefItem, BriefOffer, OfflineWriter
from policies.output import check_copy
from policies.pii import KnownValues
from policies.rules import ContentRules
from store.schemas import Channel, Profile

ITEMS = [
    BriefItem(
        item_id="i1",
        title="Trail Runner GTX",
        category="running_shoes",
        price=129.0,
        currency="EUR",
    ),
    BriefItem(
        item_id="i2", title="Merino Socks", category="running_shoes", price=14.5, currency="EUR"
    ),
    BriefItem(
        item_id="i3", title="Headlamp 300", category="outdoor_gear", price=39.99, currency="EUR"
    ),
]
OFFER = BriefOffer(
    offer_id="o1",
    title="Autumn Run",
    terms="15% off all running gear until 31 Dec 2026. One use per customer.",
    discount_percent=15,
    valid_until="2026-12-31",
)
RULES = ContentRules(
    max_length={Channel.push: 120, Channel.web: 600}, banned_phrases=("guaranteed",)
)
PROFILE = Profile(
    first_name="Jane", last_name="Smith", email="jane.smith@example.com", phone="+44 20 7946 0958"
)


def brief(
    channel: Channel = Channel.web, max_length: int = 600, offer: BriefOffer | None = OFFER
) -> Brief:
    return Brief(
        channel=channel,
        greeting_name="<FIRST_NAME_1>",
        items=ITEMS,
        offer=offer,
        max_length=max_length,
    )


def check(
    text: str, item_ids: list[str], offer_id: str | None, guard, channel: Channel = Channel.web
):
    return check_copy(
        text,
        mentioned_item_ids=item_ids,
        mentioned_offer_id=offer_id,
        approved_prices={i.item_id: i.price for i in ITEMS},
        offer_id="o1",
        discount_percent=15,
        offer_text=f"{OFFER.title} {OFFER.terms}",
        channel=channel,
        rules=RULES,
        guard=guard,
        known=KnownValues.from_profile(PROFILE),
    )


def test_offline_copy_is_grounded_and_passes_the_guard(pii_guard) -> None:
    draft = OfflineWriter().write(brief())
    assert draft.item_ids == ["i1", "i2", "i3"] and draft.offer_id == "o1"
    assert "€129.00" in draft.text and "€14.50" in draft.text and "15% off" in draft.text
    assert draft.text.startswith("Hi <FIRST_NAME_1>,")
    assert check(draft.text, draft.item_ids, draft.offer_id, pii_guard).ok


def test_offline_copy_is_deterministic() -> None:
    assert OfflineWriter().write(brief()) == OfflineWriter().write(brief())


def test_offline_copy_drops_items_to_fit_the_channel(pii_guard) -> None:
    draft = OfflineWriter().write(brief(Channel.push, max_length=80, offer=None))
    assert len(draft.text) <= 80
    assert 0 < len(draft.item_ids) < 3
    assert check(draft.text, draft.item_ids, None, pii_guard, Channel.push).ok


@pytest.mark.parametrize(
    "text, item_ids, offer_id, failing",
    [
        ("Trail Runner GTX for €99.00!", ["i1"], None, "grounding-prices"),
        ("Trail Runner GTX, now 50% off", ["i1"], "o1", "grounding-discounts"),
        ("Try the Mystery Box", ["i9"], None, "grounding-ids"),
        ("Use offer o2", [], "o2", "grounding-ids"),
        ("Guaranteed the best Trail Runner GTX", ["i1"], None, "content-banned-phrase"),
        ("Hi Jane Smith, enjoy the Trail Runner GTX", ["i1"], None, "pii-leak"),
        ("Write to jane.smith@example.com", [], None, "pii-leak"),
        ("x" * 601, [], None, "content-length"),
    ],
)
def test_guard_rejects(
    text: str, item_ids: list[str], offer_id: str | None, failing: str, pii_guard
) -> None:
    verdict = check(text, item_ids, offer_id, pii_guard)
    assert failing in [p.check for p in verdict.problems]


def test_guard_accepts_discounted_prices_and_placeholders(pii_guard) -> None:
    text = "Hi <FIRST_NAME_1>, Trail Runner GTX is €109.65 with 15% off (was €129.00)."
    assert check(text, ["i1"], "o1", pii_guard).ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("Autumn Run ends 31 Dec 2026.", True),
        ("Autumn Run ends 31 December.", True),
        ("Autumn Run ends on 2026-12-31.", True),
        ("Autumn Run ends December 31, 2026.", True),
        ("Autumn Run ends 15 Jan 2027.", False),
        ("Autumn Run ends 31 Dec 2027.", False),
        ("Hurry, only until 01/02/2027!", False),
    ],
)
def test_dates_must_be_the_offers(text: str, ok: bool, pii_guard) -> None:
    verdict = check(text, [], None, pii_guard)
    assert verdict.ok is ok
    if not ok:
        assert verdict.problems[0].check == "grounding-dates"


def test_required_disclaimers_are_written_and_checked(pii_guard) -> None:
    rules = ContentRules.model_validate(
        {
            "required_disclaimers": [
                {"id": "unsub", "text": "Unsubscribe any time.", "channels": ["email"]},
                {"id": "terms", "text": "Terms apply.", "when": "offer"},
            ]
        }
    )
    assert rules.disclaimers(Channel.email, with_offer=False) == ["Unsubscribe any time."]
    assert rules.disclaimers(Channel.web, with_offer=True) == ["Terms apply."]
    needed = rules.disclaimers(Channel.email, with_offer=True)
    draft = OfflineWriter().write(brief().model_copy(update={"disclaimers": needed}))
    assert all(d in draft.text for d in needed)

    def verdict(text: str):
        return check_copy(
            text,
            mentioned_item_ids=[],
            mentioned_offer_id=None,
            approved_prices={},
            offer_id=None,
            discount_percent=None,
            channel=Channel.email,
            rules=rules,
            guard=pii_guard,
            known=KnownValues.empty(),
            disclaimers=needed,
        )

    assert verdict(" ".join(needed)).ok
    assert [p.check for p in verdict("Unsubscribe any time.").problems] == ["content-disclaimer"]


def test_a_name_like_brand_in_an_approved_title_is_not_pii(pii_guard) -> None:
    titled = "Florence Linen Dress"
    verdict = check_copy(
        f"Picked for you: {titled} (€40.00). Ask Jane Smith about it.",
        mentioned_item_ids=["i9"],
        mentioned_offer_id=None,
        approved_prices={"i9": 40.0},
        offer_id=None,
        discount_percent=None,
        channel=Channel.web,
        rules=RULES,
        guard=pii_guard,
        known=KnownValues.from_profile(PROFILE),
        approved_text=[titled],
    )
    # The brand is quoted from the catalog; the person's own name is still caught.
    assert [p.check for p in verdict.problems] == ["pii-leak"]
    clean = check_copy(
        f"Picked for you: {titled} (€40.00).",
        mentioned_item_ids=["i9"],
        mentioned_offer_id=None,
        approved_prices={"i9": 40.0},
        offer_id=None,
        discount_percent=None,
        channel=Channel.web,
        rules=RULES,
        guard=pii_guard,
        known=KnownValues.empty(),
        approved_text=[titled],
    )
    assert clean.ok


CATALOG = {
    "o1": "Autumn Run: 15% off",
    "off_002": "Wine Cellar Selection: 29% off",
    "off_003": "Gift Days",
}


@pytest.mark.parametrize(
    ("text", "check_id"),
    [
        ("Take 90 percent off today!", "grounding-discounts"),
        ("Use code SAVE90 at checkout.", "grounding-codes"),
        ("Enjoy free shipping on all orders.", "grounding-promises"),
        ("Everything half price this week.", "grounding-promises"),
        ("Our Wine Cellar Selection is waiting for you.", "grounding-ids"),
        ("Ask for offer off_002 in store.", "grounding-ids"),
        ("Ask for offer off_099 in store.", "grounding-ids"),
    ],
)
def test_copy_cannot_promise_what_the_offer_does_not(text: str, check_id: str, pii_guard) -> None:
    verdict = check_copy(
        text,
        mentioned_item_ids=[],
        mentioned_offer_id=None,
        approved_prices={},
        offer_id="o1",
        discount_percent=15,
        offer_text=f"{OFFER.title}\n{OFFER.terms}",
        channel=Channel.web,
        rules=RULES,
        guard=pii_guard,
        known=KnownValues.empty(),
        catalog_offers=CATALOG,
    )
    assert check_id in [p.check for p in verdict.problems], verdict.summary()


def test_the_approved_offer_may_be_named_and_quoted(pii_guard) -> None:
    verdict = check_copy(
        "Autumn Run: 15 percent off all running gear until 31 Dec 2026.",
        mentioned_item_ids=[],
        mentioned_offer_id="o1",
        approved_prices={},
        offer_id="o1",
        discount_percent=15,
        offer_text=f"{OFFER.title}\n{OFFER.terms}",
        channel=Channel.web,
        rules=RULES,
        guard=pii_guard,
        known=KnownValues.empty(),
        catalog_offers=CATALOG,
    )
    assert verdict.ok, verdict.summary()
