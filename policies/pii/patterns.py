"""The PII guard's own pattern recognizers: phone numbers of any region, cards, addresses,
postcodes, ages, driver licences and explicit dates.

Each is a small Presidio recognizer with its defaults as class constants. They are deterministic
and need no NER, so they work the same in the blank (degraded) mode. (Presidio's stock
recognizers that the guard adjusts are in `policies.pii.stock`.) The module is one idea at just
over 400 lines: the recognizers share the label rule that leaves order and invoice numbers alone,
and each is short; a module per recognizer would scatter that rule.
"""

from __future__ import annotations

import re
from typing import ClassVar, cast

from phonenumbers import Leniency, PhoneNumberMatcher
from phonenumbers.re_util import enable_pattern_cache
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

__all__ = [
    "AgeRecognizer",
    "CardRecognizer",
    "DateTimeRecognizer",
    "DriverLicenseRecognizer",
    "RegionPhoneRecognizer",
    "StreetAddressRecognizer",
    "ZipCodeRecognizer",
    "luhn_valid",
]

# Labels after which a number is what the label says, not a phone or a card number.
_NOT_PII_LABEL = re.compile(
    r"\b(?:order|invoice|ref|reference|tracking|sku|ean|gtin|upc|barcode|item|batch|receipt|"
    r"model|serial|part|article|art)"
    r"(?:\s*(?:no\.?|nr\.?|number|#|id))?(?:\s+(?:is|was))?\s*[:#]?\s*$",
    re.IGNORECASE,
)


# phonenumbers compiles its metadata's patterns per use through `re`, whose cache (512 entries)
# a dozen regions overflow: keep every one compiled once (a bounded set, fixed by the metadata).
enable_pattern_cache()


def _labelled(text: str, start: int) -> bool:
    return _NOT_PII_LABEL.search(text[max(0, start - 24) : start]) is not None


class RegionPhoneRecognizer(EntityRecognizer):
    """Phone numbers of any region `phonenumbers` knows, through its `PhoneNumberMatcher`.

    A number written with "+CC" or "00CC" is found whatever its region (the matcher reads it
    with the first region as default, whose international prefix is 00). Numbers in a national
    format are found for the `regions` given. Candidate runs of digits are cut out first and the
    matcher runs on each with every region, so that a dozen regions cost little more than one.
    Numbers right after a label such as "Order" or "Tracking" are left alone: order and invoice
    numbers with a leading zero parse as valid national numbers.

    With a dozen regions, some region reads almost any run of 9 to 12 digits as a valid national
    number (an IPv4 address, a Brazilian CPF, a booking reference). So a number without its
    country code must also be grouped the way its region writes numbers (`STRICT_GROUPING`:
    "06 12 37 38 51", "(201) 741-5537", or no separators at all), unless a phone word comes
    just before it ("tel", "call me on", "mobile:"), and an IP address is never a phone number.
    """

    ENTITY = "PHONE_NUMBER"
    SCORE = 0.75
    # A run of digits and separators on one line, long enough for two numbers side by side
    # ("0049 5034 501196 / 0033 1 56 06 75 03"), and an extension, which the card check ignores.
    _CANDIDATE = re.compile(
        r"(?:\+|\b00|\(|\b)\d(?:[\d\-./()]|[^\S\r\n\x85\u2028\u2029]){4,46}\d"
        r"(?P<extension>\s*(?:x|ext\.?)\s*\d{1,6})?"
    )

    _SSN = re.compile(r"\d{3}-\d{2}-\d{4}")  # a US SSN's shape, left to its own recognizer
    _OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    _IPV4 = re.compile(rf"\(?{_OCTET}(?:\.{_OCTET}){{3}}")  # "612.34.56.78" is a Spanish mobile
    # A date: day and month (either order) and a four-digit year, or an ISO date.
    _DATE = re.compile(
        r"(?:0?[1-9]|[12]\d|3[01])([./-])(?:0?[1-9]|[12]\d|3[01])\1(?:19|20)\d\d|"
        r"(?:19|20)\d\d([./-])(?:0?[1-9]|1[0-2])\2(?:0?[1-9]|[12]\d|3[01])"
    )
    # Words that announce a phone number, in the languages of Attune's shoppers.
    _CONTEXT = re.compile(
        r"(?i:\b(?:tel|tél|telf|phone|phoned|ph|call|calls|called|ring|rang|mobile|mob|cell|"
        r"cellphone|landline|fax|text|texted|sms|whatsapp|signal|dial|dialled|dialed|number|"
        r"num|no|nr|contact|reach|telefon|telefonnummer|handy|festnetz|téléphone|telephone|"
        r"portable|numéro|numero|número|teléfono|telefone|telemóvel|celular|móvil|movil|"
        r"cellulare|komórka|komorka|nummer|mobiel|puhelin)\b)[^\n\d]{0,20}$"
    )

    def __init__(
        self,
        regions: tuple[str, ...],
        leniency: int = Leniency.VALID,
        shadowing: EntityRecognizer | None = None,
    ) -> None:
        self.regions = tuple(regions) or ("GB",)
        self.leniency = leniency
        # The IBAN recognizer, whose checked findings hide the digit runs inside them (below).
        self.shadowing = shadowing
        super().__init__(supported_entities=[self.ENTITY], name="PhoneRecognizer")

    def _shadows(self, text: str, entities: list[str]) -> list[tuple[int, int]]:
        """Spans of the shadowing recognizer's certain findings in `text` (when the caller asked
        for its type, so that they are among the guard's findings too).

        A phone number strictly inside such a span cannot survive: the guard drops a span inside
        a longer one whatever the scores (`resolve_overlaps`), and Presidio keeps a checked IBAN
        (score 1.0) or a longer IBAN around it. The digit groups of an IBAN were a phone
        candidate tried in every region, which was two fifths of this recognizer's time on
        1,000-character messages and most of it on the slowest ones.
        """
        if self.shadowing is None:
            return []
        kinds = [kind for kind in self.shadowing.supported_entities if kind in entities]
        if not kinds:
            return []
        return [
            (found.start, found.end)
            for found in self.shadowing.analyze(text, kinds, cast(NlpArtifacts, None))
            if found.score >= EntityRecognizer.MAX_SCORE
        ]

    def load(self) -> None:
        """Nothing to load: phonenumbers reads its metadata lazily (warmed by the guard)."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: object = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        shadows: list[tuple[int, int]] | None = None
        for candidate in self._CANDIDATE.finditer(text):
            window = candidate.group()
            if self.shadowing is not None:
                if shadows is None:
                    shadows = self._shadows(text, entities)
                start, end = candidate.span()
                if any(a <= start and end <= b and b - a > end - start for a, b in shadows):
                    continue
            digits = re.sub(r"\D", "", window)
            if len(digits) < 6 or self._not_a_phone(window):
                continue
            international = window.startswith(("+", "00"))
            offset = candidate.start()
            extension = candidate.start("extension")
            number = re.sub(
                r"\D", "", text[offset : extension if extension >= 0 else candidate.end()]
            )
            if len(number) >= 12 and not international and number[0] != "0" and luhn_valid(number):
                continue  # a card number (no card starts with 0, many national numbers do)
            leniency = self.leniency
            if not international and not self._CONTEXT.search(text[max(0, offset - 40) : offset]):
                leniency = max(leniency, Leniency.STRICT_GROUPING)
            found: list[tuple[int, int]] = []
            for region in self.regions:
                found += [
                    (m.start, m.end)
                    for m in PhoneNumberMatcher(window, region, leniency=leniency)
                    if not (
                        not window.startswith(("+", "00"), m.start)
                        and _labelled(text, offset + m.start)
                    )
                    and not self._not_a_phone(m.raw_string)
                    and all(m.end <= start or end <= m.start for start, end in found)
                ]
                # A window may hold two numbers of different regions ("(212) 555-0187 / 0612
                # 373851"): the next regions read what the first ones left of it.
                if found and _digits_outside(window, found) < 6:
                    break
            results += [
                RecognizerResult(self.ENTITY, offset + start, offset + end, self.SCORE)
                for start, end in sorted(found)
            ]
        return results

    def _not_a_phone(self, written: str) -> bool:
        """An SSN, an IPv4 address or a date, which some region reads as a valid number."""
        return any(shape.fullmatch(written) for shape in (self._SSN, self._IPV4, self._DATE))


def _digits_outside(window: str, spans: list[tuple[int, int]]) -> int:
    return sum(
        char.isdigit() and not any(start <= i < end for start, end in spans)
        for i, char in enumerate(window)
    )


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class CardRecognizer(EntityRecognizer):
    """Payment card numbers of 12 to 19 digits that pass the Luhn check.

    Written whole or in groups of digits split by single spaces or dashes. A number must either
    start with an issuer prefix of the major networks (Visa, Mastercard including 2-series, Amex,
    Diners, Discover, JCB, Maestro, UnionPay, RuPay, Mir) or follow a card word ("card", "Visa",
    "CC"); numbers after an order, EAN or tracking label are left alone.
    """

    ENTITY = "CREDIT_CARD"
    SCORE = 0.6
    CONTEXT_SCORE = 0.9
    _NUMBER = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){11,18}(?![\w]|[.,/-]\d)")
    _ISSUER = re.compile(
        r"^(?:4|5[1-5]|222[1-9]|22[3-9]|2[3-6]|27[01]|2720|220[0-4]|3[47]|30[0-5]|36|38|39|"
        r"35(?:2[89]|[3-8])|6011|64[4-9]|65|62|60|81|82|50(?:18|20|38)|5893|6304|67(?:59|6[1-3]))"
    )
    _CONTEXT = re.compile(
        r"\b(?:card|cards|visa|mastercard|master card|amex|maestro|diners|discover|jcb|"
        r"cc|credit|debit|pan)\b[^.\n]{0,30}$",
        re.IGNORECASE,
    )

    def __init__(self) -> None:
        super().__init__(supported_entities=[self.ENTITY], name="CardRecognizer")

    def load(self) -> None:
        """Nothing to load."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: object = None
    ) -> list[RecognizerResult]:
        results = []
        for match in self._NUMBER.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if not 12 <= len(digits) <= 19 or not luhn_valid(digits):
                continue
            if _labelled(text, match.start()):
                continue
            context = self._CONTEXT.search(text[max(0, match.start() - 40) : match.start()])
            if context:
                results.append(
                    RecognizerResult(self.ENTITY, match.start(), match.end(), self.CONTEXT_SCORE)
                )
            elif self._ISSUER.match(digits):
                results.append(
                    RecognizerResult(self.ENTITY, match.start(), match.end(), self.SCORE)
                )
        return results


# Street types in the languages of Attune's shoppers, written before or after the street's name.
_SUFFIX_TYPES = (
    "street|st|road|rd|avenue|ave|av|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|"
    "terrace|tce|crescent|cres|close|cl|square|sq|parade|pde|highway|hwy|arcade|grove|gr|row|"
    "mews|gardens|gdns|walk|hill|park|circuit|cct|esplanade|quay|rise|vale|green|view|wynd|"
    "strasse|straße|str|weg|gasse|platz|allee|allé|ring|damm|ufer|vej|gade|gata|gatan|vägen|"
    "väg|veien|straat|laan|plein|gracht|kade|dreef|utca|út|útja|tér|körút|sor|köz|sétány"
)
_PREFIX_TYPES = (
    "rue|avenue|av\\.|boulevard|bd|chemin|impasse|allée|place|quai|route|cours|calle|c/|"
    "avenida|avda\\.?|paseo|plaza|carrer|camino|carretera|rua|travessa|largo|praça|alameda|"
    "rodovia|estrada|favela|via|viale|piazza|corso|vicolo|strada|calea|bulevardul|bd\\.|"
    "aleea|splaiul|șoseaua|soseaua|ul\\.|ulica|al\\.|aleja|os\\.|osiedle|pl\\.|plac|jl\\.|"
    "jalan|gg\\.|gang|đường|duong|phố|pho|số|ngõ|prolongación|calzada|privada|retorno|"
    "andador|circuito|cerrada|diagonal|periférico|boulevard"
)
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ0-9][\w'’.-]*"
# No house number starts with 0 or is cut out of a longer run of digits: "Please ring 07755
# 490315" and "ring 612 34 56 78" are phone numbers ("ring" is also a German street type).
_HOUSE = (
    r"(?!0)\d{1,5}[A-Za-z]?(?:\s?[-/]\s?\d{1,5}[A-Za-z]?)?(?:\.(?!\d))?"
    r"(?!\d|[-./]\d|\s\d+[\s\-./]\d)"
)


class StreetAddressRecognizer(PatternRecognizer):
    """A street line: a house number and a street whose name carries a street type.

    "221B Baker Street", "12 Rue de Rivoli", "Rua Augusta, 9", "ul. Kraszewskiego 36/08",
    "Hauptstraße 5", "Torve Allé 691", "Via Roma 10". The number is required on one side or the
    other, which keeps "Baker Street station" or "Oxford Road" alone out.
    """

    ENTITY = "STREET_ADDRESS"
    PATTERNS: ClassVar[list[Pattern]] = [
        # Number first: "221B Baker Street", "50 Breslin Street", "1/11 Nguyen Trai Road".
        Pattern(
            "number, name, street type",
            rf"\b{_HOUSE},?\s+(?:{_NAME_WORD}\s+){{0,4}}(?i:{_SUFFIX_TYPES})\b\.?",
            0.65,
        ),
        # Type first, number last: "Rua Augusta, 9", "ul. Kraszewskiego 36/08", "Via Roma 10".
        Pattern(
            "street type, name, number",
            rf"(?<![\w])(?i:{_PREFIX_TYPES})\s+(?:(?:de|da|do|dos|das|del|della|di|la|le|les|"
            rf"du|des|y|e){{0,1}}\s*{_NAME_WORD}\s*){{1,5}},?\s*(?:nº|n°|no\.?|nr\.?|#)?\s*"
            rf"{_HOUSE}",
            0.65,
        ),
        # Type first, number first: "12 rue de Rivoli", "5 Calle Mayor".
        Pattern(
            "number, street type, name",
            rf"\b{_HOUSE},?\s+(?i:{_PREFIX_TYPES})\s+(?:(?:de|da|do|del|di|la|le|du|des)\s+)?"
            rf"(?:{_NAME_WORD}\s*){{1,4}}",
            0.6,
        ),
        # A compound street name, then the number: "Hauptstraße 5", "Hídházai utca 139."
        Pattern(
            "name with street type, number",
            rf"\b(?:{_NAME_WORD}\s+)?[A-ZÀ-Þ][\w'’-]*(?i:strasse|straße|weg|gasse|platz|allee|"
            rf"vej|gade|gatan|vägen|straat|laan|plein|gracht)\s+{_HOUSE}|"
            rf"\b{_NAME_WORD}\s+(?:{_NAME_WORD}\s+)?(?i:{_SUFFIX_TYPES})\s+{_HOUSE}",
            0.6,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY, patterns=self.PATTERNS, name="StreetAddressRecognizer"
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        # A street line has a number and at least one letter of a name besides its type.
        return any(c.isdigit() for c in pattern_text) and sum(c.isalpha() for c in pattern_text) > 3


class ZipCodeRecognizer(PatternRecognizer):
    """Postcodes: UK and Canadian shapes on their own, others after a postcode word or a US state.

    A bare four- or five-digit number is a price, a year or a quantity far more often than a
    postcode; the guard adds such numbers only next to a street address or a place it found
    (see `PIIGuard.find`).
    """

    ENTITY = "ZIP_CODE"
    CONTEXT_WORDS = (
        r"post\s?code|postal\s?code|zip(?:\s?code)?|cep|plz|eircode|code\s+postal|"
        r"kod\s+pocztowy|cod\s+postal|irányítószám|postnummer|postnr|código\s+postal"
    )
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "UK postcode",
            r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)\s?\d[ABD-HJLNP-UW-Z]{2}\b",
            0.6,
        ),
        Pattern("Canadian postal code", r"\b[ABCEGHJ-NPRSTVXY]\d[A-Z]\s?\d[A-Z]\d\b", 0.5),
        Pattern("Irish Eircode", r"\b[AC-FHKNPRTV-Y]\d{2}\s?[AC-FHKNPRTV-Y0-9]{4}\b", 0.3),
        Pattern(
            "after a postcode word",
            rf"(?i:\b(?:{CONTEXT_WORDS})\b)\s*[:#]?\s*(?=[A-Z0-9])[A-Z0-9](?:[A-Z0-9 -]{{1,8}})"
            r"[A-Z0-9](?![\w-])",
            0.7,
        ),
        Pattern(
            "US state and ZIP",
            r"(?<=\b(?:AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|"
            r"MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY) )"
            r"\d{5}(?:-\d{4})?\b",
            0.6,
        ),
        Pattern("Brazilian CEP, Polish code", r"\b(?:\d{5}-\d{3}|\d{2}-\d{3})\b", 0.4),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY, patterns=self.PATTERNS, name="ZipCodeRecognizer"
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: object = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, None, regex_flags)
        # The context word is part of the match of the "after a postcode word" pattern: trim it.
        trimmed = []
        for result in results:
            span = text[result.start : result.end]
            word = re.match(rf"(?i:(?:{self.CONTEXT_WORDS}))\s*[:#]?\s*", span)
            if word:
                result.start += word.end()
            if not any(c.isdigit() for c in text[result.start : result.end]):
                continue
            trimmed.append(result)
        return trimmed


class AgeRecognizer(PatternRecognizer):
    """Ages written as ages: "34 years old", "a 7-year-old", "aged 67", "age: 40", "34 y/o"."""

    ENTITY = "AGE"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "number years old",
            r"\b\d{1,3}\s*(?:-|\s)?(?:years?|yrs?|yo|y)\.?\s*(?:-|\s)?(?:old|of\s+age)\b",
            0.7,
        ),
        Pattern("number-year-old", r"\b\d{1,3}-(?:year|yr|month)s?-old\b", 0.7),
        Pattern("number y/o", r"\b\d{1,3}\s?(?:y/o|yo|y\.o\.)(?!\w)", 0.6),
        Pattern(
            "aged number",
            r"(?i:\b(?:aged?|turns|turning|turned)\b)\s*:?\s*\d{1,3}\b(?![.,:/]\d)",
            0.6,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(supported_entity=self.ENTITY, patterns=self.PATTERNS, name="AgeRecognizer")

    def validate_result(self, pattern_text: str) -> bool | None:
        number = int(re.search(r"\d+", pattern_text).group())  # type: ignore[union-attr]
        return 0 < number <= 120


class DriverLicenseRecognizer(PatternRecognizer):
    """Driving licence numbers: the UK's 16-character DVLA number anywhere, any other after a
    licence word ("driver's license", "licence no.", "DL#", "Führerschein", "prawo jazdy")."""

    ENTITY = "DRIVER_LICENSE"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "UK DVLA number",
            r"\b[A-Z9]{5}\d[0156]\d[0-3]\d\d[A-Z9]{2}\d[A-Z]{2}(?:\s?\d{2})?\b",
            0.85,
        ),
        Pattern(
            "after a licence word",
            r"(?i:\b(?:driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|licen[cs]e|dl|"
            r"f[üu]hrerschein|permis\s+de\s+conduire|prawo\s+jazdy|cnh|carteira\s+de\s+motorista|"
            r"rijbewijs|k[öo]rkort|k[øo]rekort|patente|carn[eé]t?\s+de\s+conducir)\b)"
            r"(?:[^\n.]{0,25}?(?i:\b(?:no\.?|nr\.?|number|num|#|id)\b)?)?\s*[:#]?\s*"
            r"(?=[A-Z0-9-]*\d[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,19}\b",
            0.7,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY, patterns=self.PATTERNS, name="DriverLicenseRecognizer"
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: object = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        # Case-sensitive: a licence number is written in capitals and digits.
        results = super().analyze(text, entities, None, re.DOTALL | re.MULTILINE)
        kept = []
        for result in results:
            span = text[result.start : result.end]
            number = re.search(r"[A-Z0-9][A-Z0-9-]{4,19}$", span)
            if number is None:
                continue
            result.start = result.end - len(number.group())
            kept.append(result)
        return kept


class DateTimeRecognizer(PatternRecognizer):
    """Explicit dates and clock times, which spaCy's small model misses in some spellings."""

    ENTITY = "DATE_TIME"
    _MONTH = (
        r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
        r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
    )
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern("ISO date", r"\b(?:19|20)\d{2}-[01]\d-[0-3]\d\b", 0.6),
        Pattern("numeric date", r"\b[0-3]?\d[/.][01]?\d[/.](?:19|20)?\d{2}\b", 0.5),
        Pattern(
            "day month year",
            rf"\b[0-3]?\d(?:st|nd|rd|th)?\s+(?i:{_MONTH})\.?,?\s+(?:19|20)\d{{2}}\b",
            0.6,
        ),
        Pattern(
            "month day year",
            rf"(?i:\b{_MONTH})\.?\s+[0-3]?\d(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b",
            0.6,
        ),
        Pattern("clock time", r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?:\s?[ap]\.?m\.?)?\b", 0.5),
        Pattern("am/pm time", r"\b(?:1[0-2]|0?[1-9])(?::[0-5]\d)?\s?[ap]\.?m\b\.?", 0.5),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY, patterns=self.PATTERNS, name="DateTimeRecognizer"
        )
