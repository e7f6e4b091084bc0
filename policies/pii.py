"""The PII guard: free text is pseudonymized before it reaches an LLM, a log line or the decision log.

Attune promises that no raw PII leaves the process. Every free text bound for a model, a log or
the decision log goes through `PIIGuard.pseudonymize`, which swaps each piece of PII for a stable
per-request placeholder (`<PERSON_1>`, `<EMAIL_ADDRESS_1>`, `<PHONE_NUMBER_1>` ...). The mapping
back to the raw values lives in a `Vault` that is created per request, cannot be pickled and never
prints its values; `Vault.reveal` re-identifies only the entity types a caller allows, which is why
the subject's own first name has its own type (`FIRST_NAME`): a greeting may show it while the
last name, the email and everything else stay masked.

Offline design. Presidio's defaults expect the `en_core_web_lg` spaCy model and would try to
download it; nothing may be downloaded here. When the model is not installed the guard saves a
blank English pipeline (a tokenizer, no NER) once under `work_dir` and runs Presidio on that, in a
mode it reports as degraded. Without NER, names and places are found only two ways:
  * the subject's own profile values (`KnownValues`), matched per call by ad-hoc pattern
    recognizers that score 1.0 (names on word boundaries, any case; the phone in any common
    format; the email in any case; street, postcode and the birth date in common formats);
  * Presidio's pattern recognizers: email, phone (GB, US, DE, FR and any "+CC" number), credit
    card, IBAN, IP address, US SSN and UK NHS number.
Other people's names, places and organisations are missed in that mode.

The registry is built by hand rather than from Presidio's defaults so that nothing on the request
path touches the network: the URL recognizer is left out (it flags parts of emails and fetches the
public suffix list through `tldextract`), and the email recognizer is replaced by a subclass whose
`tldextract` extractor reads only the suffix list bundled with the package and keeps no disk cache.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache, partial
from pathlib import Path
from typing import NoReturn

import phonenumbers
import spacy
import tldextract
from phonenumbers import NumberParseException, PhoneNumber
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine, OperatorConfig
from presidio_anonymizer import RecognizerResult as AnonymizerSpan

from store.schemas import Profile

__all__ = ["Finding", "KnownValues", "PIIGuard", "Redacted", "Vault"]

log = logging.getLogger("attune.pii")

FIRST_NAME = "FIRST_NAME"
PERSON = "PERSON"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
PERSONAL_DETAIL = "PERSONAL_DETAIL"

# Regions tried, in order, for phone numbers written without a "+CC" prefix.
PHONE_REGIONS = ("GB", "US", "DE", "FR")

_ENTITY_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
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
# Separators people put inside phone numbers: spaces, dashes, dots, slashes and brackets.
_TOKEN = re.compile(r"\w+")
_MAX_GAP = 3  # characters between the words of one value: ". ", "@", ", ", "/"
# A run of digits with the separators people put in phone numbers, optionally after + or (.
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|\()?\d(?:[\s\-./()]{0,3}\d){5,}(?!\w)")


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
        first, last = profile.first_name.strip(), profile.last_name.strip()
        region = profile.address.country if profile.address else profile.locale.partition("-")[2]
        phones: tuple[str, ...] = ()
        if profile.phone:
            number = _parse_phone(profile.phone, regions=(region, *PHONE_REGIONS))
            e164 = phonenumbers.PhoneNumberFormat.E164
            phones = (phonenumbers.format_number(number, e164) if number else profile.phone,)
        other: list[str] = []
        if profile.address:
            other += [profile.address.street, profile.address.postcode]
        if profile.birth_date:
            other += _date_forms(profile.birth_date)
        return cls(
            names=_unique((first, last, f"{first} {last}")),
            emails=(str(profile.email),),
            phones=phones,
            other=_unique(other),
            first_names=_unique((first,)),
        )

    @classmethod
    def empty(cls) -> KnownValues:
        return _NO_KNOWN_VALUES

    def __repr__(self) -> str:
        # The values are PII: a repr in a traceback or a log line shows only how many there are.
        counts = ", ".join(
            f"{field}={len(getattr(self, field))}"
            for field in ("names", "emails", "phones", "other", "first_names")
        )
        return f"KnownValues({counts})"


_NO_KNOWN_VALUES = KnownValues()


class Vault:
    """One request's placeholders and the raw values behind them; it never leaves the process.

    The same value (case-folded, whitespace collapsed; a phone number by its digits) always gets
    the same placeholder within a vault, numbered per entity type from 1 in order of first sight.
    """

    __slots__ = ("_counts", "_originals", "_placeholders")

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}
        self._originals: dict[str, tuple[str, str]] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, entity_type: str, value: str) -> str:
        """The placeholder for `value`, allocating the next number of its type on first sight."""
        if not _ENTITY_TYPE.fullmatch(entity_type):
            raise ValueError(
                f"entity type {entity_type!r} must be upper-case letters, digits and underscores, "
                "starting with a letter, e.g. PHONE_NUMBER"
            )
        key = (entity_type, _normalise(entity_type, value))
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            number = self._counts.get(entity_type, 0) + 1
            self._counts[entity_type] = number
            placeholder = f"<{entity_type}_{number}>"
            self._placeholders[key] = placeholder
            self._originals[placeholder] = (entity_type, value)
        return placeholder

    def reveal(self, text: str, allowed: set[str]) -> str:
        """`text` with the placeholders of the `allowed` entity types put back to their values."""

        def swap(match: re.Match[str]) -> str:
            entry = self._originals.get(match.group(0))
            if entry is not None and entry[0] in allowed:
                return entry[1]
            return match.group(0)

        return _PLACEHOLDER.sub(swap, text)

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={count}" for kind, count in sorted(self._counts.items()))
        return f"Vault({counts})"

    def __reduce__(self) -> NoReturn:
        # Pickling is how objects reach checkpoints, caches and other processes.
        raise TypeError(
            "a Vault holds raw PII and never leaves the process: keep it in the request's run "
            "context, not in graph state, a checkpoint or a cache"
        )


@dataclass(frozen=True)
class Finding:
    """One span of PII in a text: its entity type, character offsets and confidence."""

    entity_type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Redacted:
    """A pseudonymized text and the placeholders in it, in reading order; no raw values."""

    text: str
    entities: tuple[tuple[str, str], ...]  # (placeholder, entity type), one per replaced span


class PIIGuard:
    """Finds PII and pseudonymizes it. Heavy to build: make one per process and share it."""

    NER_ENTITIES = ("PERSON", "LOCATION")
    BLANK_MODEL_DIR = "spacy-blank-en"
    LANGUAGE = "en"

    def __init__(
        self,
        *,
        spacy_model: str = "en_core_web_lg",
        work_dir: Path,
        score_threshold: float = 0.4,
    ) -> None:
        self.score_threshold = score_threshold
        self.degraded: str | None
        if spacy.util.is_package(spacy_model):
            model_name = spacy_model
            self.mode = f"spacy:{spacy_model}"
            self.degraded = None
        else:
            model_name = str(_blank_pipeline(Path(work_dir) / self.BLANK_MODEL_DIR))
            self.mode = "blank"
            self.degraded = f"spaCy model {spacy_model!r} is not installed: no NER"
            log.warning(
                "no NER model: names are found by the subject's profile values and patterns "
                "only (%s)",
                self.degraded,
            )
        nlp_engine = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": self.LANGUAGE, "model_name": model_name}],
            }
        ).create_engine()
        recognizers: list[EntityRecognizer] = [
            _OfflineEmailRecognizer(),
            PhoneRecognizer(supported_regions=PHONE_REGIONS),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            NhsRecognizer(),
        ]
        if self.degraded is None:
            recognizers.append(SpacyRecognizer(supported_entities=list(self.NER_ENTITIES)))
        self._analyzer = AnalyzerEngine(
            registry=RecognizerRegistry(recognizers, supported_languages=[self.LANGUAGE]),
            nlp_engine=nlp_engine,
            supported_languages=[self.LANGUAGE],
            default_score_threshold=score_threshold,
        )
        self._anonymizer = AnonymizerEngine()
        self._warm_up()

    def find(self, text: str, known: KnownValues = _NO_KNOWN_VALUES) -> list[Finding]:
        """The PII spans in `text`, in reading order; of overlapping spans the stronger wins."""
        if not text.strip():
            return []
        results = self._analyzer.analyze(
            text=text,
            language=self.LANGUAGE,
            ad_hoc_recognizers=_known_value_recognizers(known) or None,
            score_threshold=self.score_threshold,
        )
        return _resolve_overlaps(results)

    def pseudonymize(
        self, text: str, *, known: KnownValues = _NO_KNOWN_VALUES, vault: Vault
    ) -> Redacted:
        """`text` with every PII span replaced by its placeholder from `vault`."""
        findings = self.find(text, known)
        if not findings:
            return Redacted(text=text, entities=())
        # The anonymizer rewrites spans from the end of the text backwards, so placeholders are
        # allocated here first, in reading order; the operator below then finds them by value.
        for finding in findings:
            vault.placeholder(finding.entity_type, text[finding.start : finding.end])
        operators = {
            kind: OperatorConfig("custom", {"lambda": partial(vault.placeholder, kind)})
            for kind in {finding.entity_type for finding in findings}
        }
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[
                AnonymizerSpan(f.entity_type, f.start, f.end, f.score) for f in findings
            ],
            operators=operators,
            # Two emails separated by a space are two emails, not one.
            merge_entities_with_spaces=False,
        )
        items = sorted(result.items, key=lambda item: item.start)
        return Redacted(
            text=result.text, entities=tuple((item.text, item.entity_type) for item in items)
        )

    def contains_pii(self, text: str, known: KnownValues = _NO_KNOWN_VALUES) -> list[str]:
        """The entity types of the PII in `text`, sorted; empty when there is none."""
        return sorted({finding.entity_type for finding in self.find(text, known)})

    def __repr__(self) -> str:
        return f"PIIGuard(mode={self.mode!r}, degraded={self.degraded!r})"

    def _warm_up(self) -> None:
        # Loads the bundled suffix list, the phone metadata and the regex caches now, so the
        # first request does not pay for them.
        known = KnownValues(names=("Ada Example",), first_names=("Ada",), phones=("+442079460000",))
        self.pseudonymize(
            "Ada Example, ada@example.com, 020 7946 0000, 192.0.2.1, 4111 1111 1111 1111",
            known=known,
            vault=Vault(),
        )


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer, validating domains against the bundled suffix list only."""

    def __init__(self) -> None:
        super().__init__()
        # No suffix list URLs and no cache directory: tldextract falls back to the snapshot that
        # ships with the package and never opens a connection or writes under $HOME.
        self._extract = tldextract.TLDExtract(
            cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True
        )

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


class _KnownValuesRecognizer(EntityRecognizer):
    """The subject's own values, found by comparing word tokens, scoring 1.0.

    Written by hand rather than with Presidio's `PatternRecognizer`: a pattern per person must be
    compiled per request (about 14 ms with the `regex` module, 6 ms with `re`, for one profile's
    names, email, phone, address and a dozen date spellings), while comparing case- and
    accent-folded word tokens needs only patterns compiled once at import. Tokens also make the
    separators irrelevant: "14/03/1990", "14.03.1990" and "14 03 1990" are one value, and so are
    "O'Brien" and "O’Brien". Phone numbers are compared by digits (see `_phone_matches`).
    """

    def __init__(self, known: KnownValues) -> None:
        first_keys = {_fold(name) for name in known.first_names}
        values = [(FIRST_NAME, name) for name in known.first_names]
        values += [(PERSON, name) for name in known.names if _fold(name) not in first_keys]
        values += [(EMAIL_ADDRESS, email) for email in known.emails]
        values += [(PERSONAL_DETAIL, value) for value in known.other]
        sequences: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for entity_type, value in values:
            tokens = tuple(_fold(t) for t in _TOKEN.findall(value))
            if (
                tokens and len("".join(tokens)) >= 2
            ):  # A lone initial would match every such letter.
                sequences.setdefault(tokens[0], []).append((tokens, entity_type))
        for found in sequences.values():
            found.sort(key=lambda entry: -len(entry[0]))  # The fuller value wins at one position.
        self._sequences = sequences
        self._phones = [n for n in (_national_digits(p) for p in known.phones) if n]
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
            tokens = [(_fold(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text)]
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
        for match in _PHONE_CANDIDATE.finditer(text) if self._phones else ():
            if _phone_matches(match.group(), self._phones):
                results.append(RecognizerResult(PHONE_NUMBER, match.start(), match.end(), 1.0))
        return results


@lru_cache(maxsize=256)
def _known_value_recognizers(known: KnownValues) -> list[EntityRecognizer]:
    """One recognizer per person, reused while the person is among the last 256 seen.

    The cache holds the values only in this process's memory, like the request's vault.
    """
    if not (known.names or known.emails or known.phones or known.other):
        return []
    return [_KnownValuesRecognizer(known)]


def _fold(value: str) -> str:
    return _strip_accents(value).casefold()


def _national_digits(phone: str) -> str | None:
    """The national significant number of a phone, or its digits when it cannot be parsed."""
    number = _parse_phone(phone)
    digits = (
        phonenumbers.national_significant_number(number) if number else re.sub(r"\D", "", phone)
    )
    return digits if len(digits) >= 6 else None


def _phone_matches(candidate: str, nationals: list[str]) -> bool:
    """Whether a phone-like span is one of the known numbers, written with any prefix.

    The span's digits must end with the national number, and what precedes it may only be a
    trunk prefix (0), an international prefix (+CC, 00CC) or both ("+44 (0)").
    """
    digits = re.sub(r"\D", "", candidate)
    for national in nationals:
        if digits.endswith(national) and len(digits) - len(national) <= 5:
            prefix = digits[: len(digits) - len(national)]
            international = candidate.lstrip("( ").startswith(("+", "00"))
            if prefix in ("", "0") or international:
                return True
    return False


@lru_cache(maxsize=4096)
def _parse_phone(value: str, regions: tuple[str, ...] = PHONE_REGIONS) -> PhoneNumber | None:
    candidate = value.strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if candidate.startswith("+"):
        try:
            number = phonenumbers.parse(candidate, None)
        except NumberParseException:
            return None
        return number if phonenumbers.is_possible_number(number) else None
    fallback = None
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
        if fallback is None and phonenumbers.is_possible_number(number):
            fallback = number
    return fallback


def _normalise(entity_type: str, value: str) -> str:
    if entity_type == PHONE_NUMBER:
        number = _parse_phone(value)
        if number is not None:
            return f"+{number.country_code}{phonenumbers.national_significant_number(number)}"
        return re.sub(r"\D", "", value)
    return _normalise_text(value)


def _normalise_text(value: str) -> str:
    return " ".join(value.casefold().split())


def _strip_accents(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _resolve_overlaps(results: list[RecognizerResult]) -> list[Finding]:
    # Strongest first: the higher score, then the longer span, then the earlier one.
    ranked = sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start))
    kept: list[RecognizerResult] = []
    for result in ranked:
        if all(result.end <= other.start or other.end <= result.start for other in kept):
            kept.append(result)
    kept.sort(key=lambda r: r.start)
    return [Finding(r.entity_type, r.start, r.end, r.score) for r in kept]


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
        if value and _normalise_text(value) not in seen:
            seen[_normalise_text(value)] = value
    return tuple(seen.values())


def _blank_pipeline(folder: Path) -> Path:
    """A blank English spaCy pipeline saved in `folder`, reused when it is already there."""
    if (folder / "config.cfg").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Saved aside and renamed into place, so a concurrent start never loads a half-written folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    spacy.blank("en").to_disk(staging)
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "config.cfg").is_file():
            raise
    return folder
