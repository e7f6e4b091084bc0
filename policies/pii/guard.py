"""The PII guard: finds PII with Presidio and replaces it with the vault's placeholders.

Offline design. Presidio's defaults expect the `en_core_web_lg` spaCy model and would try to
download it; nothing may be downloaded here. When no model is installed the guard runs Presidio on
a blank English pipeline (a tokenizer, no NER; see `policies.pii.ner`), in a mode it reports as
degraded. Without NER, names are found three ways:
  * the subject's own profile values (`policies.pii.known`), matched per call by a recognizer
    that scores 1.0 (names on word boundaries, any case; the phone in any common format; the
    email in any case; street, postcode and the birth date in common formats);
  * other people's names by the person-name recognizer (`policies.pii.names`): given-name and
    surname lists shipped in `data/names/` (built from Faker's person providers by
    `data/names/build.py`), context words ("my name is", "Mr", "regards", "my sister") and
    capitals, with extra care for given names that are ordinary words ("Will", "May", "Grace").
    Its precision and recall are measured by the `pii` eval suite (`evals/suites/pii.yaml`);
    names absent from the lists are found from context only;
  * pattern recognizers (`policies.pii.patterns`, `policies.pii.stock`): email, phone (any
    "+CC" number and the national formats of the configured regions), credit card, IBAN, IP
    address, US SSN and UK NHS number, adjusted for a shop: the phone recognizer leaves alone
    numbers labelled as orders or invoices, the IBAN recognizer also reads lower case, and the
    card recognizer knows Mastercard's 2-series.
Places and organisations are missed in that mode. With an NER model the name lists are not used:
spaCy's PERSON and LOCATION take their place.

The registry is built by hand rather than from Presidio's defaults so that nothing on the request
path touches the network: the URL and email recognizers are subclasses whose `tldextract`
extractor reads only the suffix list bundled with the package and keeps no disk cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import cast

import regex
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import IpRecognizer, UsSsnRecognizer
from presidio_anonymizer import AnonymizerEngine, OperatorConfig
from presidio_anonymizer import RecognizerResult as AnonymizerSpan

from policies.pii.entities import (
    ALWAYS_REDACTED,
    DEFAULT_PHONE_REGIONS,
    DEFAULT_REDACTED,
    ENTITY_TYPES,
    FIRST_NAME,
    PERSON,
    PERSONAL_DETAIL,
)
from policies.pii.folding import fold
from policies.pii.known import NO_KNOWN_VALUES, KnownValues, known_value_recognizers
from policies.pii.lru import DigestLRU
from policies.pii.name_lists import NAMES_DIR, name_lists
from policies.pii.names import PersonNameRecognizer
from policies.pii.ner import (
    BLANK,
    FALLBACK_MODELS,
    NER_ENTITIES,
    NerRecognizer,
    Pipeline,
    load_pipeline,
    nlp_engine,
)
from policies.pii.patterns import (
    AgeRecognizer,
    CardRecognizer,
    DateTimeRecognizer,
    DriverLicenseRecognizer,
    RegionPhoneRecognizer,
    StreetAddressRecognizer,
    ZipCodeRecognizer,
)
from policies.pii.stock import (
    BisectingContextEnhancer,
    LowerCaseIbanRecognizer,
    NhsContextRecognizer,
    OfflineEmailRecognizer,
    OfflineUrlRecognizer,
)
from policies.pii.vault import Vault

__all__ = ["Finding", "PIIGuard", "Redacted", "resolve_overlaps"]


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
        screened: how many texts `screen` remembers the findings of.
        found: how many texts `find` remembers the recognizers' findings of (per analyzer).
    """

    LANGUAGE = "en"
    SCREENED = 4096
    FOUND = 4096

    def __init__(
        self,
        *,
        spacy_model: str = "en_core_web_lg",
        score_threshold: float = 0.4,
        names_dir: Path = NAMES_DIR,
        redact: Iterable[str] = DEFAULT_REDACTED,
        phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS,
        fallback_models: tuple[str, ...] = FALLBACK_MODELS,
        screened: int = SCREENED,
        found: int = FOUND,
    ) -> None:
        self.score_threshold = score_threshold
        unknown = sorted(set(redact) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"redact: unknown entity types {unknown}; use some of {ENTITY_TYPES}")
        self.redact = frozenset(redact) | ALWAYS_REDACTED
        pipeline = load_pipeline(spacy_model, fallback_models)
        self.degraded = pipeline.degraded
        self.mode = "blank" if pipeline.degraded else f"spacy:{pipeline.name}"
        lists = name_lists(Path(names_dir).resolve())
        iban = LowerCaseIbanRecognizer()
        recognizers: list[EntityRecognizer] = [
            OfflineEmailRecognizer(),
            RegionPhoneRecognizer(tuple(phone_regions), shadowing=iban),
            CardRecognizer(),
            iban,
            IpRecognizer(),
            UsSsnRecognizer(),
            NhsContextRecognizer(),
            OfflineUrlRecognizer(),
            StreetAddressRecognizer(),
            ZipCodeRecognizer(),
            AgeRecognizer(),
            DriverLicenseRecognizer(),
            DateTimeRecognizer(),
            PersonNameRecognizer(lists),
        ]
        recognizers = [r for r in recognizers if set(r.supported_entities) & self.redact]
        self._entities = sorted(self.redact)
        self._with_known = sorted(self.redact | {FIRST_NAME, PERSONAL_DETAIL})
        # Without the NER model's guesses (`find(statistical=False)`, the check of copy): the
        # same recognizers over a blank pipeline, which tokenizes as the model does (its lemmas
        # are off too) and runs no network, so a check of copy does not pay for NER it ignores.
        self._patterns = self._engine(recognizers, BLANK)
        self._analyzer = self._patterns
        if self.degraded is None:
            ner = NerRecognizer(lists.not_names, fold, lists.first | lists.last)
            if set(ner.supported_entities) & self.redact:
                recognizers = [*recognizers, ner]
            self._analyzer = self._engine(recognizers, pipeline)
        # The types each analyzer is asked for: only those it has a recognizer for. Presidio
        # warns on every call for each type asked of an analyzer with none (the blank one has no
        # NER: LOCATION, NRP), four to six lines a decision, and says it will refuse them.
        self._asked = {
            engine: sorted(self.redact & set(engine.get_supported_entities(self.LANGUAGE)))
            for engine in {self._patterns, self._analyzer}
        }
        self._anonymizer = AnonymizerEngine()
        # What the recognizers found in texts `screen` saw, by the text's digest: findings are a
        # pure function of the text and this guard's recognizers, which never change after
        # construction, so an entry cannot go stale (a changed policy builds a new guard).
        self._screened: DigestLRU[tuple[tuple[str, int, int, float], ...]] = DigestLRU(screened)
        # The same for `find`, per analyzer (with NER, and patterns only), with each finding's
        # recognizer, which the overlap rules read.
        self._found: dict[bool, DigestLRU[tuple[tuple[str, int, int, float, str | None], ...]]] = {
            statistical: DigestLRU(found) for statistical in (True, False)
        }
        self._warm_up()

    def forget(self) -> None:
        """Drop what `find` remembers, so that the next text is analyzed as if first seen (for
        benches that measure a query the guard has never seen)."""
        for found in self._found.values():
            found.clear()

    def _engine(self, recognizers: list[EntityRecognizer], pipeline: Pipeline) -> AnalyzerEngine:
        return AnalyzerEngine(
            registry=RecognizerRegistry(recognizers, supported_languages=[self.LANGUAGE]),
            nlp_engine=nlp_engine(pipeline, self.LANGUAGE),
            context_aware_enhancer=BisectingContextEnhancer(),
            supported_languages=[self.LANGUAGE],
            default_score_threshold=self.score_threshold,
        )

    def _entities_in(self, text: str, engine: AnalyzerEngine) -> list[str]:
        """The redacted types that `engine` recognizes and that could be in `text`: those whose
        recognizers need a character the text lacks, or more digits than it has, are left out,
        and Presidio then runs none of those recognizers (see `_NEEDS`). What they would have
        found is nothing, so the findings are the same."""
        asked = self._asked[engine]
        counted: dict[regex.Pattern[str], int] = {}
        for pattern, most in _MOST.items():
            # Counted once per pattern, and only as far as the largest count a gate asks for.
            counted[pattern] = sum(1 for _ in islice(pattern.finditer(text), most))
        absent = [needs for needs in _NEEDS if counted[needs.pattern] < needs.count]
        if not absent:
            return asked
        skipped = frozenset().union(*(needs.entities for needs in absent))
        return [entity for entity in asked if entity not in skipped]

    def find(
        self, text: str, known: KnownValues = NO_KNOWN_VALUES, *, statistical: bool = True
    ) -> list[Finding]:
        """The PII spans in `text`, in reading order.

        A span inside a longer one gives way to it; of other overlapping spans the stronger wins.
        With `statistical=False` the NER model's guesses are left out: only known values,
        patterns and the name lists count (the check of generated copy, whose catalog words NER
        reads as names and places).
        """
        if not text.strip():
            return []
        results = self._recognized(text, statistical)
        known_recognizers = known_value_recognizers(known)
        if known_recognizers:
            for recognizer in known_recognizers:
                results += recognizer.analyze(text, self._with_known, cast(NlpArtifacts, None))
            # What Presidio does with an ad hoc recognizer's results beside the others': a
            # span inside another of its type with no higher score goes. Dropping what it
            # dropped among the others' first changes nothing (the dropping span, or the one
            # that drops it, still drops it).
            results = EntityRecognizer.remove_duplicates(results)
        if not statistical:
            results = [r for r in results if not _from_ner(r)]
        if "ZIP_CODE" in self.redact:
            results += _postcodes_beside_places(text, results)
        return resolve_overlaps(_names_over_ner(_patterns_over_ner(results)))

    def _recognized(self, text: str, statistical: bool) -> list[RecognizerResult]:
        """What the registry's recognizers (and the NER model, when `statistical`) find in `text`,
        remembered by the text's keyed digest: a query or a message that comes again ("coffee",
        "a gift for my dad") costs a digest instead of a spaCy run. Findings are a pure function
        of the text and this guard's recognizers, which never change after construction, so an
        entry cannot go stale; the subject's own values are matched per call by the caller.
        """
        remembered = self._found[statistical]
        found = remembered.get(text)
        if found is None:
            analyzer = self._analyzer if statistical else self._patterns
            results = analyzer.analyze(
                text=text,
                language=self.LANGUAGE,
                entities=self._entities_in(text, analyzer),
                score_threshold=self.score_threshold,
            )
            found = tuple((r.entity_type, r.start, r.end, r.score, _recognizer(r)) for r in results)
            remembered.put(text, found)
        return [
            RecognizerResult(kind, start, end, score, recognition_metadata={_NAME_KEY: name})
            for kind, start, end, score, name in found
        ]

    def pseudonymize(
        self, text: str, *, known: KnownValues = NO_KNOWN_VALUES, vault: Vault
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
        self, text: str, known: KnownValues = NO_KNOWN_VALUES, *, statistical: bool = True
    ) -> list[str]:
        """The entity types of the PII in `text`, sorted; empty when there is none."""
        return sorted({f.entity_type for f in self.find(text, known, statistical=statistical)})

    def screen(self, text: str, known: KnownValues = NO_KNOWN_VALUES) -> list[str]:
        """`contains_pii(text, known, statistical=False)` for text that comes back again and again
        (catalog titles, offer terms, the offline writer's template words).

        The recognizers' findings are remembered by the text's digest (a bounded LRU that holds
        no text); only the subject's known values, which differ per request, are matched anew.
        Text a model wrote is new every time: check it with `contains_pii`.
        """
        if not text.strip():
            return []
        found = self._screened.get(text)
        if found is None:
            results = self._patterns.analyze(
                text=text,
                language=self.LANGUAGE,
                entities=self._entities_in(text, self._patterns),
                score_threshold=self.score_threshold,
            )
            if "ZIP_CODE" in self.redact:
                results += _postcodes_beside_places(text, results)
            found = tuple((r.entity_type, r.start, r.end, r.score) for r in results)
            self._screened.put(text, found)
        results = [RecognizerResult(kind, start, end, score) for kind, start, end, score in found]
        for recognizer in known_value_recognizers(known):
            results += recognizer.analyze(text, self._with_known, cast(NlpArtifacts, None))
        return sorted({f.entity_type for f in resolve_overlaps(results)})

    @property
    def screened(self) -> DigestLRU[tuple[tuple[str, int, int, float], ...]]:
        """The findings `screen` remembers (read-only use: its size, hits and misses)."""
        return self._screened

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


@dataclass(frozen=True)
class _Needs:
    """Entity types none of whose recognizers can match a text with fewer than `count` matches of
    `pattern`."""

    entities: frozenset[str]
    pattern: regex.Pattern[str]
    count: int = 1


# What the registry's recognizers of each type cannot match without (only types that no NER
# label maps to: the NER recognizer sees the same list of its own types). Every pattern of
# these recognizers has a `\d` outside any optional part (a house number, each postcode shape or
# the digit the postcode word's match must keep, an age), and some need more: a licence number
# two (its pattern's look-ahead), a phone number six (the recognizer skips a candidate with
# fewer), a US SSN nine and an NHS number ten (their patterns' digit groups), a card number
# twelve (the recognizer's length check); an IBAN starts with two ASCII letters and two digits
# (Presidio's pattern, case-sensitive, over the text whose lower-case IBANs were capitalised);
# an email has its "@"; a URL has the dot before its top-level domain; an IPv4 address has dots
# and an IPv6 address colons. Digits are counted with the `regex` module's `\d`, which Presidio's
# patterns use and which matches every digit `re`'s does (its Unicode tables are as new or
# newer), so a count is never lower than a recognizer's own. On a short request with a number
# ("a lego set for 8") this leaves out the phone, card, SSN, NHS and IBAN recognizers.
# `tests/test_pii_gates.py` checks each type's recognizers and that a trigger still fires.
_DIGIT = regex.compile(r"\d")
_NEEDS = (
    _Needs(frozenset({"STREET_ADDRESS", "ZIP_CODE", "AGE"}), _DIGIT),
    _Needs(frozenset({"DRIVER_LICENSE"}), _DIGIT, 2),
    _Needs(frozenset({"PHONE_NUMBER"}), _DIGIT, 6),
    _Needs(frozenset({"US_SSN"}), _DIGIT, 9),
    _Needs(frozenset({"UK_NHS"}), _DIGIT, 10),
    _Needs(frozenset({"CREDIT_CARD"}), _DIGIT, 12),
    _Needs(frozenset({"IBAN_CODE"}), regex.compile(r"[A-Za-z]{2}[0-9]{2}")),
    _Needs(frozenset({"EMAIL_ADDRESS"}), regex.compile("@")),
    _Needs(frozenset({"URL"}), regex.compile(r"\.")),
    _Needs(frozenset({"IP_ADDRESS"}), regex.compile(r"[.:]")),
)
_MOST = {
    pattern: max(needs.count for needs in _NEEDS if needs.pattern is pattern)
    for pattern in {needs.pattern for needs in _NEEDS}
}


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
        and r.score >= PersonNameRecognizer.EVIDENCE_SCORE
        and _recognizer(r) == PersonNameRecognizer.NAME
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


_NAME_KEY = RecognizerResult.RECOGNIZER_NAME_KEY


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
