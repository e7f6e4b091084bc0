"""Recognizers that cannot match a text are not run: a type whose recognizers all need a digit (or
six, nine, ten or twelve of them), an IBAN's letters and check digits, an "@", a dot or a colon is
left out of Presidio's call on a text without them, and the findings stay those of running every
recognizer. Also the name recognizer's lookups and phonenumbers' patterns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from phonenumbers import re_util
from presidio_analyzer import RecognizerResult

from policies.pii import KnownValues, PIIGuard, Vault
from policies.pii import guard as guard_module
from policies.pii import patterns as patterns_module
from policies.pii.name_lists import NAMES_DIR, name_lists
from policies.pii.names import PersonNameRecognizer, _Context
from policies.pii.ner import NER_ENTITIES
from policies.pii.patterns import RegionPhoneRecognizer

ROOT = Path(__file__).resolve().parents[1]
LABELED = ROOT / "data" / "pii" / "labeled.jsonl"
INTL = ROOT / "data" / "pii" / "intl.jsonl"


def _messages() -> list[str]:
    texts = []
    for path in (LABELED, INTL):
        lines = path.read_text(encoding="utf-8").splitlines()
        texts += [json.loads(line)["text"] for line in lines if line.strip()]
    return texts


@pytest.fixture(scope="module")
def guard(pii_guard: PIIGuard) -> PIIGuard:
    return pii_guard


@pytest.fixture(scope="module")
def messages() -> list[str]:
    return _messages()


def _gated(guard: PIIGuard) -> dict[str, tuple[str, int]]:
    """Each gated entity type, the pattern its recognizers need and how many times."""
    return {
        entity: (needs.pattern.pattern, needs.count)
        for needs in guard_module._NEEDS
        for entity in needs.entities
    }


def test_gated_types_are_no_ner_types_and_their_recognizers_report_only_gated_types(
    guard: PIIGuard,
) -> None:
    gated = _gated(guard)
    assert not set(gated) & set(NER_ENTITIES)
    for analyzer in (guard._analyzer, guard._patterns):
        for recognizer in analyzer.registry.recognizers:
            kinds = set(recognizer.supported_entities)
            if kinds & set(gated):
                # One trigger per recognizer: skipping a type skips all it could report.
                assert len({gated[kind] for kind in kinds}) == 1, recognizer.name
                assert kinds <= set(gated), recognizer.name


def _strip(text: str, pattern: str, count: int = 1) -> str:
    """`text` with all but the first `count - 1` matches of `pattern` blanked out."""
    kept = 0

    def blank(match: re.Match[str]) -> str:
        nonlocal kept
        kept += 1
        return match.group() if kept < count else " "

    return re.sub(pattern, blank, text)


def test_a_skipped_recognizer_finds_nothing_in_texts_without_its_trigger(
    guard: PIIGuard, messages: list[str]
) -> None:
    """The premise, checked on every message with the trigger removed: no recognizer of a gated
    type reports anything (so leaving it out changes no finding)."""
    gated = _gated(guard)
    recognizers = [
        r for r in guard._analyzer.registry.recognizers if set(r.supported_entities) & set(gated)
    ]
    assert len(recognizers) >= 12
    for recognizer in recognizers:
        pattern, count = gated[recognizer.supported_entities[0]]
        for text in messages:
            # With as many matches as the gate allows but one: the digits a count gate lets
            # through stay where they were (a card number's first eleven, a phone's first five).
            stripped = _strip(text, pattern, count)
            found = recognizer.analyze(stripped, recognizer.supported_entities, None)
            assert not found, (recognizer.name, stripped)


def _counting(guard: PIIGuard, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls: dict[str, int] = {}
    for recognizer in guard._analyzer.registry.recognizers:
        original = recognizer.analyze

        def counted(*args: object, _name: str = recognizer.name, _original=original, **kw):  # type: ignore[no-untyped-def]
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kw)

        monkeypatch.setattr(recognizer, "analyze", counted)
    return calls


def test_recognizers_that_cannot_match_are_not_run(
    guard: PIIGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(guard, monkeypatch)
    guard.forget()
    guard.find("Thanks Anna, the blue one is lovely")
    for name in ("PhoneRecognizer", "CardRecognizer", "StreetAddressRecognizer", "AgeRecognizer"):
        assert name not in calls
    assert "EmailRecognizer" not in calls
    assert "UrlRecognizer" not in calls
    assert "IpRecognizer" not in calls
    assert calls.get(PersonNameRecognizer.NAME) == 1


def test_recognizers_that_need_more_digits_than_a_short_request_has_are_not_run(
    guard: PIIGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(guard, monkeypatch)
    guard.forget()
    assert guard.contains_pii("a lego set for my 8 year old nephew, 42 pieces") == ["AGE"]
    for name in ("PhoneRecognizer", "CardRecognizer", "UsSsnRecognizer", "NhsRecognizer"):
        assert name not in calls, name
    assert "IbanRecognizer" not in calls
    for name in ("StreetAddressRecognizer", "AgeRecognizer", "ZipCodeRecognizer"):
        assert calls.get(name) == 1, name


def test_entities_of_labels_the_guard_does_not_keep_are_dropped_without_a_warning(
    guard: PIIGuard, caplog: pytest.LogCaptureFixture
) -> None:
    """spaCy's CARDINAL, MONEY, PRODUCT... name no type the guard keeps: Presidio drops them from
    the artifacts instead of logging a warning per entity on every call."""
    if guard.degraded:
        pytest.skip("no NER model")
    ignored = guard._analyzer.nlp_engine.ner_model_configuration.labels_to_ignore
    assert {"CARDINAL", "MONEY"} <= set(ignored)
    assert not set(ignored) & {*NER_ENTITIES, "PER", "GPE", "LOC", "FAC", "NORP", "ORG", "DATE"}
    guard.forget()
    with caplog.at_level("WARNING"):
        found = guard.contains_pii("two lego sets for £40, 3 puzzles and Anna's 7 books")
    assert "PERSON" in found
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    "text, kind",
    [
        ("call me on 020 7946 0958 please", "PHONE_NUMBER"),
        ("my card 4111 1111 1111 1111 thanks", "CREDIT_CARD"),
        ("write to jane.doe@example.com", "EMAIL_ADDRESS"),
        ("it is 221B Baker Street", "STREET_ADDRESS"),
        ("the server 192.0.2.1 is down", "IP_ADDRESS"),
        ("my son is 7 years old", "AGE"),
        ("see shop-example.com for more", "URL"),
        ("SSN: 412-66-7890", "US_SSN"),
        ("NHS number 943 476 5919 please", "UK_NHS"),
        ("refund to gb82 west 1234 5698 7654 32 thanks", "IBAN_CODE"),
        ("licence MORGA657054SM9IJ", "DRIVER_LICENSE"),
        ("ring 0612373851", "PHONE_NUMBER"),
    ],
)
def test_a_skipped_recognizer_still_fires_when_its_trigger_is_present(
    guard: PIIGuard, text: str, kind: str
) -> None:
    guard.forget()
    assert kind in guard.contains_pii(text)
    assert kind in guard.screen(text + " ")


def test_findings_are_those_of_every_recognizer(
    guard: PIIGuard, messages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages with and without their digits, "@", dots and colons, short and joined: the
    findings and the pseudonymized text are those of a guard that runs every recognizer."""
    texts = messages[::47]
    texts += [re.sub(r"[\d@.:]", "", text) for text in messages[::97]]
    texts += [" ".join(texts[i : i + 6]) for i in range(0, 24, 6)]
    texts += _short_requests()
    known = KnownValues(names=("Ada Example",), first_names=("Ada",), phones=("+442079460000",))

    def outputs() -> list[object]:
        found = []
        for i, text in enumerate(texts):
            guard.forget()
            person = known if i % 2 else KnownValues()
            redacted = guard.pseudonymize(text, known=person, vault=Vault())
            found.append((redacted, guard.find(text, person, statistical=False)))
        return found

    gated = outputs()
    monkeypatch.setattr(PIIGuard, "_entities_in", lambda self, text, engine: self._asked[engine])
    guard.screened.clear()
    assert outputs() == gated
    guard.forget()


def _short_requests() -> list[str]:
    """Requests of three to ten words with numbers of every length around the count gates."""
    words = [
        "a",
        "gift",
        "for",
        "my",
        "dad",
        "who",
        "loves",
        "wine",
        "lego",
        "set",
        "size",
        "call",
        "ring",
        "card",
        "NHS",
        "ssn",
        "iban",
    ]
    numbers = [
        "8",
        "42",
        "2024",
        "12345",
        "123456",
        "020 7946",
        "020 7946 09",
        "0612373851",
        "201-741-5537",
        "412-66-7890",
        "536904399",
        "943 476 5919",
        "4111 1111 111",
        "4111 1111 1111",
        "4111 1111 1111 1111",
        "gb82 west 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "ab12",
    ]
    requests = []
    for i, number in enumerate(numbers):
        for j in range(3):
            chosen = [words[(i * 7 + j * 5 + k) % len(words)] for k in range(3 + (i + j) % 8)]
            chosen.insert((i + j) % len(chosen), number)
            requests.append(" ".join(chosen))
    return requests


def test_phrase_lookup_is_the_comparison_with_every_phrase(messages: list[str]) -> None:
    recognizer = PersonNameRecognizer(name_lists(NAMES_DIR.resolve()))
    levels = (_Context.STRONG, _Context.GREETING, _Context.MEDIUM)

    def by_comparison(text: str, words: list, i: int) -> _Context:  # type: ignore[type-arg]
        # The old rule, phrase by phrase, after the title and sentence-end checks.
        keys = [w.phrase_key for w in words[max(0, i - recognizer._longest_phrase) : i]]
        for level in levels:
            if any(tuple(keys[-len(p) :]) == p for p in recognizer.PHRASES[level]):
                return level
        return _Context.NONE

    checked = 0
    for text in messages[:400]:
        words = recognizer._words(text)
        for i in range(1, len(words)):
            gap = text[words[i - 1].end : words[i].start]
            if recognizer._is_title(words[i - 1]) or any(m in gap for m in ".!?"):
                continue
            expected = by_comparison(text, words, i)
            found = recognizer._context(text, words, i)
            if expected is _Context.GREETING and found is _Context.NONE:
                continue  # a capitalised greeting inside a sentence, cancelled after the match
            assert found == expected, (text, i)
            checked += expected is not _Context.NONE
    assert checked > 100


def test_not_names_are_marked_at_their_first_word_only() -> None:
    recognizer = PersonNameRecognizer(name_lists(NAMES_DIR.resolve()))
    phrase = sorted(p for p in recognizer._lists.not_names if len(p) == 2)[0]
    text = f"I bought {' '.join(w.title() for w in phrase)} today"
    words = recognizer._words(text)
    assert [w.embedded for w in words] == [False, False, True, True, False]
    assert recognizer._not_name_starts == {p[0] for p in recognizer._lists.not_names}


def test_phonenumbers_keeps_its_compiled_patterns() -> None:
    # The metadata's patterns of a dozen regions overflow `re`'s own cache.
    import policies.pii.patterns  # noqa: F401

    assert re_util._COMPILED_PATTERNS is not None
    assert re_util.re_compile(r"\d{3}") is re_util.re_compile(r"\d{3}")


def test_recognizer_results_keep_their_recognizer_name(guard: PIIGuard) -> None:
    guard.forget()
    results = guard._recognized("Thanks Anna, call 020 7946 0958", True)
    assert all(isinstance(r, RecognizerResult) for r in results)
    assert {r.recognition_metadata[RecognizerResult.RECOGNIZER_NAME_KEY] for r in results} >= {
        "PhoneRecognizer"
    }


def _phone(guard: PIIGuard) -> RegionPhoneRecognizer:
    (phone,) = [
        r for r in guard._analyzer.registry.recognizers if isinstance(r, RegionPhoneRecognizer)
    ]
    return phone


def test_digits_inside_an_iban_are_not_tried_as_phone_numbers(
    guard: PIIGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []
    matcher = patterns_module.PhoneNumberMatcher

    def counted(window: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        tried.append(window)
        return matcher(window, *args, **kwargs)

    monkeypatch.setattr(patterns_module, "PhoneNumberMatcher", counted)
    guard.forget()
    text = "refund to GB82 WEST 1234 5698 7654 32 or call 020 7946 0958"
    assert guard.contains_pii(text) == ["IBAN_CODE", "PHONE_NUMBER"]
    assert tried and all("32" not in window for window in tried)


def test_findings_are_those_of_a_phone_recognizer_that_tries_every_candidate(
    guard: PIIGuard, messages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message with an IBAN, alone and joined with others, and every twentieth message: the
    findings and the pseudonymized text are those of a phone recognizer without the IBAN's
    shadow."""
    with_iban = [text for text in messages if "IBAN_CODE" in guard.contains_pii(text)]
    assert len(with_iban) > 20
    texts = with_iban + messages[::20]
    texts += [" ".join(texts[i : i + 5]) for i in range(0, len(with_iban), 5)]

    def outputs() -> list[object]:
        found = []
        for text in texts:
            guard.forget()
            found.append((guard.pseudonymize(text, vault=Vault()), guard.find(text)))
        return found

    shadowed = outputs()
    monkeypatch.setattr(_phone(guard), "shadowing", None)
    assert outputs() == shadowed
    guard.forget()
