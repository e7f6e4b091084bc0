"""The `pii` suite's datasets: labeled messages, CoNLL posts, and a person's own values typed into
messages.

Datasets, told apart by their `params.kind`:

- `conll`: a CoNLL file of real posts, one token and its BIO tag per line
  (`../shared/data/ner/wnut17/wnut17train.conll`); `params.labels` maps its tags to the guard's
  types (`{person: PERSON, location: LOCATION}`), other tags are ignored. Tokens are joined by
  spaces. When the file is absent the dataset is skipped and the report says why.

- `labeled` (the default): a JSONL file of messages with their PII spans marked (the format of
  `data/pii/labeled.jsonl`: `{"text": ..., "entities": [{"start", "end", "type"}], "part": ...}`);
  `params.part` keeps only the lines of one part (`dev`, `heldout`, ...). The guard runs on each
  text without known values.
- `known-values`: a users file (`data/demo/users.jsonl`). Each person's own names, email and
  phone are written into short messages the way people type them (names in lower and upper
  case, the email in other case, the phone in other formats) and the guard runs with the
  person's `KnownValues`. A value counts as caught only when findings of its kind cover all of
  it; `known_values_recall` is the share caught and should be 1.0.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberFormat
from pydantic import ValidationError

from evals.base import (
    SuiteError,
)
from policies.pii.entities import ENTITY_TYPES
from policies.pii.phones import PHONE_REGIONS
from store.schemas import UserRecord

TYPES = ENTITY_TYPES
LEGACY_TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE")


NAME_TYPES = frozenset({"FIRST_NAME", "PERSON"})
KNOWN_TEMPLATES = {
    "name": (
        "hi it's {value}, where is my parcel?",
        "Please update the account of {value}.",
        "{value} here - order 4839201 never came",
        "signed: {value}",
    ),
    "email": ("my login is {value}", "Send it to {value} please", "{value}"),
    "phone": ("call me on {value}", "my number: {value}.", "{value} is my mobile"),
}
KNOWN_TYPES = {"name": NAME_TYPES, "email": {"EMAIL_ADDRESS"}, "phone": {"PHONE_NUMBER"}}


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str


@dataclass(frozen=True)
class Example:
    text: str
    entities: tuple[Span, ...]
    part: str = ""


def load_labeled(path: Path, part: str | None = None) -> list[Example]:
    """The examples of a labeled JSONL file (of one `part` if given), checked line by line.

    Raises:
        SuiteError: the file is missing, a line is not JSON, or a span is outside its text, has
            an unknown type or overlaps another span.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the labeled set: {error.strerror}") from error
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = _example(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            raise SuiteError(
                f"{path}:{number}: {error}; each line is "
                '{"text": str, "entities": [{"start": int, "end": int, "type": str}]}'
            ) from error
        if part is None or example.part == part:
            examples.append(example)
    if not examples:
        raise SuiteError(f"{path}: no examples" + (f" of part {part!r}" if part else ""))
    return examples


def known_value_messages(record: UserRecord, rng: random.Random) -> Iterator[tuple[str, str, Span]]:
    """Messages holding one of the person's own values each: (kind, text, the value's span)."""
    profile = record.profile
    first, last = profile.first_name, profile.last_name
    names = [
        first.lower(),
        first.upper(),
        last.lower(),
        last.upper(),
        f"{first} {last}".lower(),
        f"{first} {last}".upper(),
    ]
    email = str(profile.email)
    local, _, domain = email.partition("@")
    emails = [email.upper(), f"{local.title()}@{domain.title()}"]
    for kind, values in (("name", names), ("email", emails), ("phone", _phone_forms(record))):
        for value in values:
            template = rng.choice(KNOWN_TEMPLATES[kind])
            start = template.index("{value}")
            text = template.replace("{value}", value)
            yield kind, text, Span(start, start + len(value), kind)


def load_conll(path: Path, labels: dict[str, str]) -> list[Example]:
    """The posts of a CoNLL file (token, BIO tag per line; a blank line ends a post) as examples
    of the tags in `labels`, tokens joined by single spaces."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the CoNLL file: {error.strerror}") from error
    examples: list[Example] = []
    tokens: list[tuple[str, str]] = []
    for line in [*lines, ""]:
        if line.strip():
            token, _, tag = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
            tokens.append((token.strip(), tag.strip()))
            continue
        if not tokens:
            continue
        text, spans, open_span = "", [], None
        for token, tag in tokens:
            start = len(text) + (1 if text else 0)
            text = f"{text} {token}" if text else token
            prefix, _, label = tag.partition("-")
            kind = labels.get(label)
            if open_span and (prefix != "I" or kind != open_span[2]):
                spans.append(Span(*open_span))
                open_span = None
            if kind and prefix == "I" and open_span:
                open_span = (open_span[0], len(text), kind)
            elif kind and prefix in ("B", "I"):
                open_span = (start, len(text), kind)
        if open_span:
            spans.append(Span(*open_span))
        examples.append(Example(text=text, entities=tuple(spans), part=path.stem))
        tokens = []
    if not examples:
        raise SuiteError(f"{path}: no posts")
    return examples


def _phone_forms(record: UserRecord) -> list[str]:
    """The person's phone as people write it: national, international, E.164, digits only."""
    profile = record.profile
    if not profile.phone:
        return []
    region = profile.address.country if profile.address else profile.locale.partition("-")[2]
    for candidate_region in (region, *PHONE_REGIONS):
        try:
            number = phonenumbers.parse(profile.phone, candidate_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            break
    else:
        return [profile.phone]
    number.extension = None
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    significant = phonenumbers.national_significant_number(number)
    return [
        national,
        international,
        phonenumbers.format_number(number, PhoneNumberFormat.E164),
        "".join(c for c in national if c.isdigit()),
        f"00{number.country_code} {significant}",
        international.replace(" ", "-"),
    ]


def load_users(path: Path) -> list[UserRecord]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the users file: {error.strerror}") from error
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append(UserRecord.model_validate_json(line))
            except ValidationError as error:
                raise SuiteError(f"{path}:{number}: not a user record: {error}") from error
    return records


def _example(data: dict[str, Any]) -> Example:
    text = data["text"]
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    spans = []
    for entity in data["entities"]:
        span = Span(int(entity["start"]), int(entity["end"]), str(entity["type"]))
        if span.type not in TYPES:
            raise ValueError(f"entity type {span.type!r} is not one of {', '.join(TYPES)}")
        if not 0 <= span.start < span.end <= len(text):
            raise ValueError(f"span {span.start}-{span.end} is outside the text")
        spans.append(span)
    spans.sort(key=lambda s: s.start)
    for a, b in itertools.pairwise(spans):
        if b.start < a.end:
            raise ValueError(f"spans {a.start}-{a.end} and {b.start}-{b.end} overlap")
    return Example(text=text, entities=tuple(spans), part=str(data.get("part", "")))
