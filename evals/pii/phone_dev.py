"""A development set for the phone recognizer: every region's example numbers, written the ways
people write them, in sentences, next to numbers that are no phones.

The held-out parts of `data/pii/` measure the guard and must not be tuned on; this set is what
the phone recognizer (`policies.pii.patterns.RegionPhoneRecognizer`) is tuned on instead. It is
built from the `phonenumbers` package's example number of each type (fixed line, mobile, toll
free, premium rate, shared cost, VoIP, personal, pager, UAN, voicemail) of every region it
knows and of its non-geographic codes, so every number is valid as written. Each is written in
forms people use (`FORMS`): E.164, international, national, RFC 3966, a leading 00, dashes,
dots, parentheses, "(0)", slashes, digits only, extensions ("ext. 12", "x12"). The numbers of the
guard's national regions (`DEFAULT_PHONE_REGIONS`) are written in every form, those of other
regions in `OTHER_FORMS` forms drawn at random, each in a sentence template drawn at random
(`TEMPLATES`, some with two numbers). Negatives (`NEGATIVES`) are messages with order and
invoice numbers, dates, times, prices, quantities, ISBNs, EANs, IMEIs, tracking numbers and
card numbers (marked `CREDIT_CARD`: a card must be caught as a card, not as a phone).

Scope: a number written with its country code ("+CC", "00CC", "tel:+CC") is in scope for every
region; a national form only for regions that share a country code with the guard's national
regions (`+1` covers Canada and the Caribbean through "US"). National forms of other regions
are in the set and reported apart (`national-other`), but no gate counts them: without a
country code, the guard reads national formats of its configured regions only.

Only `PHONE_NUMBER` and `CREDIT_CARD` spans are marked (names in the templates are not); the
file has the format of `data/pii/labeled.jsonl` (part `phone-dev`) plus, per line, `phones`:
the region, number type and form of each phone span in order, and `negative`: the kind of a
negative line.

    python -m evals.pii.phone_dev build     # (re)writes data/pii/phone_dev.jsonl
    python -m evals.pii.phone_dev measure   # the guard's recall and precision per form, region
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberFormat, PhoneNumberType
from phonenumbers.phonemetadata import PhoneMetadata

from policies.pii.entities import DEFAULT_PHONE_REGIONS

__all__ = [
    "FORMS",
    "NEGATIVES",
    "PATH",
    "SEED",
    "TEMPLATES",
    "PhoneSample",
    "build",
    "measure",
    "phone_samples",
]

PATH = Path(__file__).resolve().parents[2] / "data" / "pii" / "phone_dev.jsonl"
PART = "phone-dev"
SEED = 20261202
OTHER_FORMS = 3  # forms drawn per number of a region outside the national regions
NEGATIVE_LINES = 840

NUMBER_TYPES = {
    "fixed": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
    "premium": PhoneNumberType.PREMIUM_RATE,
    "shared": PhoneNumberType.SHARED_COST,
    "voip": PhoneNumberType.VOIP,
    "personal": PhoneNumberType.PERSONAL_NUMBER,
    "pager": PhoneNumberType.PAGER,
    "uan": PhoneNumberType.UAN,
    "voicemail": PhoneNumberType.VOICEMAIL,
}

# --- sentence templates (written before the guard was run on any of them) -------------------
# {phone} and {phone2} are numbers; {name}, {email}, {order}, {time}, {date} are filler.
TEMPLATES = (
    "Call me on {phone}.",
    "My number is {phone}",
    "{phone}",
    "{phone} is my mobile, text me there",
    "Please ring {phone} after 6pm.",
    "Tel: {phone}",
    "TEL.: {phone} | FAX: {phone2}",
    "Phone number: {phone} (evenings only)",
    "You can reach our office at {phone}, Monday to Friday.",
    "WhatsApp {phone} if the courier is late",
    "Best regards,\n{name}\n{phone}",
    "{name}\nMobile {phone}\n{email}",
    "Is this the right number? {phone}",
    "The delivery driver should call {phone} when he arrives at the gate.",
    "I tried to call you from {phone} but nobody answered.",
    "Order {order} - contact number {phone}",
    "Could the courier phone me ({phone}) before {time}?",
    "My husband's number is {phone}, mine is {phone2}.",
    "Numbers: {phone} / {phone2}",
    "{phone}, {phone2}",
    "new number -> {phone}",
    "please update contact details: {phone}; old one was {phone2}",
    "I am abroad until {date}, so use {phone} instead.",
    "Reach me at {phone} or by email.",
    "Your hotline {phone} never picks up!!",
    "if anything goes wrong just dial {phone}",
    "sms me on {phone} pls",
    "Leave the parcel with my neighbour and call {phone} to say so.",
    "Customer: {name}, {phone}, {email}",
    '"{phone}" is the number on my account',
    "The number on the invoice, {phone}, is wrong.",
    "Landline {phone}, mobile {phone2}.",
    "I'll be at {phone} all day tomorrow.",
    "ph. {phone}",
    "t: {phone}\ne: {email}",
    "Contact me - {phone} - any time after {time}.",
    "My friend gave me {phone} as your support line, is that correct?",
    "{name} ({phone}) will pick up order {order}.",
    "[{phone}]",
    "Number changed to {phone}!",
    "Can someone call me back? {phone}. Thanks, {name}",
    "Delivery note: ring the bell, if no answer call {phone} or {phone2}",
    "I got a missed call from {phone} about my refund.",
    "Fax: {phone}",
    "Emergency contact {name} on {phone}",
    "{name} - {phone}",
    "On {date} at {time} I called {phone} and waited 40 minutes.",
    "From: {name} <{email}>\nSent from {phone}",
)

# --- negatives: numbers that are no phone numbers ------------------------------------------
# (kind, template); the fields are filled by `_Filler`. {card} is marked CREDIT_CARD.
NEGATIVES = (
    ("order", "Order {d8} arrived broken."),
    ("order", "my order number is {d9}, where is it?"),
    ("order", "Order #{d7} and order #{d7} were both cancelled."),
    ("order", "Re: ORD-{year}-{d6}"),
    ("order", "Order no. 0{d9} was charged twice"),
    ("invoice", "Invoice no. 00{d8} is missing the VAT."),
    ("invoice", "invoice {year}-{d6} attached"),
    ("reference", "Payment reference {d4}-{d4}-{d4}"),
    ("tracking", "Tracking 00{d18} has not moved in a week."),
    ("tracking", "tracking number: {d12}"),
    ("sku", "SKU {d6}-{d3} is out of stock"),
    ("date", "Delivered on {date_iso}?"),
    ("date", "It should arrive by {date_dots}."),
    ("date", "booked for {date_slash} at {time}"),
    ("date", "Closed {date_dots} - {date_dots}"),
    ("date", "Your slot: {date_iso} {time}-{time}"),
    ("date", "Call me after {date_dots}, the number on file is right."),
    ("time", "Open {time} - {time}, Mon-Fri"),
    ("time", "Called {n} times between {time} and {time}."),
    ("time", "tel. hours {time}-{time}"),
    ("price", "It cost €{price} and now it's €{price}."),
    ("price", "Total: ${price_us}"),
    ("price", "{price_de} € for the phone is too much"),
    ("price", "I paid {big} {currency} for it"),
    ("quantity", "I need {n} x {n} ml bottles and {n} pcs of the {n} g pack."),
    ("quantity", "{big} steps tracked but the app shows {big}"),
    ("quantity", "The desk is {n} x {n} x {n} cm"),
    ("isbn", "ISBN {isbn13_dashed}"),
    ("isbn", "ISBN-13: {isbn13}"),
    ("isbn", "ISBN {isbn10_dashed} is the paperback"),
    ("isbn", "Do you stock {isbn13}?"),
    ("ean", "EAN {ean13}"),
    ("ean", "the barcode {ean13} scans as a different product"),
    ("imei", "my phone's IMEI is {imei}"),
    ("card", "Card {card} was declined"),
    ("card", "paid with {card}"),
    ("card", "my visa: {card}"),
    ("version", "Firmware {version} won't install on the phone"),
    ("coordinates", "Pickup point at {lat}, {lon}"),
    ("year", "works with models from {year}-{year}"),
    ("list", "Items {d5}, {d5}, {d5} are missing"),
    ("voucher", "Voucher code {d4}-{d4}-{d4} does not work"),
)

NAMES = (
    "Amira Haddad",
    "Tomasz Nowak",
    "Grace Okafor",
    "Lucía Fernández",
    "Jonas Weber",
    "Priya Raman",
    "Kenji Sato",
    "Chloé Martin",
    "Oliver Hughes",
    "Fatima Zahra",
)
EMAILS = ("amira.h@example.com", "tnowak@example.org", "grace.okafor@example.net", "jw@example.de")


@dataclass(frozen=True)
class PhoneSample:
    """One example number of a region: its region, type and parsed number."""

    region: str  # "001" for a non-geographic code (+800, +808, +870, ...)
    kind: str
    number: PhoneNumber


def phone_samples() -> list[PhoneSample]:
    """Every region's example number of each type, each number once per region."""
    samples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        seen: set[int | None] = set()
        for kind, number_type in NUMBER_TYPES.items():
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None and number.national_number not in seen:
                seen.add(number.national_number)
                samples.append(PhoneSample(region, kind, number))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            samples.append(PhoneSample("001", "non_geo", number))
    return samples


def _groups(text: str) -> list[str]:
    return re.findall(r"\d+", text)


def _international(number: PhoneNumber) -> tuple[str, str]:
    """The country code and the rest of the international format ("44", "20 7946 0000")."""
    written = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    code, _, rest = written[1:].partition(" ")
    return code, rest


def _national(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)


def _trunk(region: str) -> str | None:
    metadata = PhoneMetadata.metadata_for_region(region)
    return metadata.national_prefix if metadata is not None else None


def _with_trunk(sample: PhoneSample) -> str | None:
    """'+44 (0)20 7946 0000', where the national format starts with the trunk prefix 0."""
    code, rest = _international(sample.number)
    national = _national(sample.number)
    if _trunk(sample.region) != "0" or not national.startswith("0"):
        return None
    return f"+{code} (0){rest}"


def _paren_area(sample: PhoneSample) -> str | None:
    national = _national(sample.number)
    groups = _groups(national)
    if "(" in national or len(groups) < 2 or not national.startswith(groups[0]):
        return None
    return f"({groups[0]}) {' '.join(groups[1:])}"


# Each form: a name and how it writes a sample (None: the form does not apply). National forms'
# names start with "national".
FORMS: dict[str, Callable[[PhoneSample], str | None]] = {
    "e164": lambda s: phonenumbers.format_number(s.number, PhoneNumberFormat.E164),
    "international": lambda s: phonenumbers.format_number(
        s.number, PhoneNumberFormat.INTERNATIONAL
    ),
    "rfc3966": lambda s: phonenumbers.format_number(s.number, PhoneNumberFormat.RFC3966),
    "00-international": lambda s: "00" + "{} {}".format(*_international(s.number)),
    "00-e164": lambda s: "00" + phonenumbers.format_number(s.number, PhoneNumberFormat.E164)[1:],
    "international-dashes": lambda s: "+{} {}".format(
        _international(s.number)[0], "-".join(_groups(_international(s.number)[1]))
    ),
    "international-dots": lambda s: "+{} {}".format(
        _international(s.number)[0], ".".join(_groups(_international(s.number)[1]))
    ),
    "international-trunk": _with_trunk,
    "international-paren-area": lambda s: (
        "+{} ({}) {}".format(
            _international(s.number)[0],
            _groups(_international(s.number)[1])[0],
            " ".join(_groups(_international(s.number)[1])[1:]),
        )
        if len(_groups(_international(s.number)[1])) > 1
        else None
    ),
    "international-ext": lambda s: (
        phonenumbers.format_number(s.number, PhoneNumberFormat.INTERNATIONAL) + " ext. 12"
    ),
    "e164-x": lambda s: phonenumbers.format_number(s.number, PhoneNumberFormat.E164) + " x305",
    "national": lambda s: _national(s.number),
    "national-spaces": lambda s: " ".join(_groups(_national(s.number))),
    "national-dashes": lambda s: "-".join(_groups(_national(s.number))),
    "national-dots": lambda s: ".".join(_groups(_national(s.number))),
    "national-digits": lambda s: "".join(_groups(_national(s.number))),
    "national-paren-area": _paren_area,
    "national-slash": lambda s: (
        "{}/{}".format(_groups(_national(s.number))[0], "".join(_groups(_national(s.number))[1:]))
        if len(_groups(_national(s.number))) > 1
        else None
    ),
    "national-ext": lambda s: _national(s.number) + " ext 7",
    "national-x": lambda s: _national(s.number) + " x12",
}


def _reads_as(written: str, sample: PhoneSample) -> bool:
    """Whether `written` is the sample's number, valid, read as its region would read it."""
    text = "+" + written[2:] if written.startswith("00") else written
    text = text.removeprefix("tel:")
    region = None if text.startswith("+") else sample.region
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    return (
        number.country_code == sample.number.country_code
        and number.national_number == sample.number.national_number
        and phonenumbers.is_valid_number(number)
    )


def written_forms(sample: PhoneSample) -> dict[str, str]:
    """The forms that apply to a sample, each a distinct string that reads as its number."""
    forms: dict[str, str] = {}
    for name, form in FORMS.items():
        if name.startswith("national") and sample.region == "001":
            continue
        written = form(sample)
        if written and written not in forms.values() and _reads_as(written, sample):
            forms[name] = written
    return forms


def scope(region: str, form: str) -> str:
    """`international`, `national` (a national region's country code) or `national-other`."""
    if not form.startswith("national"):
        return "international"
    codes = {phonenumbers.country_code_for_region(r) for r in DEFAULT_PHONE_REGIONS}
    return "national" if phonenumbers.country_code_for_region(region) in codes else "national-other"


class _Filler:
    """The filler of templates and negatives, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(n))

    def field(self, name: str) -> tuple[str, str | None]:
        """A field's value and the entity type it is marked with (None: unmarked)."""
        rng = self.rng
        if re.fullmatch(r"d\d+", name):
            return str(rng.randint(1, 9)) + self.digits(int(name[1:]) - 1), None
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2019, 2027)
        values: dict[str, Callable[[], str]] = {
            "name": lambda: rng.choice(NAMES),
            "email": lambda: rng.choice(EMAILS),
            "order": lambda: str(rng.randint(1000000, 99999999)),
            "time": lambda: f"{rng.randint(7, 20):02d}:{rng.choice((0, 15, 30, 45)):02d}",
            "date": lambda: f"{day:02d}.{month:02d}.{year}",
            "date_iso": lambda: f"{year}-{month:02d}-{day:02d}",
            "date_dots": lambda: f"{day:02d}.{month:02d}.{year}",
            "date_slash": lambda: f"{month:02d}/{day:02d}/{year}",
            "year": lambda: str(year),
            "n": lambda: str(rng.randint(2, 250)),
            "big": lambda: f"{rng.randint(1, 999)},{self.digits(3)},{self.digits(3)}",
            "price": lambda: f"{rng.randint(1, 9)},{self.digits(3)}.{self.digits(2)}",
            "price_us": lambda: f"{rng.randint(10, 999)},{self.digits(3)}.{self.digits(2)}",
            "price_de": lambda: f"{rng.randint(1, 9)}.{self.digits(3)},{self.digits(2)}",
            "currency": lambda: rng.choice(("EUR", "USD", "GBP", "PLN", "INR")),
            "isbn13": lambda: _isbn13(self),
            "isbn13_dashed": lambda: _dashed_isbn13(_isbn13(self)),
            "isbn10_dashed": lambda: _isbn10(self),
            "ean13": lambda: _ean13("4" + self.digits(11)),
            "imei": lambda: _luhn_complete(rng.choice(("35", "86", "01")) + self.digits(12)),
            "version": lambda: ".".join(str(rng.randint(0, 30)) for _ in range(4)),
            "lat": lambda: f"{rng.uniform(-60, 60):.5f}",
            "lon": lambda: f"{rng.uniform(-170, 170):.5f}",
        }
        if name == "card":
            return _card(self), "CREDIT_CARD"
        return values[name](), None


def _luhn_complete(payload: str) -> str:
    total = 0
    for i, char in enumerate(reversed(payload)):
        value = int(char)
        if i % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return payload + str((10 - total % 10) % 10)


def _ean13(payload: str) -> str:
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(payload))
    return payload + str((10 - total % 10) % 10)


def _isbn13(filler: _Filler) -> str:
    return _ean13("978" + filler.digits(9))


def _dashed_isbn13(isbn: str) -> str:
    return f"{isbn[:3]}-{isbn[3]}-{isbn[4:6]}-{isbn[6:12]}-{isbn[12]}"


def _isbn10(filler: _Filler) -> str:
    payload = filler.digits(9)
    check = sum((10 - i) * int(c) for i, c in enumerate(payload)) % 11
    digit = (11 - check) % 11
    return f"{payload[0]}-{payload[1:4]}-{payload[4:9]}-{'X' if digit == 10 else digit}"


def _card(filler: _Filler) -> str:
    rng = filler.rng
    prefix, length = rng.choice((("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15)))
    number = _luhn_complete(prefix + filler.digits(length - len(prefix) - 1))
    style = rng.choice(("plain", "spaces", "dashes"))
    groups = (
        [number[:4], number[4:10], number[10:]]
        if length == 15
        else [number[i : i + 4] for i in range(0, 16, 4)]
    )
    return {"plain": number, "spaces": " ".join(groups), "dashes": "-".join(groups)}[style]


def _render(
    template: str, filler: _Filler, phones: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    """The template with its fields filled, and the marked spans (phones and cards)."""
    text, spans, position = "", [], 0
    for match in re.finditer(r"\{(\w+)\}", template):
        text += template[position : match.start()]
        name = match.group(1)
        if name in phones:
            value, kind = phones[name], "PHONE_NUMBER"
        else:
            value, marked = filler.field(name)
            kind = marked or ""
        if kind:
            spans.append({"start": len(text), "end": len(text) + len(value), "type": kind})
        text += value
        position = match.end()
    return text + template[position:], spans


def _phone_lines(rng: random.Random) -> Iterator[tuple[PhoneSample, str, str]]:
    """(sample, form, written) for every number: all forms for the national regions' numbers,
    `OTHER_FORMS` drawn at random for the others'."""
    for sample in phone_samples():
        forms = written_forms(sample)
        names = list(forms)
        if sample.region not in DEFAULT_PHONE_REGIONS:
            names = sorted(rng.sample(names, min(OTHER_FORMS, len(names))), key=list(forms).index)
        for name in names:
            yield sample, name, forms[name]


def build(seed: int = SEED) -> list[dict[str, Any]]:
    """The set's lines, in a fixed order: one per (number, form), then the negatives."""
    rng = random.Random(seed)
    filler = _Filler(rng)
    pairs = list(_phone_lines(rng))
    lines: list[dict[str, Any]] = []
    for sample, form, written in pairs:
        template = rng.choice(TEMPLATES)
        phones = {"phone": written}
        meta = [(sample, form)]
        if "{phone2}" in template:
            other, other_form, other_written = rng.choice(pairs)
            phones["phone2"] = other_written
            meta.append((other, other_form))
        text, spans = _render(template, filler, phones)
        lines.append(
            {
                "text": text,
                "entities": spans,
                "part": PART,
                "phones": [{"region": s.region, "type": s.kind, "form": f} for s, f in meta],
            }
        )
    for index in range(NEGATIVE_LINES):
        kind, template = NEGATIVES[index % len(NEGATIVES)]
        text, spans = _render(template, filler, {})
        lines.append({"text": text, "entities": spans, "part": PART, "negative": kind})
    return lines


def write(path: Path = PATH, seed: int = SEED) -> int:
    lines = build(seed)
    path.write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    return len(lines)


def load(path: Path = PATH) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


Span = tuple[str, int, int]  # entity type, start, end


@dataclass
class _Count:
    gold: int = 0
    found: int = 0
    covered: int = 0

    def row(self) -> dict[str, float]:
        return {
            "gold": self.gold,
            "recall": self.found / self.gold if self.gold else 1.0,
            "covered": self.covered / self.gold if self.gold else 1.0,
        }


def measure(find: Callable[[str], list[Span]], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Phone recall per scope, form, region and type, precision, and the misses.

    A phone is found when a PHONE_NUMBER finding overlaps it (the `pii` suite's rule) and
    covered when phone findings cover all its digits. A phone finding that overlaps no phone is
    a false positive (on a negative line: of that line's kind).
    """
    groups: dict[str, dict[str, _Count]] = defaultdict(lambda: defaultdict(_Count))
    predicted = hits = 0
    false_positives: dict[str, int] = defaultdict(int)
    missed: list[dict[str, Any]] = []
    wrong: list[dict[str, Any]] = []
    cards = cards_found = 0
    for line in lines:
        text = line["text"]
        findings = find(text)
        phones = [f for f in findings if f[0] == "PHONE_NUMBER"]
        gold = [e for e in line["entities"] if e["type"] == "PHONE_NUMBER"]
        for entity in line["entities"]:
            if entity["type"] == "CREDIT_CARD":
                cards += 1
                cards_found += any(
                    f[0] == "CREDIT_CARD" and f[1] < entity["end"] and entity["start"] < f[2]
                    for f in findings
                )
        for _, start, end in phones:
            predicted += 1
            if any(start < g["end"] and g["start"] < end for g in gold):
                hits += 1
            else:
                false_positives[line.get("negative", "positive line")] += 1
                wrong.append({"span": text[start:end], "text": text})
        for entity, meta in zip(gold, line.get("phones", []), strict=True):
            start, end = entity["start"], entity["end"]
            found = any(s < end and start < e for _, s, e in phones)
            digits = [i for i in range(start, end) if text[i].isdigit()]
            covered = all(any(s <= i < e for _, s, e in phones) for i in digits)
            where = scope(meta["region"], meta["form"])
            keys = {
                "all": "all",
                "scope": where,
                "form": meta["form"],
                "type": meta["type"],
                "region": meta["region"],
            }
            for group, key in keys.items():
                count = groups[group][key]
                count.gold += 1
                count.found += found
                count.covered += covered
            if not found and where != "national-other":
                missed.append({"span": text[start:end], **meta, "text": text})
    return {
        "precision": hits / predicted if predicted else 1.0,
        "predicted": predicted,
        "false_positives": dict(sorted(false_positives.items())),
        "card_recall": cards_found / cards if cards else 1.0,
        "groups": {g: {k: c.row() for k, c in sorted(v.items())} for g, v in groups.items()},
        "missed": missed,
        "wrong": wrong,
    }


def _guard_finder(statistical: bool) -> Callable[[str], list[Span]]:
    from policies.pii import PIIGuard
    from policies.pii.entities import ENTITY_TYPES

    guard = PIIGuard(redact=ENTITY_TYPES)

    def find(text: str) -> list[Span]:
        found = guard.find(text, statistical=statistical)
        return [(f.entity_type, f.start, f.end) for f in found]

    return find


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "measure"))
    parser.add_argument("--ner", action="store_true", help="measure with the NER model too")
    parser.add_argument("--misses", type=int, default=0, help="show this many misses")
    parser.add_argument("--json", type=Path, help="write the measures to this file")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"{write()} lines in {PATH}")
        return 0
    result = measure(_guard_finder(args.ner), load())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"precision {result['precision']:.4f} of {result['predicted']} phone findings")
    print(f"false positives: {result['false_positives']}; card recall {result['card_recall']:.4f}")
    for group in ("all", "scope", "type", "form", "region"):
        for key, row in result["groups"][group].items():
            if group != "region" or row["recall"] < 1.0:
                print(
                    f"{group:7} {key:26} n={row['gold']:5d} recall {row['recall']:.4f}"
                    f" covered {row['covered']:.4f}"
                )
    for miss in result["missed"][: args.misses]:
        print("MISSED", miss)
    for wrong in result["wrong"][: args.misses]:
        print("WRONG", wrong)
    return 0


if __name__ == "__main__":
    sys.exit(main())
