"""The subject's own values (names, email, phone, address, birth date) and their recognizer.

Whatever the NER model sees, the person a request is about is found in any text: their values are
matched per call by folded word tokens and by phone digits, and score 1.0. Their given name has its
own entity type (`FIRST_NAME`) so that a greeting may reveal it alone.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import phonenumbers
from presidio_analyzer import EntityRecognizer, RecognizerResult

from policies.pii.entities import EMAIL_ADDRESS, FIRST_NAME, PERSON, PERSONAL_DETAIL, PHONE_NUMBER
from policies.pii.folding import fold, normalise_text
from policies.pii.phones import (
    PHONE_CANDIDATE,
    PHONE_REGIONS,
    national_digits,
    parse_phone,
    phone_matches,
)
from store.schemas import Profile

__all__ = ["NO_KNOWN_VALUES", "KnownValues", "known_value_recognizers"]

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Values are compared word token by word token, so the separators between them do not matter.
_TOKEN = re.compile(r"\w+")
_MAX_GAP = 3  # characters between the words of one value: ". ", "@", ", ", "/"


@dataclass(frozen=True)
class KnownValues:
    """The subject's own values, found in any text whatever the NER model sees.

    `first_names` are the given names among `names`; they get the entity type `FIRST_NAME` so
    that a greeting can reveal them alone. Every other name is a `PERSON`.
    """

    names: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    other: tuple[str, ...] = ()
    first_names: tuple[str, ...] = ()

    @classmethod
    def from_profile(cls, profile: Profile) -> KnownValues:
        """The values of a profile: names, email, phone, street, postcode and birth date."""
        address = profile.address
        return _known_values(
            profile.first_name,
            profile.last_name,
            str(profile.email),
            profile.phone,
            profile.birth_date,
            (address.street, address.postcode, address.country) if address else None,
            profile.locale,
        )

    @classmethod
    def empty(cls) -> KnownValues:
        return NO_KNOWN_VALUES

    def __repr__(self) -> str:
        # The values are PII: a repr in a traceback or a log line shows only how many there are.
        counts = ", ".join(
            f"{field}={len(getattr(self, field))}"
            for field in ("names", "emails", "phones", "other", "first_names")
        )
        return f"KnownValues({counts})"


NO_KNOWN_VALUES = KnownValues()


class _KnownValuesRecognizer(EntityRecognizer):
    """The subject's own values, found by comparing word tokens, scoring 1.0.

    Written by hand rather than with Presidio's `PatternRecognizer`: a pattern per person must be
    compiled per request (about 14 ms with the `regex` module, 6 ms with `re`, for one profile's
    names, email, phone, address and a dozen date spellings), while comparing case- and
    accent-folded word tokens needs only patterns compiled once at import. Tokens also make the
    separators irrelevant: "14/03/1990", "14.03.1990" and "14 03 1990" are one value, and so are
    "O'Brien" and "O’Brien". Phone numbers are compared by digits (see `phone_matches`).
    """

    def __init__(self, known: KnownValues) -> None:
        first_keys = {fold(name) for name in known.first_names}
        values = [(FIRST_NAME, name) for name in known.first_names]
        values += [(PERSON, name) for name in known.names if fold(name) not in first_keys]
        values += [(EMAIL_ADDRESS, email) for email in known.emails]
        values += [(PERSONAL_DETAIL, value) for value in known.other]
        sequences: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        # The dozen spellings of a birth date share a few tokens: each is folded once (about
        # 90 folds become 15, two thirds of building the recognizer, once per person).
        folded: dict[str, str] = {}
        for entity_type, value in values:
            tokens = tuple(
                folded.get(t) or folded.setdefault(t, fold(t)) for t in _TOKEN.findall(value)
            )
            if (
                tokens and len("".join(tokens)) >= 2
            ):  # A lone initial would match every such letter.
                sequences.setdefault(tokens[0], []).append((tokens, entity_type))
        for found in sequences.values():
            found.sort(key=lambda entry: -len(entry[0]))  # The fuller value wins at one position.
        self._sequences = sequences
        self._phones = [n for n in (national_digits(p) for p in known.phones) if n]
        types = {entity_type for entity_type, _ in values} | (
            {PHONE_NUMBER} if self._phones else set()
        )
        super().__init__(supported_entities=sorted(types), name="KnownValuesRecognizer")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: object = None
    ) -> list[RecognizerResult]:
        results = []
        if self._sequences:
            tokens = [(fold(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text)]
            for i, (token, _, _) in enumerate(tokens):
                for sequence, entity_type in self._sequences.get(token, ()):
                    window = tokens[i : i + len(sequence)]
                    if (
                        len(window) == len(sequence)
                        and all(w[0] == t for w, t in zip(window, sequence, strict=True))
                        and all(b[1] - a[2] <= _MAX_GAP for a, b in itertools.pairwise(window))
                    ):
                        results.append(
                            RecognizerResult(entity_type, window[0][1], window[-1][2], 1.0)
                        )
                        break
        for match in PHONE_CANDIDATE.finditer(text) if self._phones else ():
            if phone_matches(match.group("number"), self._phones):
                results.append(RecognizerResult(PHONE_NUMBER, match.start(), match.end(), 1.0))
        return results


@lru_cache(maxsize=256)
def _known_values(
    first_name: str,
    last_name: str,
    email: str,
    phone: str | None,
    birth_date: date | None,
    address: tuple[str, str, str] | None,
    locale: str,
) -> KnownValues:
    """The known values of a profile's values (those `from_profile` reads), remembered while the
    person is among the last 256 seen, as their recognizer is (`known_value_recognizers`): a
    person comes back with every decision, and parsing their phone number and spelling their
    birth date cost more than the rest of opening a decision's guard. The key is the values
    themselves, so a changed profile is another key and nothing here can go stale."""
    first, last = first_name.strip(), last_name.strip()
    region = address[2] if address else locale.partition("-")[2]
    phones: tuple[str, ...] = ()
    if phone:
        number = parse_phone(phone, regions=(region, *PHONE_REGIONS))
        e164 = phonenumbers.PhoneNumberFormat.E164
        phones = (phonenumbers.format_number(number, e164) if number else phone,)
    other: list[str] = []
    if address:
        other += [address[0], address[1]]
    if birth_date:
        other += _date_forms(birth_date)
    return KnownValues(
        names=_unique((first, last, f"{first} {last}")),
        emails=(email,),
        phones=phones,
        other=_unique(other),
        first_names=_unique((first,)),
    )


@lru_cache(maxsize=256)
def known_value_recognizers(known: KnownValues) -> list[EntityRecognizer]:
    """One recognizer per person, reused while the person is among the last 256 seen.

    The cache holds the values only in this process's memory, like the request's vault.
    """
    if not (known.names or known.emails or known.phones or known.other):
        return []
    return [_KnownValuesRecognizer(known)]


def _date_forms(day: date) -> list[str]:
    """The ways a birth date is commonly written: ISO, day-first, month-first, month names."""
    forms = {day.isoformat()}
    for d in {str(day.day), f"{day.day:02d}"}:
        for m in {str(day.month), f"{day.month:02d}"}:
            for sep in "/.-":
                forms.add(f"{d}{sep}{m}{sep}{day.year}")
                forms.add(f"{m}{sep}{d}{sep}{day.year}")
    suffix = (
        "th" if day.day in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(day.day % 10, "th")
    )
    for month in {_MONTHS[day.month - 1], _MONTHS[day.month - 1][:3]}:
        for d in (str(day.day), f"{day.day}{suffix}"):
            forms.update({f"{month} {d}, {day.year}", f"{month} {d} {day.year}"})
            forms.add(f"{d} {month} {day.year}")
    return sorted(forms)


def _unique(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        value = value.strip()
        if value and normalise_text(value) not in seen:
            seen[normalise_text(value)] = value
    return tuple(seen.values())
