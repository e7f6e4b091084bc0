"""The PII guard without NER: other people's names, the pattern fixes, the labeled set, the `pii` kind."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evals.base import SuiteError
from evals.pii.datasets import LEGACY_TYPES as TYPES
from evals.pii.datasets import load_labeled
from evals.runner import run_suite
from policies.pii import KnownValues, PIIGuard
from policies.pii.name_lists import NAMES_DIR, name_lists

ROOT = Path(__file__).resolve().parents[1]
LABELED = ROOT / "data" / "pii" / "labeled.jsonl"
ABSENT_MODEL = "attune_test_absent_model"
TITLES = ("Mr", "Mrs", "Ms", "Miss", "Dr")


def _no_lookups(*args: object, **kwargs: object) -> object:
    raise RuntimeError(f"the PII guard tried a DNS lookup: {args[:2]!r}")


@pytest.fixture(scope="module", autouse=True)
def _no_dns() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _no_lookups)
        yield


@pytest.fixture(scope="module")
def guard(pii_guard: PIIGuard, tmp_path_factory: pytest.TempPathFactory) -> PIIGuard:
    """The session's guard when it runs without NER (as here); a blank one when it has NER."""
    if pii_guard.mode == "blank":
        return pii_guard
    return PIIGuard(spacy_model=ABSENT_MODEL, fallback_models=())


def _people(guard: PIIGuard, text: str) -> list[str]:
    return [text[f.start : f.end] for f in guard.find(text) if f.entity_type == "PERSON"]


@pytest.mark.parametrize(
    "text, names",
    [
        ("Hi, I'm John Smith", ["John Smith"]),
        ("I met Bob Jones in Paris", ["Bob Jones"]),
        ("Will Smith called", ["Will Smith"]),
        ("Dear Mrs. O'Brien, your order has shipped.", ["O'Brien"]),
        ("my name is sarah jones", ["sarah jones"]),
        ("Thanks Grace!", ["Grace"]),
        ("Kind regards,\nWill", ["Will"]),
        ("It's for my wife Hope.", ["Hope"]),
        ("Ask for Mr Oluwaseun Adeyemi at reception.", ["Oluwaseun Adeyemi"]),
        ("The recipient is Siobhan O'Connor.", ["Siobhan O'Connor"]),
        ("I bought the Apple Watch for Sophie.", ["Sophie"]),
        ("Jean-Pierre Dubois will collect it.", ["Jean-Pierre Dubois"]),
        ("Speak to J. Smith in accounts.", ["J. Smith"]),
        ("Sarah's order is late.", ["Sarah"]),
        ("Order placed by Patrick Chelangat on Monday", ["Patrick Chelangat"]),
        ("Could Anna and Tom both get a discount?", ["Anna", "Tom"]),
        ("CALL JANE SMITH NOW", ["JANE SMITH"]),
    ],
)
def test_names_with_evidence_are_found(guard: PIIGuard, text: str, names: list[str]) -> None:
    assert _people(guard, text) == names


@pytest.mark.parametrize(
    "text",
    [
        "I will go in May",
        "Will this arrive before Friday?",
        "May I change the colour after ordering?",
        "Hello May I ask a question?",
        "Mark as delivered but nothing arrived.",
        "Bill me later option isn't showing.",
        "Grace period for returns is 30 days, right?",
        "Hope you can help.",
        "I'm looking for a Rose Gold watch strap.",
        "Earl Grey tea, 250g, is it loose leaf?",
        "The Nike Air Max 90 in Jade Green.",
        "St Patrick's Day sale!",
        "Is the Valentine's Day box in stock?",
        "Calvin Klein boxers, size M",
        "Marks & Spencer gift card",
        "Please ship to Victoria Street, London.",
        "The IBAN GB82 WEST 1234 5698 7654 32 is mine.",
        "Dear Sir or Madam,",
        "Hi Team, where is my refund?",
        "I'm Happy with it",
        # A capital at a sentence start is no evidence: the name stays without other clues.
        "Janet met the Smithsons",
    ],
)
def test_common_words_and_capitals_alone_are_not_names(guard: PIIGuard, text: str) -> None:
    assert _people(guard, text) == []


def test_words_inside_emails_and_placeholders_are_left_to_them(guard: PIIGuard) -> None:
    text = "write to Sarah.Jones@example.com"

    assert [(f.entity_type, f.start) for f in guard.find(text)] == [("EMAIL_ADDRESS", 9)]
    assert guard.find("<PERSON_1> said hi to <PERSON_2>") == []


def test_the_subjects_own_name_keeps_its_type(guard: PIIGuard) -> None:
    jane = KnownValues(names=("Jane", "Smith", "Jane Smith"), first_names=("Jane",))

    found = guard.find("Hi Jane, Bob Jones asked about you.", jane)

    assert [(f.entity_type, f.score) for f in found] == [("FIRST_NAME", 1.0), ("PERSON", 0.75)]


def test_the_name_lists_are_loaded_once_per_process() -> None:
    assert name_lists(NAMES_DIR.resolve()) is name_lists(NAMES_DIR.resolve())


def test_missing_name_lists_say_how_to_rebuild_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data/names/build\.py"):
        name_lists(tmp_path)


# The guard's pattern fixes: gaps that the labeled set showed in Presidio's recognizers.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("card 2720 9923 4567 8901", [("CREDIT_CARD", "2720 9923 4567 8901")]),
        ("iban gb82 west 1234 5698 7654 32 thanks", [("IBAN_CODE", "gb82 west 1234 5698 7654 32")]),
        ("Order 02489629 never came", []),
        ("my number is 02489629", [("PHONE_NUMBER", "02489629")]),
        ("call 0049 176 6329535", [("PHONE_NUMBER", "0049 176 6329535")]),
    ],
)
def test_pattern_fixes(guard: PIIGuard, text: str, expected: list[tuple[str, str]]) -> None:
    assert [(f.entity_type, text[f.start : f.end]) for f in guard.find(text)] == expected


def test_a_known_phone_with_an_extension_is_caught_whole(guard: PIIGuard) -> None:
    known = KnownValues(phones=("+16796156685",))
    text = "call 001-679-615-6685x9660 today"

    found = guard.find(text, known)

    assert [(f.entity_type, text[f.start : f.end]) for f in found] == [
        ("PHONE_NUMBER", "001-679-615-6685x9660")
    ]


def test_the_labeled_set_is_well_formed() -> None:
    examples = load_labeled(LABELED)

    assert len(examples) >= 600
    parts = {example.part for example in examples}
    assert parts == {"dev", "heldout", "heldout-unseen-names"}
    for part in ("dev", "heldout"):
        types = {s.type for e in examples if e.part == part for s in e.entities}
        assert types == set(TYPES), part
    assert sum(not e.entities for e in examples) >= 100  # hard negatives
    for example in examples:
        for span in example.entities:
            value = example.text[span.start : span.end]
            assert value == value.strip() and value, (example.text, span)
            if span.type == "PERSON":
                assert value.split()[0] not in TITLES, example.text


def test_a_malformed_labeled_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"text": "Hi Ann", "entities": [{"start": 3, "end": 6, "type": "PERSON"}]}\n'
        '{"text": "Hi", "entities": [{"start": 0, "end": 9, "type": "PERSON"}]}\n'
    )

    with pytest.raises(SuiteError, match=r"bad\.jsonl:2: span 0-9 is outside the text"):
        load_labeled(path)


def _suite(tmp_path: Path, systems: list[dict[str, object]]) -> Path:
    labeled = [
        {
            "text": "Hi, I'm Anna Schmidt, call +44 20 7946 0958.",
            "entities": [
                {"start": 8, "end": 20, "type": "PERSON"},
                {"start": 27, "end": 43, "type": "PHONE_NUMBER"},
            ],
        },
        {
            "text": "Mail bob@example.org about card 4111 1111 1111 1111.",
            "entities": [
                {"start": 5, "end": 20, "type": "EMAIL_ADDRESS"},
                {"start": 32, "end": 51, "type": "CREDIT_CARD"},
            ],
        },
        {
            "text": "IBAN DE89370400440532013000 for my sister Grace",
            "entities": [
                {"start": 5, "end": 27, "type": "IBAN_CODE"},
                {"start": 42, "end": 47, "type": "PERSON"},
            ],
        },
        {"text": "Will the Rose Gold strap arrive in May?", "entities": []},
        {"text": "We are in Florence next week.", "entities": []},
    ]
    (tmp_path / "labeled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labeled))
    users = (ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines()[:2]
    (tmp_path / "users.jsonl").write_text("\n".join(users) + "\n")
    suite = {
        "name": "pii-slice",
        "kind": "pii",
        "datasets": [
            {"name": "slice", "path": "labeled.jsonl"},
            {"name": "users", "path": "users.jsonl", "params": {"kind": "known-values"}},
        ],
        "systems": systems,
        "thresholds": [
            {"metric": "recall", "system": "guard/PERSON", "dataset": "slice", "min": 1.0},
            {
                "metric": "known_values_recall",
                "system": "guard/KNOWN_VALUES",
                "dataset": "users",
                "min": 1.0,
            },
        ],
    }
    path = tmp_path / "pii.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_the_pii_kind_end_to_end(tmp_path: Path) -> None:
    systems = [
        {"name": "guard", "type": "guard", "params": {"spacy_model": ABSENT_MODEL, "ner": False}}
    ]

    report = run_suite(_suite(tmp_path, systems), tmp_path / "report", show_progress=False)

    assert report.passed, report.summary
    rows = {(row.dataset, row.system): row.metrics for row in report.rows}
    assert {system for dataset, system in rows if dataset == "slice"} == {
        *(f"guard/{t}" for t in TYPES),
        "guard/ALL",
    }
    for entity_type in TYPES:
        assert rows["slice", f"guard/{entity_type}"]["recall"] == 1.0, entity_type
    # "Florence" is a listed given name standing alone: the one false positive here.
    assert rows["slice", "guard/PERSON"]["precision"] == pytest.approx(2 / 3)
    assert rows["slice", "guard/ALL"]["redacted_recall"] == 1.0
    assert rows["users", "guard/KNOWN_VALUES"]["known_values_recall"] == 1.0
    assert rows["users", "guard/KNOWN_VALUES"]["checks"] >= 2 * 8
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["details"]["systems"]["guard"]["mode"] == "blank"
    assert (tmp_path / "report" / "recall-by-type.png").is_file()


def test_the_pii_kind_refuses_an_unknown_system_type(tmp_path: Path) -> None:
    path = _suite(tmp_path, [{"name": "guard", "type": "regex"}])

    with pytest.raises(SuiteError, match=r"systems\[0\]\.type: unknown type 'regex'; use one of"):
        run_suite(path, tmp_path / "report", show_progress=False)


def test_the_labeled_set_is_what_its_seeded_script_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("pii_build", LABELED.parent / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, build)  # dataclasses look their module up
    spec.loader.exec_module(build)

    rows = build.build()

    assert [json.loads(line) for line in LABELED.read_text().splitlines()] == rows


def test_a_full_name_typed_in_lower_case_is_found(pii_guard) -> None:
    # Found by the safety suite: "beverley bartlett" reached the model before this rule.
    assert pii_guard.contains_pii("please send it to beverley bartlett tomorrow") == ["PERSON"]
    assert pii_guard.contains_pii("i will go in may and mark it as done") == []
