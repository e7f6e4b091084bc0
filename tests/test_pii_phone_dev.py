"""The phone recognizer on its development set (`evals/pii/phone_dev.py`): every region's example
numbers in the forms people write them, in sentences, next to numbers that are no phones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evals.pii import phone_dev
from policies.pii import PIIGuard
from policies.pii.entities import ENTITY_TYPES


@pytest.fixture(scope="module")
def guard() -> PIIGuard:
    """Every type on, without NER: phone findings do not depend on it (NER gives way to
    patterns), and the blank pipeline spares the test a model."""
    return PIIGuard(spacy_model="attune_test_absent_model", fallback_models=(), redact=ENTITY_TYPES)


@pytest.fixture(scope="module")
def measured(guard: PIIGuard) -> dict[str, Any]:
    def find(text: str) -> list[tuple[str, int, int]]:
        return [(f.entity_type, f.start, f.end) for f in guard.find(text)]

    return phone_dev.measure(find, phone_dev.load())


def test_the_committed_set_is_the_seeded_build() -> None:
    # Rebuild with `python -m evals.pii.phone_dev build` after changing the generator.
    built = [json.loads(json.dumps(line, ensure_ascii=False)) for line in phone_dev.build()]
    assert phone_dev.load() == built
    assert phone_dev.build(seed=phone_dev.SEED + 1) != built


def test_every_phone_of_the_set_is_a_valid_number_as_written() -> None:
    lines = phone_dev.load()
    phones = [(line, p) for line in lines for p in line.get("phones", ())]
    assert len(phones) > 5000
    regions = {p["region"] for _, p in phones}
    assert len(regions) == len(phone_dev.phonenumbers.SUPPORTED_REGIONS) + 1  # and "001"
    forms = {p["form"] for _, p in phones}
    assert forms == set(phone_dev.FORMS)
    assert {line["negative"] for line in lines if "negative" in line} == {
        kind for kind, _ in phone_dev.NEGATIVES
    }


def test_numbers_with_their_country_code_are_all_found(measured: dict[str, Any]) -> None:
    international = measured["groups"]["scope"]["international"]
    assert international["gold"] > 2900
    assert international["recall"] == 1.0
    assert international["covered"] == 1.0


def test_national_numbers_of_the_national_regions_are_found(measured: dict[str, Any]) -> None:
    # What is missed are the Dutch five-digit service numbers ("14 020"): the recognizer reads
    # runs of six digits or more.
    national = measured["groups"]["scope"]["national"]
    assert national["gold"] > 1000
    assert national["recall"] >= 0.99
    assert all(miss["region"] == "NL" and miss["type"] == "uan" for miss in measured["missed"])


def test_phone_findings_are_phones_and_cards_stay_cards(measured: dict[str, Any]) -> None:
    assert measured["predicted"] > 4500
    assert measured["precision"] >= 0.999
    assert sum(measured["false_positives"].values()) <= 1
    assert measured["card_recall"] == 1.0


@pytest.mark.parametrize(
    "text, phone",
    [
        # "ring" is also a German street type; a house number is never cut from a digit run.
        ("Please ring 07755 490315 after 6pm.", "07755 490315"),
        ("Please ring 612 34 56 78 tomorrow", "612 34 56 78"),
        # Four dotted groups above 255 are no IPv4 address.
        ("call 612.34.56.78", "612.34.56.78"),
        # An extension is no part of a card number.
        ("I'll be at (264) 461-2345 x12 all day", "(264) 461-2345 x12"),
        # "art" of Stuttgart is no label.
        ("Stuttgart 0711 1234567", "0711 1234567"),
    ],
)
def test_phones_the_old_recognizer_missed(guard: PIIGuard, text: str, phone: str) -> None:
    found = [(f.entity_type, text[f.start : f.end]) for f in guard.find(text)]
    assert [(kind, span) for kind, span in found if kind != "DATE_TIME"] == [
        ("PHONE_NUMBER", phone)
    ]


def test_two_numbers_of_two_regions_in_one_run_are_both_found(guard: PIIGuard) -> None:
    text = "Numbers: 800 212 3456 / (801) 234 567"
    assert [text[f.start : f.end] for f in guard.find(text)] == ["800 212 3456", "(801) 234 567"]


@pytest.mark.parametrize(
    "text",
    ["my order number is 918667905, where is it?", "Call me after 04.03.2025, the number is fine"],
)
def test_order_numbers_and_dates_after_a_phone_word_are_no_phones(
    guard: PIIGuard, text: str
) -> None:
    assert "PHONE_NUMBER" not in {f.entity_type for f in guard.find(text)}
