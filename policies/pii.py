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
mode it reports as degraded. Without NER, names are found three ways:
  * the subject's own profile values (`KnownValues`), matched per call by ad-hoc pattern
    recognizers that score 1.0 (names on word boundaries, any case; the phone in any common
    format; the email in any case; street, postcode and the birth date in common formats);
  * other people's names by `_PersonNameRecognizer`: given-name and surname lists shipped in
    `data/names/` (built from Faker's person providers by `data/names/build.py`), context words
    ("my name is", "Mr", "regards", "my sister") and capitals, with extra care for given names
    that are ordinary words ("Will", "May", "Grace"). Its precision and recall are measured by
    the `pii` eval suite (`evals/suites/pii.yaml`); names absent from the lists are found from
    context only;
  * Presidio's pattern recognizers: email, phone (GB, US, DE, FR and any "+CC" number), credit
    card, IBAN, IP address, US SSN and UK NHS number, three of them adjusted for a shop: the
    phone recognizer leaves alone numbers labelled as orders or invoices, the IBAN recognizer
    also reads lower case, and the card recognizer knows Mastercard's 2-series.
Places and organisations are missed in that mode. With an NER model the name lists are not used:
spaCy's PERSON and LOCATION take their place.

The registry is built by hand rather than from Presidio's defaults so that nothing on the request
path touches the network: the URL recognizer is left out (it flags parts of emails and fetches the
public suffix list through `tldextract`), and the email recognizer is replaced by a subclass whose
`tldextract` extractor reads only the suffix list bundled with the package and keeps no disk cache.
"""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from enum import IntEnum
from functools import lru_cache, partial
from pathlib import Path
from typing import ClassVar, NoReturn, cast

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    NhsRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine, OperatorConfig
from presidio_anonymizer import RecognizerResult as AnonymizerSpan

from policies.pii_entities import (
    ALWAYS_REDACTED,
    DEFAULT_PHONE_REGIONS,
    DEFAULT_REDACTED,
    ENTITY_TYPES,
)
from policies.pii_ner import (
    FALLBACK_MODELS,
    NER_ENTITIES,
    NerRecognizer,
    load_pipeline,
    nlp_engine,
)
from policies.pii_patterns import (
    AgeRecognizer,
    CardRecognizer,
    DateTimeRecognizer,
    DriverLicenseRecognizer,
    OfflineUrlRecognizer,
    RegionPhoneRecognizer,
    StreetAddressRecognizer,
    ZipCodeRecognizer,
    offline_tldextract,
)
from store.schemas import Profile

__all__ = ["Finding", "KnownValues", "PIIGuard", "Redacted", "Vault", "resolve_overlaps"]

log = logging.getLogger("attune.pii")

FIRST_NAME = "FIRST_NAME"
PERSON = "PERSON"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
PERSONAL_DETAIL = "PERSONAL_DETAIL"

# The person-name recognizer's lists, built by data/names/build.py.
NAMES_DIR = Path(__file__).resolve().parents[1] / "data" / "names"

# Regions tried, in order, for phone numbers written without a "+CC" prefix.
PHONE_REGIONS = ("GB", "US", "DE", "FR")  # tried in order for a profile's own number

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
# A run of digits with the separators people put in phone numbers, optionally after + or (,
# and an extension ("x2011", "ext. 12"), which the span covers but the comparison leaves out.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?P<number>(?:\+|\()?\d(?:[\s\-./()]{0,3}\d){5,})"
    r"(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?(?!\w)",
    re.IGNORECASE,
)


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
    """Finds PII and pseudonymizes it. Heavy to build: make one per process and share it.

    Args:
        spacy_model: the spaCy pipeline to use when installed (`en_core_web_lg` by default);
            otherwise the small English model Attune depends on, otherwise a blank pipeline,
            reported in `degraded`.
        redact: the entity types found and replaced (the policy's `pii.redact`); the subject's
            own values are always replaced.
        phone_regions: regions whose national phone formats are recognised.
        fallback_models: the pipelines tried after `spacy_model`, in order.
    """

    LANGUAGE = "en"

    def __init__(
        self,
        *,
        spacy_model: str = "en_core_web_lg",
        score_threshold: float = 0.4,
        names_dir: Path = NAMES_DIR,
        redact: Iterable[str] = DEFAULT_REDACTED,
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
        fallback_models: tuple[str, ...] = FALLBACK_MODELS,
    ) -> None:
        self.score_threshold = score_threshold
        unknown = sorted(set(redact) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"redact: unknown entity types {unknown}; use some of {ENTITY_TYPES}")
        self.redact = frozenset(redact) | ALWAYS_REDACTED
        pipeline = load_pipeline(spacy_model, fallback_models)
        self.degraded = pipeline.degraded
        self.mode = "blank" if pipeline.degraded else f"spacy:{pipeline.name}"
        lists = _name_lists(Path(names_dir).resolve())
        recognizers: list[EntityRecognizer] = [
            _OfflineEmailRecognizer(),
            RegionPhoneRecognizer(tuple(phone_regions)),
            CardRecognizer(),
            _IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            _NhsRecognizer(),
            OfflineUrlRecognizer(),
            StreetAddressRecognizer(),
            ZipCodeRecognizer(),
            AgeRecognizer(),
            DriverLicenseRecognizer(),
            DateTimeRecognizer(),
            _PersonNameRecognizer(lists),
        ]
        if self.degraded is None:
            recognizers.append(NerRecognizer(lists.not_names, _fold, lists.first | lists.last))
        recognizers = [r for r in recognizers if set(r.supported_entities) & self.redact]
        self._entities = sorted(self.redact)
        self._with_known = sorted(self.redact | {FIRST_NAME, PERSONAL_DETAIL})
        self._analyzer = AnalyzerEngine(
            registry=RecognizerRegistry(recognizers, supported_languages=[self.LANGUAGE]),
            nlp_engine=nlp_engine(pipeline, self.LANGUAGE),
            supported_languages=[self.LANGUAGE],
            default_score_threshold=score_threshold,
        )
        self._anonymizer = AnonymizerEngine()
        self._warm_up()

    def find(
        self, text: str, known: KnownValues = _NO_KNOWN_VALUES, *, statistical: bool = True
    ) -> list[Finding]:
        """The PII spans in `text`, in reading order.

        A span inside a longer one gives way to it; of other overlapping spans the stronger wins.
        With `statistical=False` the NER model's guesses are left out: only known values,
        patterns and the name lists count (the check of generated copy, whose catalog words NER
        reads as names and places).
        """
        if not text.strip():
            return []
        known_recognizers = _known_value_recognizers(known)
        results = self._analyzer.analyze(
            text=text,
            language=self.LANGUAGE,
            entities=self._with_known if known_recognizers else self._entities,
            ad_hoc_recognizers=known_recognizers or None,
            score_threshold=self.score_threshold,
        )
        if not statistical:
            results = [r for r in results if not _from_ner(r)]
        if "ZIP_CODE" in self.redact:
            results += _postcodes_beside_places(text, results)
        return resolve_overlaps(_names_over_ner(_patterns_over_ner(results)))

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

    def contains_pii(
        self, text: str, known: KnownValues = _NO_KNOWN_VALUES, *, statistical: bool = True
    ) -> list[str]:
        """The entity types of the PII in `text`, sorted; empty when there is none."""
        return sorted({f.entity_type for f in self.find(text, known, statistical=statistical)})

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
        self._extract = offline_tldextract()

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


class _IbanRecognizer(IbanRecognizer):
    """Presidio's IBAN recognizer, also finding IBANs typed in lower case ("gb82 west 1234 ...").

    Presidio's patterns want capitals, so what looks like a lower-case IBAN is upper-cased before
    the search (ASCII letters only, which keeps every offset); the mod-97 check still decides.
    Only those spans change: a following word in capitals could run into the last group.
    """

    _GROUP = r"(?=[a-z0-9]{0,3}\d)[a-z0-9]{1,4}(?![a-z0-9])"  # up to 4, at least one digit
    _LOWER_CASE = re.compile(
        r"(?<![^\W\d_])[a-z]{2}\d{2}"
        rf"(?:[a-z0-9]{{10,30}}(?![a-z0-9])|[ -]?[a-z0-9]{{4}}(?:[ -]{_GROUP}){{1,7}})"
    )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        capitalised = self._LOWER_CASE.sub(lambda m: m.group().upper(), text)
        return super().analyze(capitalised, entities, cast(NlpArtifacts, nlp_artifacts))


class _NhsRecognizer(NhsRecognizer):
    """Presidio's NHS number recognizer, sure of a number only after an NHS word.

    Presidio scores every 3-3-4 run of ten digits that passes the mod-11 check as certain (1.0),
    and one in eleven random numbers passes: a US number ("201-741-5537") or a French one
    ("0612373851") would then be reported as an NHS number. Without "NHS" or "health" in the
    40 characters before it, a checked number keeps the pattern's own score, so a valid phone
    number of the same digits wins.
    """

    _CONTEXT = re.compile(r"(?i:\b(?:nhs|health|patient|chi)\b)")
    UNSURE_SCORE = 0.5

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for result in results:
            if not self._CONTEXT.search(text[max(0, result.start - 40) : result.start]):
                result.score = min(result.score, self.UNSURE_SCORE)
        return results


@dataclass(frozen=True)
class _NameLists:
    """The word lists of the person-name recognizer, accent- and case-folded (see data/names)."""

    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]  # given names that are often written capitalised as something else
    english: frozenset[str]  # ordinary words: a capitalised one is no unknown surname
    not_names: frozenset[tuple[str, ...]]  # brands and places written like names


@lru_cache(maxsize=4)
def _name_lists(folder: Path) -> _NameLists:
    """The lists in `folder`, read once per process and folder."""

    def read(name: str) -> list[str]:
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{path}: the person-name recognizer's list is missing; rebuild the lists with "
                "`python data/names/build.py` or pass names_dir= the folder that holds them"
            ) from error
        return [_fold(line.strip()) for line in text.splitlines() if line.strip()[:1] not in "#"]

    return _NameLists(
        first=frozenset(read("first_names.txt")),
        last=frozenset(read("last_names.txt")),
        common=frozenset(read("common_words.txt")),
        english=frozenset(read("english_words.txt")),
        not_names=frozenset(tuple(phrase.split()) for phrase in read("not_names.txt")),
    )


@dataclass(frozen=True, slots=True)
class _Word:
    """A word of the text, as the person-name recognizer sees it."""

    start: int
    end: int  # before a possessive "'s"
    key: str  # accent- and case-folded, without the possessive
    phrase_key: str  # case-folded with its apostrophes, for context phrases ("i'm", "name's")
    capitalised: bool
    upper: bool  # all capitals: a name when shouted, more often an acronym ("IBAN", "UK")
    initial: bool  # a capital letter followed by a dot: "J."
    sentence_start: bool
    possessive: bool
    embedded: bool  # inside an email, a URL, a code or a placeholder


class _Context(IntEnum):
    """How strongly the words before a capitalised word announce a name."""

    NONE = 0
    # "I'm", "this is", "ask for": a listed name, also in lower case; a given name that is a
    # common word ("Grace") or an unlisted capitalised word only at a pause ("I'm Grace,").
    MEDIUM = 1
    GREETING = 2  # "Hi", "Thanks": as MEDIUM, with a higher score
    STRONG = 3  # "my name is", "regards", "my wife": any listed or unlisted name-like word
    TITLE = 4  # "Mr", "Dr.": any capitalised word


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _phrases(text: str) -> frozenset[tuple[str, ...]]:
    """Comma-separated phrases as word tuples: "thank you, cheers" -> {("thank", "you"), ...}."""
    return frozenset(tuple(phrase.split()) for phrase in text.split(","))


class _PersonNameRecognizer(EntityRecognizer):
    """Other people's names without an NER model: name lists, context words and capitals.

    A word is a name candidate when it is in the given-name or surname lists built from Faker's
    person providers (`data/names/`). Candidates become a PERSON when there is evidence:
      * a title or a context phrase before them ("Mr", "my name is", "regards", "my sister");
      * a given name followed by other listed names or one unknown capitalised word ("Anna
        Schmidt", "Patrick Chelangat");
      * a listed given name standing alone, capitalised, inside a sentence ("ask Sophie").
    Given names that are ordinary words ("Will", "May", "Grace", "Rose", "Mark") need stronger
    evidence: a surname after them or a context before them, so "I will go in May" and "Mark
    as delivered" stay while "Will Smith called" and "Thanks Grace!" are found. A capital at a
    sentence start is no evidence, brands written like names are listed apart ("Calvin Klein"),
    and words inside emails, URLs and codes are left to their own recognizers.
    """

    ENTITY = PERSON
    SCORES: ClassVar[dict[_Context, float]] = {
        _Context.TITLE: 0.85,
        _Context.STRONG: 0.85,
        _Context.GREETING: 0.75,
        _Context.MEDIUM: 0.7,
    }
    CHAIN_SCORE = 0.75  # a given name and a surname: "Anna Schmidt"
    ALONE_SCORE = 0.6  # a listed given name alone, or followed by one unknown word
    EVIDENCE_SCORE = 0.7  # at least a context phrase or a full name: outranks NER's other labels
    NAME = "PersonNameRecognizer"
    MAX_NAME_WORDS = 4
    TITLES = _wordset(
        "mr mrs ms miss mx dr prof professor sir dame lady lord herr frau monsieur madame mme "
        "mlle mademoiselle senor senora senorita sr sra srta signor signora signorina sig"
    )
    SHORT_TITLES = _wordset("mr mrs ms dr")
    PHRASES: ClassVar[dict[_Context, frozenset[tuple[str, ...]]]] = {
        _Context.STRONG: _phrases(
            "name, name is, name's, names, full name, call me, named, regards, sincerely, "
            "signed, yours, wishes, love from, attn, attention, c o, care of, recipient, "
            "recipient is, holder, cardholder, name on card, name on the card, addressed to, "
            "addressee, wife, husband, partner, son, daughter, mum, mom, mother, dad, father, "
            "sister, brother, friend, colleague, boss, neighbour, neighbor, grandson, "
            "granddaughter, grandma, grandmother, grandpa, grandfather, nan, niece, nephew, "
            "cousin, aunt, uncle, girlfriend, boyfriend, fiance, fiancee, flatmate, roommate, "
            "child, kid, kids"
        ),
        _Context.GREETING: _phrases(
            "hi, hello, hey, dear, thanks, thank you, thank you so much, thanks so much, "
            "thanks a lot, cheers, bye, morning, evening"
        ),
        _Context.MEDIUM: _phrases(
            "i'm, i am, im, this is, it's, its, it is, called, ask for, asked for, speak to, "
            "spoke to, spoke with, speaking to, talk to, talked to, chatted with, contact, "
            "courtesy of"
        ),
    }
    PARTICLES = _wordset(
        "al bin da das de degli dei del della delle der des di do dos du el ibn la le lo ten ter "
        "van von y zu"
    )
    SAINTS = _wordset("st saint san santa santo sainte sankt sao")
    PLACE_WORDS = _wordset(
        "street road avenue lane square station gardens crescent terrace mews hospital school "
        "college university centre center mall airport bridge cathedral hotel stadium arena "
        "market"
    )
    PRODUCT_WORDS = _wordset(
        "gold silver bronze copper platinum green grey gray white black blue red pink cream "
        "ivory navy day sale"
    )
    PAUSE_WORDS = _wordset("here speaking from and")  # "Grace here", "I'm May and I ..."
    _WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
    _EMBEDDING = frozenset("@_/\\<>#=+*&")
    _CONTEXT_WORDS = frozenset(p[0] for level in PHRASES.values() for p in level if len(p) == 1)
    _CONTRACTION = re.compile(r"['’](?:m|re|ve|ll|d|t|s)$", re.IGNORECASE)

    def __init__(self, lists: _NameLists) -> None:
        self._lists = lists
        self._longest_phrase = max(len(p) for phrases in self.PHRASES.values() for p in phrases)
        super().__init__(supported_entities=[self.ENTITY], name=self.NAME)

    def load(self) -> None:
        """The lists are loaded by `_name_lists` once per process."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: object = None
    ) -> list[RecognizerResult]:
        words = self._words(text)
        spans: list[tuple[int, int, float]] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word.embedded or not (word.capitalised or word.initial or self._is_name(word)):
                i += 1  # no name starts here, whatever comes before: skip the context lookup
                continue
            context = self._context(text, words, i)
            end = self._run_end(text, words, i, context)
            if end is None:
                i += 1
                continue
            spans += self._names_in_run(text, words, i, end, context)
            i = end + 1
        spans += self._lowercase_pairs(words, spans)
        return [
            RecognizerResult(self.ENTITY, words[a].start, words[b].end, score)
            for a, b, score in spans
        ]

    def _lowercase_pairs(
        self, words: list[_Word], found: list[tuple[int, int, float]]
    ) -> list[tuple[int, int, float]]:
        """A full name typed without capitals ("beverley bartlett"): a listed given name then a
        listed surname, neither an ordinary word nor a common-word name, counts on its own."""
        taken = {j for a, b, _ in found for j in range(a, b + 1)}
        lists = self._lists
        pairs = []
        for i in range(len(words) - 1):
            first, last = words[i], words[i + 1]
            if i in taken or i + 1 in taken or first.embedded or last.embedded:
                continue
            if (
                first.key in lists.first
                and last.key in lists.last
                and not {first.key, last.key} & (lists.english | lists.common)
            ):
                pairs.append((i, i + 1, self.CHAIN_SCORE))
        return pairs

    def _words(self, text: str) -> list[_Word]:
        words: list[_Word] = []
        for match in self._WORD.finditer(text):
            raw, start, end = match.group(), match.start(), match.end()
            before = text[start - 1] if start else " "
            after = text[end] if end < len(text) else " "
            beyond = text[end + 1] if end + 1 < len(text) else " "
            embedded = (
                before in self._EMBEDDING
                or before.isdigit()
                or (before == "." and start > 1 and text[start - 2].isalnum())
                or after in self._EMBEDDING
                or after.isdigit()
                or (after in "./" and beyond.isalnum())
            )
            possessive = len(raw) > 3 and raw[-2:].casefold() in ("'s", "’s")
            core = raw[:-2] if possessive else raw
            # "I'm", "We'll", "Don't" are no names; "O'Brien" and "D'Angelo" are.
            contraction = self._CONTRACTION.search(core) is not None
            words.append(
                _Word(
                    start=start,
                    end=start + len(core),
                    key=_fold(core),
                    phrase_key=raw.casefold().replace("’", "'"),
                    capitalised=raw[0].isupper() and len(core) > 1 and not contraction,
                    upper=core.isupper() and len(core) > 1 and not contraction,
                    initial=len(raw) == 1 and raw.isupper() and after == ".",
                    sentence_start=self._starts_sentence(text, start, words),
                    possessive=possessive,
                    embedded=embedded,
                )
            )
        self._mark_not_names(words)
        return words

    def _starts_sentence(self, text: str, start: int, previous: list[_Word]) -> bool:
        position = start - 1
        while position >= 0 and text[position] in " \t\"'“‘([":
            position -= 1
        if position < 0 or text[position] in "!?\n\r":
            return True
        if text[position] != ".":
            return False
        # "Dr. Smith", "J. Smith": the dot ends an abbreviation, not a sentence.
        last = previous[-1] if previous else None
        return not (last and last.end == position and (self._is_title(last) or last.initial))

    def _mark_not_names(self, words: list[_Word]) -> None:
        for i in range(len(words)):
            for size in (4, 3, 2):
                keys = tuple(w.key for w in words[i : i + size])
                if len(keys) == size and keys in self._lists.not_names:
                    for j in range(i, i + size):
                        words[j] = replace(words[j], embedded=True)
                    break

    def _context(self, text: str, words: list[_Word], i: int) -> _Context:
        """How the words before word `i` announce a name; a sentence end in between cancels."""
        if i == 0:
            return _Context.NONE
        before = words[i - 1]
        gap = text[before.end : words[i].start]
        if self._is_title(before) and gap.strip() in ("", "."):
            return _Context.TITLE
        if any(mark in gap for mark in ".!?"):
            return _Context.NONE
        keys = [w.phrase_key for w in words[max(0, i - self._longest_phrase) : i]]
        for level in (_Context.STRONG, _Context.GREETING, _Context.MEDIUM):
            if any(tuple(keys[-len(p) :]) == p for p in self.PHRASES[level]):
                # A capitalised "Morning" inside a sentence is a name's part, not a greeting.
                greeting = level is _Context.GREETING
                if greeting and before.capitalised and not before.sentence_start:
                    return _Context.NONE
                return level
        return _Context.NONE

    def _introduces(self, word: _Word) -> bool:
        """Whether the word is a title or a one-word context ("Dear", "Grandma"), not a name."""
        return self._is_title(word) or word.phrase_key in self._CONTEXT_WORDS

    def _is_title(self, word: _Word) -> bool:
        # "I miss Summer" is no title: only the abbreviations count in lower case ("mr smith").
        return word.key in self.TITLES and (word.capitalised or word.key in self.SHORT_TITLES)

    def _is_name(self, word: _Word) -> bool:
        return self._listed(word, self._lists.first) or self._listed(word, self._lists.last)

    def _is_given(self, word: _Word) -> bool:
        return self._listed(word, self._lists.first)

    @staticmethod
    def _listed(word: _Word, names: frozenset[str]) -> bool:
        """Whether the word is in `names`, or is a double name of listed parts: "Jean-Pierre"."""
        if word.key in names:
            return True
        parts = word.key.split("-")
        return len(parts) > 1 and all(part in names for part in parts)

    def _is_unknown(self, word: _Word) -> bool:
        return not self._is_name(word) and word.key not in self._lists.english

    def _run_end(self, text: str, words: list[_Word], i: int, context: _Context) -> int | None:
        """The last word of the run of name-like words starting at `i`, or None if none starts.

        A run is capitalised words (with particles and initials between them) separated by
        spaces only; after a context phrase it may also be listed names in lower case.
        """
        word = words[i]
        if word.embedded or self._introduces(word) or word.key in self.PARTICLES:
            return None
        lowercase_name = (
            not word.capitalised
            and context >= _Context.MEDIUM
            and self._is_name(word)
            and word.key not in self._lists.common
            and word.key not in self._lists.english
        )
        if not (word.capitalised or lowercase_name or word.initial):
            return None
        if word.capitalised and word.sentence_start and not self._is_name(word):
            return None  # a sentence's first capital says nothing
        end = i
        while end + 1 < len(words) and not words[end].possessive:
            following = words[end + 1]
            gap = text[words[end].end : following.start]
            if words[end].initial:
                gap = gap.removeprefix(".")
            if not (gap and gap.isspace() and "\n" not in gap and len(gap) <= 3):
                break
            if following.embedded or self._introduces(following):
                break
            if following.key in self.PARTICLES or following.initial:
                if end + 2 < len(words) and words[end + 2].capitalised:
                    end += 1
                    continue
                break
            if lowercase_name:
                if following.capitalised or not self._is_name(following):
                    break
                if following.key in self._lists.english:
                    break
            elif not following.capitalised:
                break
            end += 1
        return end

    def _names_in_run(
        self, text: str, words: list[_Word], a: int, b: int, context: _Context
    ) -> list[tuple[int, int, float]]:
        run = words[a : b + 1]
        if a > 0 and words[a - 1].key in self.SAINTS:
            return []  # "St Patrick's Day", "San Francisco"
        if len(run) > 1 and run[-1].key in self.PLACE_WORDS:
            return []  # "Victoria Street", "Charlotte Station"
        spans = []
        i = a
        if context is not _Context.NONE:
            end = a
            while (
                end <= b and end - a < self.MAX_NAME_WORDS and self._accepted(run[end - a], context)
            ):
                end += 1
            while end > a and not self._is_namelike(words[end - 1]):
                end -= 1  # a run does not end on a particle or an initial
            if end > a:
                taken = words[a:end]
                needs_pause = context < _Context.STRONG and not all(
                    self._is_name(w) and w.key not in self._lists.common for w in taken
                )
                if not needs_pause or self._at_pause(text, words, end - 1):
                    spans.append((a, end - 1, self.SCORES[context]))
                    i = end
        while i <= b:
            if not self._is_name(words[i]) and not words[i].initial:
                i += 1
                continue
            j = i
            while j + 1 <= b and (
                self._is_name(words[j + 1]) or not self._is_namelike(words[j + 1])
            ):
                j += 1
            while j > i and not self._is_namelike(words[j]):
                j -= 1
            span = self._chain(text, words, i, j, run)
            if span:
                spans.append(span)
            i = j + 1
        return spans

    def _accepted(self, word: _Word, context: _Context) -> bool:
        """Whether `word` may be a name right after a context phrase of strength `context`."""
        if word.key in self.PARTICLES or word.initial:
            return True
        if not word.capitalised:
            lists = self._lists
            return (
                self._is_name(word)
                and word.key not in lists.english
                and word.key not in lists.common
            )
        if context is _Context.TITLE:
            return True  # "Mr Brown", "Mrs Young"
        return self._is_name(word) or self._is_unknown(word)

    def _is_namelike(self, word: _Word) -> bool:
        return word.key not in self.PARTICLES and not word.initial

    def _at_pause(self, text: str, words: list[_Word], k: int) -> bool:
        """Whether word `k` ends a phrase: the text's end, punctuation, or "here", "and" ..."""
        rest = text[words[k].end :].lstrip(" \t")
        if not rest or rest[0] in ",.!?;:)\n\r-–—":
            return True
        return k + 1 < len(words) and words[k + 1].key in self.PAUSE_WORDS

    def _chain(
        self, text: str, words: list[_Word], i: int, j: int, run: list[_Word]
    ) -> tuple[int, int, float] | None:
        """The PERSON span, if any, for the listed names `words[i..j]` inside `run`."""
        chain = words[i : j + 1]
        names = [w for w in chain if self._is_namelike(w)]
        lists = self._lists
        given = [w for w in names if self._is_given(w)]
        if len(names) >= 2 and given:
            head, tail = names[0], names[1:]
            # People write the given name first; a surname-first pair without a comma is
            # more often a brand ("Villa Serena", "Blanc Rosé").
            if not self._is_given(head):
                return None
            product = head.key in lists.common and all(
                w.key in self.PRODUCT_WORDS or w.key in lists.common for w in tail
            )
            return None if product else (i, j, self.CHAIN_SCORE)
        if len(names) == 1 and chain[0].initial and self._listed(names[0], lists.last):
            return (i, j, self.CHAIN_SCORE)  # "J. Smith"
        if len(names) != 1 or not given or given[0].key in lists.common:
            return None
        name = given[0]
        if name.upper:
            return None
        # At a sentence start the capital says nothing, but a pause or a possessive does.
        if run == [name] and (
            not name.sentence_start or name.possessive or self._at_pause(text, words, j)
        ):
            return (i, j, self.ALONE_SCORE)
        following = words[j + 1] if j + 1 < len(words) else None
        if (
            following is not None
            and run[-1] is following
            and run[0] is chain[0]
            and following.capitalised
            and self._is_unknown(following)
        ):
            return (i, j + 1, self.ALONE_SCORE)  # a given name and an unlisted surname
        return None


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
            if _phone_matches(match.group("number"), self._phones):
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


def _patterns_over_ner(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """NER spans that overlap a pattern's finding of another kind give way to it.

    spaCy's small model runs digits together into long DATE_TIME or ORGANIZATION spans
    ("IBAN GB63BZUV...", "4982-7383-6027-6751"); a checked pattern (a card's Luhn digit, an
    IBAN's mod 97, a valid phone number) is the better witness, whatever the lengths.
    """
    ner = [r for r in results if _from_ner(r)]
    if not ner:
        return results
    patterns = [r for r in results if not _from_ner(r) and r.entity_type not in NER_ENTITIES]
    return [
        r
        for r in results
        if not (
            _from_ner(r)
            and any(
                p.start < r.end and r.start < p.end and p.entity_type != r.entity_type
                for p in patterns
            )
        )
    ]


def _names_over_ner(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """NER places, organisations, groups and dates that overlap a name with evidence give way.

    The small model often labels a name it has not seen as an organisation or a place ("Ask for
    <ORG>Karola</ORG>", "c/o <ORG>Jordan Hering</ORG>", "I'm <DATE>May</DATE>"). The name
    recognizer's evidence there is a context phrase ("ask for", "c/o", "I'm", "Thanks") or a
    listed given name followed by a surname, which is stronger than the small model's label. A
    listed given name alone (ALONE_SCORE) is no such evidence: "to the store in Florence" stays
    a place.
    """
    names = [
        r
        for r in results
        if r.entity_type == PERSON
        and r.score >= _PersonNameRecognizer.EVIDENCE_SCORE
        and _recognizer(r) == _PersonNameRecognizer.NAME
    ]
    if not names:
        return results
    return [
        r
        for r in results
        if not (
            _from_ner(r)
            and r.entity_type != PERSON
            and any(n.start < r.end and r.start < n.end for n in names)
        )
    ]


def _recognizer(result: RecognizerResult) -> str | None:
    metadata = result.recognition_metadata or {}
    return metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY)


def _from_ner(result: RecognizerResult) -> bool:
    metadata = result.recognition_metadata or {}
    return metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY) == NerRecognizer.NAME


def resolve_overlaps(results: list[RecognizerResult]) -> list[Finding]:
    # A span inside a longer one gives way to it whatever the scores, so that nothing of the
    # longer span stays in clear: "+49 176 6329535" is one phone number even though its last
    # ten digits also pass the NHS number check with a higher score.
    results = [
        r
        for r in results
        if not any(
            o.start <= r.start and r.end <= o.end and o.end - o.start > r.end - r.start
            for o in results
        )
    ]
    # Then strongest first: the higher score, then the longer span, then the earlier one.
    ranked = sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start))
    kept: list[RecognizerResult] = []
    for result in ranked:
        if all(result.end <= other.start or other.end <= result.start for other in kept):
            kept.append(result)
    kept.sort(key=lambda r: r.start)
    return [Finding(r.entity_type, r.start, r.end, r.score) for r in kept]


_POSTCODE = re.compile(
    r"(?:[A-Z]{1,2}-?)?\d{4,6}(?:-\d{3,4})?|\d{2}-\d{3}|[A-Z]\d{2}\s?[A-Z0-9]{4}|\d{4}\s?[A-Z]{2}"
)


def _postcodes_beside_places(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Postcodes written right before or after a street address or a town the guard found:
    "Rua Augusta 9, 77835-337 Lisboa", "Odense 5000". A bare number elsewhere is no postcode."""
    found = []
    for result in results:
        if result.entity_type not in ("STREET_ADDRESS", "LOCATION"):
            continue
        after = re.match(r"[ \t]*,?[ \t]*", text[result.end :])
        start = result.end + (after.end() if after else 0)
        match = _POSTCODE.match(text, start)
        if match and (match.end() == len(text) or not text[match.end()].isalnum()):
            found.append(RecognizerResult("ZIP_CODE", match.start(), match.end(), 0.5))
        before = re.search(
            rf"(?:^|[\s,(])({_POSTCODE.pattern})[ \t]*,?[ \t]*$", text[: result.start]
        )
        if before:
            start = before.start(1)
            found.append(RecognizerResult("ZIP_CODE", start, before.end(1), 0.5))
    return found


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
