"""The PII check of copy: remembered for the offline writer's template, in full for a model's."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from agents.writing.writer import Brief, BriefItem, BriefOffer, OfflineWriter
from policies.output import CopyVerdict, check_copy
from policies.pii import KnownValues, PIIGuard
from policies.pii.known import NO_KNOWN_VALUES
from policies.pii.lru import DigestLRU
from policies.rules import ContentRules
from store.schemas import Channel, Profile

ROOT = Path(__file__).resolve().parents[1]
RULES = ContentRules(max_length={Channel.web: 600})
JANE = KnownValues.from_profile(
    Profile(first_name="Jane", last_name="Smith", email="jane.smith@example.com")
)
OFFER = BriefOffer(
    offer_id="o1",
    title="Autumn Run: 15% off",
    terms="15% off all running gear until 31 Dec 2026. One use per customer.",
    discount_percent=15,
    valid_until="2026-12-31",
)


def item(n: int, title: str | None = None, price: float = 20.0) -> BriefItem:
    return BriefItem(
        item_id=f"i{n}",
        title=title or f"Trail Shoe Model {n}",
        category="running_shoes",
        price=price,
        currency="EUR",
    )


def brief(items: list[BriefItem], offer: BriefOffer | None = OFFER, **update: object) -> Brief:
    return Brief(
        channel=Channel.web,
        greeting_name="<FIRST_NAME_1>",
        items=items,
        offer=offer,
        max_length=600,
    ).model_copy(update=update)


def verdict(
    text: str, of: Brief, guard: object, *, trusted: bool, known: KnownValues = JANE
) -> CopyVerdict:
    """The decision graph's check of a draft written for the brief `of`."""
    offer = of.offer
    return check_copy(
        text,
        mentioned_item_ids=[i.item_id for i in of.items],
        mentioned_offer_id=offer.offer_id if offer else None,
        approved_prices={i.item_id: i.price for i in of.items},
        offer_id=offer.offer_id if offer else None,
        discount_percent=offer.discount_percent if offer else None,
        offer_text=f"{offer.title}\n{offer.terms}\n{offer.valid_until}" if offer else "",
        channel=Channel.web,
        rules=RULES,
        guard=guard,  # type: ignore[arg-type]
        known=known,
        disclaimers=of.disclaimers,
        approved_text=[i.title for i in of.items],
        trusted=trusted,
    )


def leaked(result: CopyVerdict) -> str:
    return "; ".join(p.detail for p in result.problems if p.check == "pii-leak")


@pytest.mark.parametrize("trusted", [True, False])
@pytest.mark.parametrize(
    ("written", "kind"),
    [
        (brief([item(1, "Mug, order from jo.bloggs@example.org"), item(2)]), "EMAIL_ADDRESS"),
        (brief([item(1, "Gift card 4111 1111 1111 1111"), item(2)]), "CREDIT_CARD"),
        (
            brief(
                [item(1)],
                offer=OFFER.model_copy(
                    update={"terms": "Pay to GB82 WEST 1234 5698 7654 32 before 31 Dec 2026."}
                ),
            ),
            "IBAN_CODE",
        ),
        (brief([item(1)], disclaimers=["Questions? help.desk@example.org"]), "EMAIL_ADDRESS"),
    ],
)
def test_pii_in_approved_text_fails_the_check_on_either_path(
    pii_guard: PIIGuard, written: Brief, kind: str, trusted: bool
) -> None:
    draft = OfflineWriter().write(written)
    for _ in range(2):  # the second time from the remembered findings
        result = verdict(draft.text, written, pii_guard, trusted=trusted)
        assert kind in leaked(result), result.summary()


@pytest.mark.parametrize("trusted", [True, False])
def test_name_like_titles_and_the_template_pass_and_the_subjects_name_does_not(
    pii_guard: PIIGuard, trusted: bool
) -> None:
    written = brief([item(1, "Florence Linen Dress"), item(2, "Thomas and Friends Engine")])
    draft = OfflineWriter().write(written)
    assert verdict(draft.text, written, pii_guard, trusted=trusted).ok
    # The subject's own values are matched anew on every check, remembered findings or not.
    raw = draft.text.replace("<FIRST_NAME_1>", "Jane")
    # Without them, "Hi Jane" is still a name after a greeting.
    for known, expected in ((JANE, "FIRST_NAME"), (KnownValues.empty(), "PERSON")):
        result = verdict(raw, written, pii_guard, trusted=trusted, known=known)
        assert leaked(result) == f"raw PII of type {expected}"


def test_the_offline_template_is_screened_once_and_new_titles_once_each() -> None:
    guard = PIIGuard(spacy_model="absent_model", fallback_models=())
    writer = OfflineWriter()
    first = brief([item(1, price=20.0), item(2, price=35.5), item(5, price=3.0)])
    assert verdict(writer.write(first).text, first, guard, trusted=True).ok
    misses = guard.screened.misses
    # Another decision: other items at other prices, one title seen before, the same template.
    second = brief([item(2, price=35.5), item(3, price=99.99), item(4, price=7.25)])
    assert verdict(writer.write(second).text, second, guard, trusted=True).ok
    assert guard.screened.misses - misses == 2  # the two new titles; not the template's words


class CountingGuard:
    """A PII guard that counts which of its checks the output guard calls, and on what."""

    def __init__(self, guard: PIIGuard) -> None:
        self._guard = guard
        self.full: list[str] = []
        self.screened: list[str] = []

    def contains_pii(self, text: str, known: KnownValues, *, statistical: bool) -> list[str]:
        self.full.append(text)
        return self._guard.contains_pii(text, known, statistical=statistical)

    def screen(self, text: str, known: KnownValues = NO_KNOWN_VALUES) -> list[str]:
        self.screened.append(text)
        return self._guard.screen(text, known)


def test_copy_a_model_wrote_is_scanned_in_full_every_time(pii_guard: PIIGuard) -> None:
    written = brief([item(1), item(2)])
    words = "Ask our stylist Bob Jones, he knows the Trail Shoe Model 1 (€20.00) best."
    counting = CountingGuard(pii_guard)
    for _ in range(2):
        result = verdict(words, written, counting, trusted=False)
        assert leaked(result) == "raw PII of type PERSON"
    # The model's own words go to the full check each time, never to the remembered one.
    assert len(counting.full) == 2 and all("Bob Jones" in text for text in counting.full)
    assert not any("Bob Jones" in text for text in counting.screened)
    # The same words as trusted copy would be remembered: the flag is what keeps them out.
    assert leaked(verdict(words, written, counting, trusted=True)) == "raw PII of type PERSON"
    assert any("Bob Jones" in text for text in counting.screened)


def _messages() -> list[str]:
    lines = (ROOT / "data" / "pii" / "labeled.jsonl").read_text(encoding="utf-8").splitlines()
    intl = (ROOT / "data" / "pii" / "intl.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in itertools.chain(lines[::25], intl[::20])]


def test_screen_finds_what_the_full_check_without_ner_finds(pii_guard: PIIGuard) -> None:
    jane_texts = ["Hi Jane, mail jane.smith@example.com", "Smith & Co jane smith"]
    for text in [*_messages(), *jane_texts]:
        for known in (KnownValues.empty(), JANE):
            expected = pii_guard.contains_pii(text, known, statistical=False)
            assert pii_guard.screen(text, known) == expected, text
            assert pii_guard.screen(text, known) == expected, text  # remembered


def test_the_lru_is_bounded_and_keeps_digests_not_text() -> None:
    lru: DigestLRU[int] = DigestLRU(2)
    for n, text in enumerate(["jane.smith@example.com", "b", "c"]):
        lru.put(text, n)
    assert len(lru) == 2 and lru.get("jane.smith@example.com") is None
    assert lru.get("b") == 1 and lru.get("c") == 2
    assert all(isinstance(key, bytes) and len(key) == 16 for key in lru._values)
    with pytest.raises(ValueError, match="size"):
        DigestLRU(0)


def test_approved_text_is_screened_once_per_guard_and_new_pii_is_still_caught(
    pii_guard: PIIGuard,
) -> None:
    """What a quoted title or offer line holds of `QUOTED_PII` is remembered per guard; what the
    copy adds to it (a name, a phone number that no approved text holds) is checked every time."""
    written = brief([item(1), item(2, "Mug, order from jo.bloggs@example.org")])
    text = OfflineWriter().write(written).text
    counting = CountingGuard(pii_guard)
    for _ in range(3):
        assert leaked(verdict(text, written, counting, trusted=True)) == (
            "raw PII of type EMAIL_ADDRESS"
        )
    titles = [i.title for i in written.items]
    assert [t for t in counting.screened if t in titles] == titles  # once each, not thrice
    # Another guard (another policy's recognizers) answers for itself.
    other = CountingGuard(pii_guard)
    verdict(text, written, other, trusted=True)
    assert [t for t in other.screened if t in titles] == titles
    # With every approved text remembered, what the copy adds is still found, on either path.
    clean = brief([item(1), item(2)])
    copy = OfflineWriter().write(clean).text
    for trusted in (True, False):
        assert verdict(copy, clean, counting, trusted=trusted).ok
        for added, kind in (
            (" Ask Bob Jones in store.", "PERSON"),
            (" Call us on +44 20 7946 0018.", "PHONE_NUMBER"),
            (" Write to bob.jones@example.net.", "EMAIL_ADDRESS"),
        ):
            result = verdict(copy + added, clean, counting, trusted=trusted)
            assert kind in leaked(result), (added, result.summary())


def test_approved_text_without_an_at_sign_or_a_digit_is_not_screened(pii_guard: PIIGuard) -> None:
    """An email address needs an "@", a card number and an IBAN need digits: a title with neither
    (most titles) holds none of `QUOTED_PII` and is not screened for them; one with either still is."""
    clean = "Merino Wool Hiking Socks"
    written = brief([item(1, clean), item(2, "Mug, order from jo.bloggs@example.org"), item(3)])
    counting = CountingGuard(pii_guard)
    result = verdict(OfflineWriter().write(written).text, written, counting, trusted=True)
    assert leaked(result) == "raw PII of type EMAIL_ADDRESS"
    titles = [i.title for i in written.items]
    assert [t for t in counting.screened if t in titles] == titles[1:]
    assert pii_guard.screen(clean) == []  # what the screen would have found
