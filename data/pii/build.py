"""Build the PII guard's labeled set: messages a shopper types, with every piece of PII marked.

    python data/pii/build.py [--out data/pii/labeled.jsonl]

Each line is one message::

    {"text": "...", "entities": [{"start": 11, "end": 21, "type": "PERSON"}], "part": "dev"}

The types are PERSON, EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD and IBAN_CODE. A PERSON span
covers the name's words only: not a title ("Mr"), not a possessive "'s". A name inside an email
address is part of the EMAIL_ADDRESS, not a PERSON of its own. Everything else (products,
places, dates, order numbers, prices, SKUs, times) is unlabeled and must stay unflagged.

Three parts, told apart by `part`, made from disjoint template sets and their own seeds:

- `dev` (seed 1): templates `DEV_*`, names from Faker's en_GB, en_US and de_DE providers. The
  person-name recognizer was tuned on this part only.
- `heldout` (seed 2): templates `HELDOUT_*`, written separately, with their own products,
  brands and places; names from fr_FR, es_ES, it_IT and en_US. The recognizer's name lists hold
  these locales' names too, so this part measures how its rules carry to new sentences.
- `heldout-unseen-names` (seed 3): the held-out templates with names from locales whose names
  are mostly absent from the recognizer's lists (en_IN, nl_NL, tr_TR, yo_NG, en_KE, sv_SE,
  cs_CZ, fi_FI): what the recognizer finds from context alone.

Everything comes from seeded generators, so the same Faker version writes the same file.

One idea, one module, though long: most of its lines are the sentence templates of the parts,
which the writer below fills; split, the templates would be read without the rules that label
them. (The international held-out part, built from other sources, is `build_intl.py`.)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import phonenumbers
from faker import Faker
from phonenumbers import PhoneNumberFormat

PERSON, EMAIL, PHONE, CARD, IBAN = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
)
PARTS = (
    ("dev", 1, 420, ("en_GB", "en_US", "de_DE")),
    ("heldout", 2, 420, ("fr_FR", "es_ES", "it_IT", "en_US")),
    (
        "heldout-unseen-names",
        3,
        160,
        ("en_IN", "nl_NL", "tr_TR", "yo_NG", "en_KE", "sv_SE", "cs_CZ", "fi_FI"),
    ),
)
NEGATIVE_SHARE = 0.3  # share of messages drawn from the templates without PII
LOWERCASE_SHARE = 0.15  # share of chat-style messages typed all in lower case
COMMON_WORD_NAME_SHARE = 0.08  # share of given names that are also common words
COMMON_WORD_NAMES = (
    "Will", "Grace", "May", "Hope", "Rose", "Mark", "Bill", "Joy", "Holly", "Ruby", "Amber",
    "Jade", "Summer", "Dawn", "Penny", "Art", "Guy", "Miles", "Chase", "Hunter", "Jordan",
    "Paris", "Sydney", "Austin", "Chelsea",
)  # fmt: skip
PHONE_COUNTRIES = ("GB", "US", "DE", "FR")
PHONE_LOCALES = {"GB": "en_GB", "US": "en_US", "DE": "de_DE", "FR": "fr_FR"}
MOBILE_PREFIXES = {"GB": ("077", "078", "079", "075"), "DE": ("0151", "0160", "0170", "0176")}
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
CARD_TYPES = (("visa16", 40), ("mastercard", 35), ("amex", 15), ("discover", 5), ("jcb16", 5))
TITLES = ("Mr", "Mrs", "Ms", "Miss", "Dr", "Mr.", "Mrs.", "Dr.")
REFERENCE_DAY = date(2026, 11, 23)

# --- dev templates: tuned on ---------------------------------------------------------------
# A `*` before a template marks it as chat-style: it may be typed all in lower case.
DEV_POSITIVE = [
    "Hi, my name is {full} and I ordered {product} last week but it hasn't arrived.",
    "Hello, this is {full}. Can you change the delivery address on order {order}?",
    "Please send the invoice to {email}, thanks.",
    "You can reach me on {phone} after {time}.",
    "My card {card} was charged twice for {price}.",
    "Refund to IBAN {iban} please, account holder {full}.",
    "Dear Sir or Madam,\nI would like to return the {product}. Order {order}.\nKind regards,\n"
    "{full}",
    "Can {first} pick up the parcel for me? She has the order number {order}.",
    "I spoke to {first} on the phone yesterday and she said the refund would take 5 days.",
    "*Thanks {first}, that sorted it!",
    "Order for {title_last}, delivery to {place}.",
    "The gift is for my sister {full}, please don't include the receipt.",
    "Contact: {full}, {phone}, {email}",
    "Name: {full}\nEmail: {email}\nPhone: {phone}\nMessage: Where is my order {order}?",
    "{full} here - just checking on order {order}.",
    "Could you call me back on {phone}? Ask for {first}.",
    "I paid with my card, the full number is {card}, expiry {expiry}.",
    "*hi its {first} again, my email is {email}",
    "My husband {first} placed the order using {email}.",
    "Please update my phone number to {phone}.",
    "The package was signed for by {full} but I don't know who that is.",
    "Send the replacement to {title_full} at the same address.",
    "{full}'s account is locked, can you help?",
    "Bank details for the refund: {iban} ({full})",
    "I want to cancel the subscription for {email}. My phone is {phone}.",
    "*Hello {first}, thanks for your help earlier with the {product}.",
    "My daughter {first} loves the {product}, what size should I get for a 7 year old?",
    "Is {title_last} still working there? She helped me last time.",
    "Customer: {full}, card {card}, amount {price}.",
    "Cheers,\n{first}",
    "Could you ask {full} from your returns team to email me at {email}?",
    "*I'm {first} and I have a question about the {product}.",
    "Got a text from {phone} saying my parcel is delayed - is that you?",
    "Please charge {card} instead of the card on file.",
    "The IBAN {iban} belongs to my partner {full}.",
    "Write to me at {email} or {email2}.",
    "Please deliver to {full}, c/o {full2}.",
    "*My name's {first}, order {order}, it arrived broken.",
    "My mobile is {phone} and my landline is {phone2}.",
    "Regards, {title_full}",
    "Card number: {card}\nExpiry: {expiry}\nName on card: {full}",
    "Why was {card} declined? It worked last week.",
    "Can you refund to my bank instead? {iban}",
    "Please call {phone} or {phone2}, whichever works.",
]
DEV_NEGATIVE = [
    "Will this arrive before {date}?",
    "May I change the colour to {colour} after ordering?",
    "Do you have the {product} in {colour}?",
    "Order {order} was {price}, but the website now says {price2}.",
    "Is the Black Friday discount valid on the {product}?",
    "Hope you can help: SKU {sku} shows out of stock in {place}.",
    "Delivery slot between {time} and {time2} on {date} please.",
    "Grace period for returns is 30 days, right?",
    "Mark as delivered but nothing arrived at my door.",
    "Bill me later option isn't showing at checkout.",
    "The Summer Sale ends on {date}, is that correct?",
    "I'm looking for a Rose Gold watch strap under {price}.",
    "My order {order} ships from {place} - how long to {place2}?",
    "Earl Grey tea, 250g, is it loose leaf?",
    "Can I return the {product} to the store in {place}?",
    "Tracking number {tracking} hasn't updated since {date}.",
    "Will the {product} fit a {size}?",
    "The {brand} jacket I bought in {place} has a broken zip.",
    "Invoice {invoice} dated {date}, total {price}.",
    "New Year offer code NY2026 didn't work on the {product}.",
    "EAN {ean} on the box doesn't match the website.",
    "Is the Valentine's Day gift box available until {date}?",
    "Ruby Red nail polish arrived as Coral Pink instead.",
    "Opening hours in {place} on Sunday? I want to come at {time}.",
]
DEV_PRODUCTS = [
    "Nike Air Max 90",
    "Apple Watch Series 9",
    "Samsung Galaxy S24",
    "Kindle Paperwhite",
    "Le Creuset casserole dish",
    "Dyson V15 vacuum",
    "Calvin Klein boxers",
    "Ralph Lauren shirt",
    "Hugo Boss suit",
    "Jack Wolfskin fleece",
    "Bose QuietComfort earbuds",
    "KitchenAid mixer",
    "PlayStation 5",
    "Nintendo Switch",
    "Instant Pot",
    "Fitbit Charge 6",
    "Adidas Ultraboost",
    "North Face parka",
]
DEV_BRANDS = ["Barbour", "Columbia", "Patagonia", "Superdry", "Tommy Hilfiger", "Ted Baker"]
DEV_PLACES = [
    "London",
    "Manchester",
    "Leeds",
    "Bristol",
    "Glasgow",
    "Berlin",
    "Munich",
    "Hamburg",
    "Paris",
    "Lyon",
    "Madrid",
    "Barcelona",
    "Milan",
    "Rome",
    "New York",
    "Chicago",
    "Boston",
    "Seattle",
]
DEV_COLOURS = ["Rose Gold", "Jade Green", "Midnight Black", "Sky Blue", "Pearl White", "Amber"]

# --- held-out templates: written apart, never tuned on -------------------------------------
HELDOUT_POSITIVE = [
    "*hey, {first} {last} here. placed an order ({order}) on {date}, still nothing",
    "Could you forward this to {full}? Their email is {email}.",
    "Account holder: {full} / IBAN: {iban}",
    "I think {first} from your warehouse made a mistake with the size.",
    "Please ring {phone} (ask for {title_last}) between {time} and {time2}.",
    "{full} ({email}) wants to know if the voucher is still valid.",
    "We are {full} and {full2}, ordering a wedding gift for {first}.",
    "The payment with card number {card} failed, please retry.",
    "My old number was {phone}; the new one is {phone2}.",
    "Transfer the refund to {iban}, reference {order}.",
    "Best wishes from {full}",
    "Just to confirm: the parcel goes to {title_full}, not to me.",
    "Could {first} and {first2} both get a discount code?",
    "Texted {phone} three times, no answer.",
    "{email} is my new login, please update it.",
    "Last time {full} at the {place} store was really helpful.",
    "*Hello! Ordered a {product} for my son {first}, can it be gift wrapped?",
    "Is {first} available to take my call? I'm on {phone}.",
    "Sent from my phone\n{full}\n{phone}",
    "Paid by card {card} on {date}, amount {price}, still pending.",
    "*Hi there, it's {first} - quick question about the {product}",
    "Details - name: {full}; e-mail: {email}; tel: {phone}",
    "Please cancel. {title_full}",
    "My colleague {full} recommended your shop.",
    "*Thank you so much {first}!",
    "*my name is {full} and my card {card} got declined",
    "IBAN: {iban}\nBIC: {bic}\nName: {full}",
    "Ask {full} to call me on {phone} please",
    "The delivery driver, {first}, left it with my neighbour {full}.",
    "{first}, can you check order {order}? Thanks.",
    "Use the card ending in... no wait, here it is: {card}",
    "{card} exp {expiry} - please try this one",
    "Refund please to {iban} (account of {full})",
    "*please put the money back on {iban}",
    "Number for the courier: {phone}",
    "The direct debit should come from {iban}, not the old account.",
]
HELDOUT_NEGATIVE = [
    "Does the {product} come with a charger?",
    "Will you restock the {colour} version before {date}?",
    "Price match: {brand} sells it for {price}.",
    "Hope the {product} arrives before Christmas!",
    "Order {order} - SKU {sku} - qty 2 - {price}",
    "May delivery is fine, no rush.",
    "I live near {place}, is click and collect available there?",
    "Pickup at {time} on {date} at the {place} branch.",
    "Which is better, the {product} or the {product2}?",
    "The Jade Green and Olive colours are sold out.",
    "Reference number {invoice}, paid {price} on {date}.",
    "Mother's Day box: does it include the Rose Gold earrings?",
    "Can I use my loyalty card in {place}?",
    "Barcode {ean}, batch {sku}.",
    "Is the Apple Pencil compatible with the iPad Air?",
    "Delivered to the wrong flat in {place}, tracking {tracking}.",
    "Fits true to size? I'm usually a {size}.",
    "Autumn collection launches {date}, right?",
]
HELDOUT_PRODUCTS = [
    "iPhone 15 Pro Max",
    "Sony WH-1000XM5 headphones",
    "Levi's 501 jeans",
    "Hunter Original Tall wellies",
    "Barbour Beadnell jacket",
    "Lego Millennium Falcon",
    "Ninja Air Fryer",
    "Nespresso Vertuo",
    "Oral-B iO toothbrush",
    "Garmin Forerunner 265",
    "Victoria Plum bathroom cabinet",
    "Joules raincoat",
    "Tommy Hilfiger polo",
    "Charlotte Tilbury lipstick",
    "Kate Spade purse",
    "Ray-Ban Wayfarer",
    "Dr. Martens 1460 boots",
    "Paul Smith wallet",
]
HELDOUT_BRANDS = ["Argos", "Currys", "John Lewis", "Marks & Spencer", "Sainsbury's", "Boots"]
HELDOUT_PLACES = [
    "Florence",
    "Charlotte",
    "Victoria",
    "Sydney",
    "Austin",
    "Lincoln",
    "Chester",
    "Reading",
    "Bath",
    "Cologne",
    "Marseille",
    "Valencia",
    "Turin",
    "Naples",
    "Dallas",
    "Denver",
    "Phoenix",
    "Orlando",
]
HELDOUT_COLOURS = ["Olive", "Heather Grey", "Coral Pink", "Ruby Red", "Navy", "Ivory"]
SIZES = ["UK 8", "EU 42", "size M", "UK 10 / EU 38", "US 9"]


@dataclass
class Person:
    first: str
    last: str


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
    """Draws one part's messages from its templates, names and seeded generators."""

    def __init__(self, seed: int, name_locales: tuple[str, ...], heldout: bool) -> None:
        self.rng = random.Random(seed)
        self.names = [self._faker(locale, seed) for locale in name_locales]
        self.fakers = {
            locale: self._faker(locale, seed)
            for locale in sorted({*PHONE_LOCALES.values(), *IBAN_LOCALES})
        }
        if heldout:
            self.positive, self.negative = HELDOUT_POSITIVE, HELDOUT_NEGATIVE
            self.products, self.brands = HELDOUT_PRODUCTS, HELDOUT_BRANDS
            self.places, self.colours = HELDOUT_PLACES, HELDOUT_COLOURS
        else:
            self.positive, self.negative = DEV_POSITIVE, DEV_NEGATIVE
            self.products, self.brands = DEV_PRODUCTS, DEV_BRANDS
            self.places, self.colours = DEV_PLACES, DEV_COLOURS

    @staticmethod
    def _faker(locale: str, seed: int) -> Faker:
        fake = Faker(locale)
        fake.seed_instance(seed * 1000 + sum(map(ord, locale)))
        return fake

    def example(self) -> Example:
        templates = self.negative if self.rng.random() < NEGATIVE_SHARE else self.positive
        template = self.rng.choice(templates)
        chat = template.startswith("*")
        people = [self.person(), self.person()]
        slots: dict[str, Callable[[Example], None]] = {
            "first": lambda e: e.add(people[0].first, PERSON),
            "first2": lambda e: e.add(people[1].first, PERSON),
            "last": lambda e: e.add(people[0].last, PERSON),
            "full": lambda e: e.add(f"{people[0].first} {people[0].last}", PERSON),
            "full2": lambda e: e.add(f"{people[1].first} {people[1].last}", PERSON),
            "title_last": lambda e: self.titled(e, people[0].last),
            "title_full": lambda e: self.titled(e, f"{people[0].first} {people[0].last}"),
            "email": lambda e: e.add(self.email(people[0]), EMAIL),
            "email2": lambda e: e.add(self.email(people[1]), EMAIL),
            "phone": lambda e: e.add(self.phone(), PHONE),
            "phone2": lambda e: e.add(self.phone(), PHONE),
            "card": lambda e: e.add(self.card(), CARD),
            "iban": lambda e: e.add(self.iban(), IBAN),
            "product": lambda e: e.add(self.rng.choice(self.products)),
            "product2": lambda e: e.add(self.rng.choice(self.products)),
            "brand": lambda e: e.add(self.rng.choice(self.brands)),
            "place": lambda e: e.add(self.rng.choice(self.places)),
            "place2": lambda e: e.add(self.rng.choice(self.places)),
            "colour": lambda e: e.add(self.rng.choice(self.colours)),
            "size": lambda e: e.add(self.rng.choice(SIZES)),
            "date": lambda e: e.add(self.date()),
            "time": lambda e: e.add(self.time()),
            "time2": lambda e: e.add(self.time()),
            "price": lambda e: e.add(self.price()),
            "price2": lambda e: e.add(self.price()),
            "order": lambda e: e.add(self.order()),
            "invoice": lambda e: e.add(f"INV-{self.rng.randint(2024, 2026)}-{self._digits(5)}"),
            "sku": lambda e: e.add(self.sku()),
            "tracking": lambda e: e.add(self.tracking()),
            "ean": lambda e: e.add(self.ean()),
            "expiry": lambda e: e.add(f"{self.rng.randint(1, 12):02d}/{self.rng.randint(26, 31)}"),
            "bic": lambda e: e.add(self.bic()),
        }
        example = Example()
        for literal, slot, _, _ in string.Formatter().parse(template.lstrip("*")):
            example.add(literal)
            if slot is not None:
                slots[slot](example)
        if chat and self.rng.random() < LOWERCASE_SHARE:
            # Character by character, so that the offsets hold ("İ".lower() is two characters).
            example.text = "".join(c.lower() if len(c.lower()) == 1 else c for c in example.text)
        return example

    def titled(self, example: Example, name: str) -> None:
        """A title, then the name: only the name is the PERSON span."""
        example.add(self.rng.choice(TITLES) + " ")
        example.add(name, PERSON)

    def person(self) -> Person:
        fake = self.rng.choice(self.names)
        first = fake.first_name()
        if self.rng.random() < COMMON_WORD_NAME_SHARE:
            first = self.rng.choice(COMMON_WORD_NAMES)
        last = fake.last_name()
        if fake.locales[0] == "es_ES" and self.rng.random() < 0.4:
            last = f"{last} {fake.last_name()}"  # Spanish people often write both surnames
        return Person(first, last)

    def email(self, person: Person) -> str:
        first, last = _ascii(person.first), _ascii(person.last.split()[-1])
        fake = self.rng.choice(self.names)
        if self.rng.random() < 0.25:
            return fake.email()
        domain = self.rng.choice([fake.free_email_domain(), fake.domain_name(), "example.com"])
        local = self.rng.choice(
            [
                f"{first}.{last}",
                f"{first}{last}{self.rng.randint(1, 99)}",
                f"{first[0]}{last}",
                f"{first}_{last}",
                f"{first}+shop",
            ]
        )
        address = f"{local}@{domain}"
        return address.upper() if self.rng.random() < 0.05 else address

    def phone(self) -> str:
        country = self.rng.choice(PHONE_COUNTRIES)
        number = self._valid_phone(country)
        national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
        significant = phonenumbers.national_significant_number(number)
        code = number.country_code
        forms = [
            national,
            international,
            f"+{code}{significant}",
            f"00{code} {international.split(' ', 1)[1]}",
        ]
        if country == "US":
            area, rest = significant[:3], significant[3:]
            forms += [f"{area}-{rest[:3]}-{rest[3:]}", f"{area}.{rest[:3]}.{rest[3:]}"]
        else:
            trunk = national.replace(" ", "")
            forms += [trunk, f"+{code} (0){international.split(' ', 1)[1]}"]
            if country == "FR":
                forms.append(national.replace(" ", "."))
            if country == "DE":
                forms.append(national.replace(" ", "/", 1))
        return self.rng.choice(forms)

    def _valid_phone(self, country: str) -> phonenumbers.PhoneNumber:
        fake = self.fakers[PHONE_LOCALES[country]]
        while True:
            if country in MOBILE_PREFIXES and self.rng.random() < 0.5:
                prefix = self.rng.choice(MOBILE_PREFIXES[country])
                candidate = prefix + self._digits(11 - len(prefix))
            elif country == "FR" and self.rng.random() < 0.5:
                candidate = self.rng.choice(("06", "07")) + self._digits(8)
            else:
                candidate = re.split(r"x|ext", fake.phone_number())[0]
            try:
                number = phonenumbers.parse(candidate, country)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                number.extension = None
                return number

    def card(self) -> str:
        kinds, weights = zip(*CARD_TYPES, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        digits = self.rng.choice(list(self.fakers.values())).credit_card_number(card_type=kind)
        style = self.rng.random()
        if style < 0.35:
            return digits
        groups = (4, 6, 5) if len(digits) == 15 else (4,) * (len(digits) // 4)
        parts, start = [], 0
        for size in groups:
            parts.append(digits[start : start + size])
            start += size
        return ("-" if style < 0.5 else " ").join(parts)

    def iban(self) -> str:
        value = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        if self.rng.random() < 0.5:
            return value
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))

    def bic(self) -> str:
        letters = string.ascii_uppercase
        return "".join(self.rng.choice(letters) for _ in range(6)) + self._digits(2)

    def date(self) -> str:
        day = REFERENCE_DAY + timedelta(days=self.rng.randint(-60, 60))
        return self.rng.choice(
            [
                f"{day.day} {day:%B} {day.year}",
                f"{day:%B} {day.day}",
                f"{day:%d/%m/%Y}",
                f"{day.isoformat()}",
                f"{day:%A}",
                f"{day:%d.%m.}",
            ]
        )

    def time(self) -> str:
        hour = self.rng.randint(8, 20)
        return self.rng.choice(
            [f"{hour}:{self.rng.choice(['00', '15', '30', '45'])}", f"{hour % 12 or 12}pm"]
            if hour > 12
            else [f"{hour}:{self.rng.choice(['00', '30'])}", f"{hour}am"]
        )

    def price(self) -> str:
        amount = self.rng.randint(3, 400) + self.rng.choice([0, 0.49, 0.95, 0.99])
        return self.rng.choice(
            [f"£{amount:.2f}", f"${amount:.2f}", f"€{amount:.2f}", f"{amount:.2f} EUR"]
        ).replace(".00", "")

    def order(self) -> str:
        return self.rng.choice(
            [
                f"#{self._digits(7)}",
                f"{self._digits(8)}",
                f"ORD-{self.rng.randint(2024, 2026)}-{self._digits(5)}",
                f"A{self._digits(6)}",
                f"{self._digits(3)}-{self._digits(7)}-{self._digits(7)}",
            ]
        )

    def sku(self) -> str:
        letters = "".join(self.rng.choice(string.ascii_uppercase) for _ in range(3))
        return self.rng.choice(
            [
                f"{letters}-{self._digits(4)}-BLK",
                f"{self._digits(2)}-{self._digits(3)}-B",
                letters + self._digits(6),
            ]
        )

    def tracking(self) -> str:
        return self.rng.choice(
            [
                f"1Z{self._digits(3)}AA{self._digits(10)}",
                f"JD{self._digits(16)}",
                f"{self._digits(12)}",
                f"RM{self._digits(9)}GB",
            ]
        )

    def ean(self) -> str:
        digits = [int(d) for d in "400" + self._digits(9)]
        check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
        return "".join(map(str, digits)) + str(check)

    def _digits(self, n: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(n))


def _ascii(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z]", "", kept.lower()) or "user"


def build() -> list[dict[str, object]]:
    rows = []
    for part, seed, size, locales in PARTS:
        generator = Generator(seed, locales, heldout=part != "dev")
        for _ in range(size):
            example = generator.example()
            rows.append({"text": example.text, "entities": example.entities, "part": part})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "labeled.jsonl"
    )
    args = parser.parse_args()
    rows = build()
    args.out.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    print(f"{args.out}: {len(rows)} examples")


if __name__ == "__main__":
    main()
