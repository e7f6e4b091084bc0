"""Writes `intl.jsonl`: a held-out labeled set for every entity type the PII guard detects.

Built before the guard's new recognizers were written, and never tuned on: its templates are
longer messages in other registers (support emails, forum posts, reviews, forms) than those of
`labeled.jsonl`, its people, addresses, companies, phone numbers and IBANs come from other
locales (Brazil, Poland, Australia, Ireland, Hungary, Romania, Denmark, Mexico, Indonesia,
Vietnam, New Zealand, Belgium, and phone numbers of twenty regions), and its cards include the
12- to 19-digit ranges (Maestro, 13- and 19-digit Visa, Diners). Everything is synthetic.

    python data/pii/build_intl.py [--out data/pii/intl.jsonl]

Span conventions: PERSON covers the name without a title; STREET_ADDRESS the street line (number
and street, with flat or unit), with the postcode a ZIP_CODE and the town a LOCATION of their own;
AGE the number with its words ("34 years old", "aged 34"); DATE_TIME an explicit date or clock
time (not "tomorrow"); ORGANIZATION a company named as an employer, bank, courier or seller (a
brand named as a product's make is not labelled); NRP a nationality, religion or political group.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType

PART = "heldout-intl"
SEED = 2026
SIZE = 400
NEGATIVE_SHARE = 0.25
LOWERCASE_SHARE = 0.12
LOCALES = (
    "pt_BR",
    "pl_PL",
    "en_AU",
    "en_IE",
    "hu_HU",
    "ro_RO",
    "da_DK",
    "es_MX",
    "id_ID",
    "vi_VN",
    "en_NZ",
    "nl_BE",
)
IBAN_LOCALES = ("pl_PL", "pt_BR", "ro_RO", "da_DK", "en_IE", "nl_BE")
PHONE_REGIONS = (
    "BR", "PL", "AU", "IE", "HU", "RO", "DK", "MX", "ID", "VN", "NZ", "BE", "IN", "ZA", "JP",
    "SG", "CH", "AT", "SE", "NG",
)  # fmt: skip
CARD_TYPES = ("maestro", "visa13", "visa16", "visa19", "mastercard", "amex", "diners", "jcb16")
CITIES = [
    "Kraków", "Porto Alegre", "Cork", "Debrecen", "Cluj-Napoca", "Aarhus", "Guadalajara",
    "Surabaya", "Da Nang", "Wellington", "Ghent", "Brisbane", "Gdańsk", "Recife", "Galway",
    "Timișoara", "Odense", "Monterrey", "Bandung", "Hanoi", "Auckland", "Antwerp", "Perth",
    "Poznań", "Belo Horizonte",
]  # fmt: skip
COUNTRIES = [
    "Brazil", "Poland", "Australia", "Ireland", "Hungary", "Romania", "Denmark", "Mexico",
    "Indonesia", "Vietnam", "New Zealand", "Belgium", "Portugal", "Chile",
]  # fmt: skip
NRP = [
    "Brazilian", "Polish", "Hungarian", "Romanian", "Danish", "Mexican", "Indonesian",
    "Vietnamese", "Irish", "Muslim", "Catholic", "Jewish", "Hindu", "Sikh", "Buddhist",
    "Orthodox", "Protestant", "Republican", "Democrat", "Labour", "Green Party", "Evangelical",
]  # fmt: skip
BRANDS = ["Bosch", "Lego", "Samsung", "Ikea", "Philips", "Dyson", "Garmin", "Tefal", "Asus"]
PRODUCTS = [
    "cordless drill", "bamboo cutting board", "4K monitor", "espresso machine", "yoga mat",
    "kids' scooter", "wireless earbuds", "air fryer", "hiking boots", "standing desk",
    "baby monitor", "electric toothbrush", "gaming chair", "rice cooker",
]  # fmt: skip
COURIERS = ["DPD", "InPost", "Correios", "An Post", "PostNord", "Australia Post", "DHL Express"]
BANKS = ["Nubank", "PKO Bank Polski", "OTP Bank", "Banca Transilvania", "Danske Bank", "BBVA"]
US_DL_STATES = (("CA", "L7"), ("NY", "9"), ("FL", "L12"), ("TX", "8"), ("WA", "WDL"))

POSITIVE = [
    "Hello,\n\nI ordered a {product} on {date} and it still hasn't arrived. The address is "
    "{street}, {zip} {city}. Could you check with {courier}?\n\nThanks,\n{full}",
    "Hi team, my name is {full} and I'm writing from {country}. Can you ship to {city}?",
    "*hey so my mum {full} wants the {product} too, her number is {phone}",
    "Please deliver to: {full}, {street}, {city} {zip}. Phone: {phone}.",
    "I'm {age} and my grandson set up this account for me. My card is {card}.",
    "Review: bought this for my husband {first} ({age}), he loves it. Shipped fast to {city}!",
    "Refund to {iban} please (account holder {full}, {bank}).",
    "Invoice details\nCompany: {company}\nContact: {full}\nEmail: {email}\nTel: {phone}",
    "*is it ok if {first} collects it? she'll bring her driving licence {dl}",
    "For the age check I uploaded my driver's license, number {us_dl}, state {state}.",
    "Our shop https://{domain}/{path} resells your {product}s - can we get a wholesale price?",
    "Login from {ip} at {time} wasn't me! Please lock my account, {first}.",
    "As a {nrp} family we'd like to know whether the gift hamper has any pork products.",
    "I work at {company} in {city}; can the parcel go to the office on {date}?",
    "*contact me at {email} or whatsapp {phone} - {first}",
    "My daughter turns {age_n} on {date}, can you gift-wrap the {product}?",
    "Card {card}, expiry {expiry}, name on card {full}. Please charge the remaining balance.",
    "Hi! {full} from {company} here. Our IBAN changed to {iban}, please update your records.",
    "New address from {date}: {street}, {zip} {city}, {country}.",
    "Sent via {courier}, tracking says it's stuck in {city}. Could {first} at your depot look?",
    "Follow our unboxing at www.{domain} - we tagged {first} {last} in the video.",
    "My son is a {age_n}-year-old {nrp} boy who wants a {product} for Eid.",
    "Dear {title} {last},\nthank you for the quick reply on {date}. Kind regards, {full}",
    "*pls call {phone} after {time}, ask for {title} {last}",
    "Billing: {full} / {street} / {zip} {city} / {iban}",
    "I'm from {country}, {age} years old, and this is the third {product} that broke.",
    "The seller {company} ({domain}) never answered my emails to {email}.",
    "Dr. {last} recommended the {product} for my back; please send it to {street}.",
    "Someone in {city} used my card {card} on {date} at {time} - not me!!",
    "As a {nrp} voter I'm boycotting {brand} - please cancel my order and refund {iban}.",
    "Our {nrp} community centre in {city} would like 20 yoga mats; contact {full}, {phone}.",
    "Licence no. {dl} - is that enough for the age check, or do you need the photo too?",
    "Server logs show requests from {ip} and {ip6} hammering your checkout.",
    "*{first} {last} here lol, my new number is {phone}",
    "Ship to {first}'s place: {street}, {city}, postcode {zip}",
    "The invoice must show {company}, {street}, {zip} {city}, VAT contact {email}.",
    "We met your rep {full} at the fair in {city} on {date}.",
    "Please don't call {phone} anymore; use {phone2} or write to {email}.",
    "My wife ({age}) and I are {nrp}; does the jewellery have any religious symbols?",
    "Aged {age_n}, I struggle with the small buttons on the {product}.",
    "Portfolio: https://{domain} - I'm {full}, a freelance photographer in {city}.",
    "Pickup slot {date} {time}, name {full}, ID {dl}.",
]
NEGATIVE = [
    "Does the {brand} {product} come with a two-year warranty?",
    "The {product} measures 120 x 60 cm and weighs 14 kg, right?",
    "Order {order} arrived with the wrong colour, can I swap it?",
    "Is version 2.4.1 of the {brand} app compatible with Android 14?",
    "I paid {price} but the site now shows {price2} - price match?",
    "Tracking {tracking} hasn't moved for three days.",
    "Do you sell replacement filters for the {brand} {product}?",
    "The {product} for ages 3+ or is it ok for a toddler?",
    "How many watts does the {product} draw on the highest setting?",
    "Voucher code SPRING25 didn't work at checkout.",
    "Can I return the {product} after 30 days if it's unopened?",
    "Is the {product} in stock in size 42 and 44?",
    "Model number {sku} - is that the 2025 version?",
    "Five stars, the {product} is great value for money.",
    "*does the {product} fit in a carry-on bag??",
    "Batch {sku} of the {product} was recalled, is mine affected?",
    "Delivery window 2-4 working days or longer during sales?",
]


@dataclass
class Example:
    text: str = ""
    entities: list[dict[str, object]] = field(default_factory=list)

    def add(self, value: str, entity_type: str | None = None) -> None:
        if entity_type is not None:
            start = len(self.text)
            self.entities.append({"start": start, "end": start + len(value), "type": entity_type})
        self.text += value


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {}
        for locale in LOCALES:
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + sum(map(ord, locale)))
            self.fakers[locale] = fake
        self.us = Faker("en_US")
        self.us.seed_instance(seed)

    def example(self) -> Example:
        negative = self.rng.random() < NEGATIVE_SHARE
        template = self.rng.choice(NEGATIVE if negative else POSITIVE)
        chat = template.startswith("*")
        locale = self.rng.choice(LOCALES)
        fake = self.fakers[locale]
        person = (fake.first_name(), fake.last_name())
        state = self.rng.choice(US_DL_STATES)
        slots: dict[str, Callable[[Example], None]] = {
            "first": lambda e: e.add(person[0], "PERSON"),
            "last": lambda e: e.add(person[1], "PERSON"),
            "full": lambda e: e.add(f"{person[0]} {person[1]}", "PERSON"),
            "title": lambda e: e.add(self.rng.choice(("Mr", "Mrs", "Ms", "Dr.", "Prof."))),
            "street": lambda e: e.add(fake.street_address(), "STREET_ADDRESS"),
            "zip": lambda e: e.add(fake.postcode(), "ZIP_CODE"),
            "city": lambda e: e.add(self._city(fake), "LOCATION"),
            "country": lambda e: e.add(self.rng.choice(COUNTRIES), "LOCATION"),
            "phone": lambda e: e.add(self.phone(), "PHONE_NUMBER"),
            "phone2": lambda e: e.add(self.phone(), "PHONE_NUMBER"),
            "email": lambda e: e.add(self.email(person), "EMAIL_ADDRESS"),
            "card": lambda e: e.add(self.card(), "CREDIT_CARD"),
            "iban": lambda e: e.add(self.iban(), "IBAN_CODE"),
            "company": lambda e: e.add(fake.company(), "ORGANIZATION"),
            "bank": lambda e: e.add(self.rng.choice(BANKS), "ORGANIZATION"),
            "courier": lambda e: e.add(self.rng.choice(COURIERS), "ORGANIZATION"),
            "date": lambda e: e.add(self.date(), "DATE_TIME"),
            "time": lambda e: e.add(self.time(), "DATE_TIME"),
            "age": lambda e: e.add(self.age(), "AGE"),
            "age_n": lambda e: e.add(str(self.rng.randint(4, 89)), "AGE"),
            "nrp": lambda e: e.add(self.rng.choice(NRP), "NRP"),
            "dl": lambda e: e.add(self.uk_licence(person), "DRIVER_LICENSE"),
            "us_dl": lambda e: e.add(self.us_licence(state[1]), "DRIVER_LICENSE"),
            "state": lambda e: e.add(state[0]),
            "domain": lambda e: e.add(self.domain(person), "URL"),
            "path": lambda e: e.add(self.rng.choice(("shop", "about", "p/123", "en/home"))),
            "ip": lambda e: e.add(self.us.ipv4_public(), "IP_ADDRESS"),
            "ip6": lambda e: e.add(self.us.ipv6(), "IP_ADDRESS"),
            "expiry": lambda e: e.add(f"{self.rng.randint(1, 12):02d}/{self.rng.randint(26, 31)}"),
            "product": lambda e: e.add(self.rng.choice(PRODUCTS)),
            "brand": lambda e: e.add(self.rng.choice(BRANDS)),
            "order": lambda e: e.add(f"#{self.rng.randint(10**6, 10**8)}"),
            "tracking": lambda e: e.add(f"JJD{self.rng.randint(10**13, 10**14)}"),
            "sku": lambda e: e.add(f"{self.rng.choice('ABKX')}{self.rng.randint(100, 9999)}-EU"),
            "price": lambda e: e.add(
                f"{self.rng.randint(9, 499)},{self.rng.randint(0, 99):02d} zł"
            ),
            "price2": lambda e: e.add(
                f"{self.rng.randint(9, 499)}.{self.rng.randint(0, 99):02d} €"
            ),
        }
        # A template's URL is one span: "https://" and the path join the domain's span.
        example = Example()
        parts = list(string.Formatter().parse(template.lstrip("*")))
        for literal, slot, _, _ in parts:
            example.add(literal)
            if slot is not None:
                slots[slot](example)
        _join_urls(example)
        if chat and self.rng.random() < LOWERCASE_SHARE:
            example.text = "".join(c.lower() if len(c.lower()) == 1 else c for c in example.text)
        return example

    def _city(self, fake: Faker) -> str:
        return self.rng.choice(CITIES) if self.rng.random() < 0.7 else fake.city()

    def phone(self) -> str:
        region = self.rng.choice(PHONE_REGIONS)
        kind = self.rng.choice((PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE))
        example = phonenumbers.example_number_for_type(region, kind) or (
            phonenumbers.example_number(region)
        )
        national = phonenumbers.national_significant_number(example)
        for _ in range(200):
            keep = max(2, len(national) // 3)
            digits = national[:keep] + "".join(
                str(self.rng.randint(0, 9)) for _ in range(len(national) - keep)
            )
            number = phonenumbers.parse("+" + str(example.country_code) + digits, None)
            if phonenumbers.is_valid_number(number):
                break
        else:
            number = example
        style = self.rng.random()
        if style < 0.55:
            return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
        if style < 0.7:
            return phonenumbers.format_number(number, PhoneNumberFormat.E164)
        if style < 0.8:
            text = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            return "00" + text[1:]
        return phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)

    def email(self, person: tuple[str, str]) -> str:
        first, last = (_slug(p) for p in person)
        local = self.rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{last}{first[:3]}"))
        host = self.rng.choice(("gmail.com", "wp.pl", "uol.com.br", "bigpond.com", "freemail.hu"))
        return f"{local}{self.rng.choice(('', str(self.rng.randint(1, 99))))}@{host}"

    def card(self) -> str:
        number = self.us.credit_card_number(self.rng.choice(CARD_TYPES))
        if self.rng.random() < 0.5 and len(number) in (15, 16):
            groups = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)
            out, position = [], 0
            for size in groups:
                out.append(number[position : position + size])
                position += size
            return self.rng.choice((" ", "-")).join(out)
        return number

    def iban(self) -> str:
        value = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        if self.rng.random() < 0.5:
            return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def date(self) -> str:
        day, month, year = (
            self.rng.randint(1, 28),
            self.rng.randint(1, 12),
            self.rng.randint(2024, 2027),
        )
        months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]  # fmt: skip
        return self.rng.choice(
            (
                f"{day}/{month}/{year}",
                f"{year}-{month:02d}-{day:02d}",
                f"{day} {months[month - 1]} {year}",
                f"{months[month - 1]} {day}, {year}",
                f"{day}.{month:02d}.{year}",
            )
        )

    def time(self) -> str:
        hour, minute = self.rng.randint(7, 22), self.rng.choice((0, 15, 30, 45))
        if self.rng.random() < 0.5:
            return f"{hour:02d}:{minute:02d}"
        return f"{(hour - 1) % 12 + 1}{'' if not minute else f':{minute:02d}'}{'pm' if hour >= 12 else 'am'}"

    def age(self) -> str:
        n = self.rng.randint(16, 92)
        return self.rng.choice((f"{n} years old", f"{n} yrs old", f"aged {n}", f"{n} y/o"))

    def uk_licence(self, person: tuple[str, str]) -> str:
        surname = (_slug(person[1]).upper() + "99999")[:5]
        decade, year = self.rng.randint(4, 9), self.rng.randint(0, 9)
        month, day = self.rng.randint(1, 12) + self.rng.choice((0, 50)), self.rng.randint(1, 28)
        initials = (_slug(person[0])[:1].upper() + "9") if self.rng.random() < 0.7 else "AB"
        tail = f"{self.rng.randint(0, 9)}{self.rng.choice(string.ascii_uppercase)}"
        tail += self.rng.choice(string.ascii_uppercase)
        return f"{surname}{decade}{month:02d}{day:02d}{year}{initials}{tail}"

    def us_licence(self, shape: str) -> str:
        if shape == "WDL":
            return "WDL" + "".join(
                self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(9)
            )
        letters = self.rng.choice(string.ascii_uppercase) if shape.startswith("L") else ""
        count = int(shape.lstrip("L"))
        return letters + "".join(str(self.rng.randint(0, 9)) for _ in range(count))

    def domain(self, person: tuple[str, str]) -> str:
        tld = self.rng.choice(("com", "pl", "com.br", "com.au", "ie", "hu", "ro", "dk", "mx"))
        return f"{_slug(person[1])}-{self.rng.choice(('studio', 'shop', 'design', 'foto'))}.{tld}"


def _join_urls(example: Example) -> None:
    """Extend each URL span over a "https://" or "www." before it and a "/path" after it."""
    for entity in example.entities:
        if entity["type"] != "URL":
            continue
        start, end = int(entity["start"]), int(entity["end"])  # type: ignore[call-overload]
        for prefix in ("https://", "www."):
            if example.text[:start].endswith(prefix):
                start -= len(prefix)
        while (
            end < len(example.text)
            and not example.text[end].isspace()
            and example.text[end] not in ")"
        ):
            end += 1
        while example.text[end - 1] in ".,!?":
            end -= 1
        entity["start"], entity["end"] = start, end


def _slug(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c for c in kept.lower() if c.isascii() and c.isalpha()) or "user"


def build() -> list[dict[str, object]]:
    generator = Generator(SEED)
    rows = []
    for _ in range(SIZE):
        example = generator.example()
        rows.append({"text": example.text, "entities": example.entities, "part": PART})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "intl.jsonl")
    args = parser.parse_args()
    rows = build()
    args.out.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    print(f"{args.out}: {len(rows)} examples")


if __name__ == "__main__":
    main()
