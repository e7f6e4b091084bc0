"""Generate Attune's demo world: a catalog, offers, fake users and their behavioural events.

The demo, the evals and the benchmarks all need the same believable shop to work on: items whose
text is distinctive enough for retrieval, offers with real terms and age limits, users with
PII for the guard to find and consent to respect, and a few months of sessions with skewed item
popularity, anonymous visits that are later linked to a login, and minors who never buy wine.

The shop (items and offers) is made in `shop.py` from the words in `catalog_vocab.py`; this
module makes the people and their sessions and writes the files. Everything is drawn from one
seeded `numpy` generator (the items' words from a second one with the same seed) and seeded
`Faker` instances, and all dates are fixed (the reference day is 2026-11-23), so the same seed writes byte-identical files
on every machine and every day. That is what lets evals be compared run to run.

    python data/demo/generate.py [--seed 20261123] [--out data/demo]
"""

from __future__ import annotations

import argparse
import json
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from catalog_vocab import ALCOHOL, CATEGORIES
from faker import Faker
from pydantic import BaseModel
from shop import make_items, make_offers, pick

from store.schemas import Address, Event, EventType, Item, Profile, Purpose, UserRecord

DEFAULT_SEED = 20261123
REFERENCE_DAY = date(2026, 11, 23)
WINDOW_START = datetime(2026, 8, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 20, tzinfo=UTC)

N_USERS = 240
N_MINORS = 24
N_ANONYMOUS_VISITORS = 300
ZIPF_EXPONENT = 1.05
ANONYMOUS_START_SHARE = 0.15
FAVOURITE_SHARE = 0.8
CONSENT_RATES = {
    Purpose.personalization: 0.9,
    Purpose.profiling: 0.8,
    Purpose.email: 0.6,
    Purpose.push: 0.4,
    Purpose.llm_processing: 0.7,
}
LOCALES = {"en_GB": 0.7, "en_US": 0.1, "de_DE": 0.1, "fr_FR": 0.1}
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
# Sessions cluster in the evening, as they do in a real shop.
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 4, 4, 5, 6, 8, 9, 9, 8, 5, 2])
WORDS_STREAM = 1  # the items' words come from default_rng([seed, WORDS_STREAM])


@dataclass(frozen=True)
class Persona:
    """How one visitor behaves. Only the event simulation sees this; it is never written out."""

    user_id: str | None
    profile: Profile | None
    favourites: tuple[str, ...]
    price_sensitivity: float
    devices: tuple[str, ...]
    cookies: tuple[str, ...]  # one anonymous id per device
    sessions: int


def _token(rng: np.random.Generator, prefix: str, seen: set[str]) -> str:
    """A fresh random id such as `dev_3fa9c01d2b`, unique among `seen`."""
    while (token := f"{prefix}_{int(rng.integers(16**10)):010x}") in seen:
        pass
    seen.add(token)
    return token


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum()) or "user"


def _ages(rng: np.random.Generator) -> np.ndarray:
    """Ages on the reference day: a fixed number of minors, the youngest 14, the oldest 80."""
    adults = np.clip(np.round(rng.normal(41, 15, N_USERS - N_MINORS - 1)), 18, 80)
    minors = rng.integers(14, 18, N_MINORS - 1)
    return rng.permutation(np.concatenate([[14, 80], minors, adults]).astype(int))


def _email(rng: np.random.Generator, first: str, last: str, taken: set[str]) -> str:
    """An address at a reserved example domain, so no real mailbox can ever be hit."""
    while True:
        number, domain = int(rng.integers(1, 1000)), pick(rng, list(EMAIL_DOMAINS))
        email = f"{_ascii_slug(first)}.{_ascii_slug(last)}{number}@{domain}"
        if email not in taken:
            taken.add(email)
            return email


def _birth_date(rng: np.random.Generator, age: int) -> date:
    latest = REFERENCE_DAY.replace(year=REFERENCE_DAY.year - age)
    return latest - timedelta(days=int(rng.integers(0, 365)))


def make_users(rng: np.random.Generator, seed: int) -> tuple[list[UserRecord], list[Persona]]:
    """Fake but well-formed users, plus the hidden personas that drive their events."""
    fakers = {locale: Faker(locale) for locale in LOCALES}
    for faker in fakers.values():
        faker.seed_instance(seed)
    locales, weights = list(LOCALES), np.array(list(LOCALES.values()))
    users: list[UserRecord] = []
    personas: list[Persona] = []
    emails: set[str] = set()
    tokens: set[str] = set()
    for n, age in enumerate(_ages(rng), start=1):
        locale = locales[int(rng.choice(len(locales), p=weights))]
        fake, country = fakers[locale], locale[-2:]
        first, last = fake.first_name(), fake.last_name()
        profile = Profile(
            first_name=first,
            last_name=last,
            email=_email(rng, first, last, emails),
            phone=fake.phone_number(),
            birth_date=_birth_date(rng, int(age)),
            address=Address(
                street=fake.street_address().replace("\n", ", "),
                city=fake.city(),
                postcode=fake.postcode(),
                country=country,
            ),
            locale=locale.replace("_", "-"),
        )
        consent = {purpose: bool(rng.random() < rate) for purpose, rate in CONSENT_RATES.items()}
        user = UserRecord(user_id=f"u_{n:04d}", profile=profile, consent=consent)
        users.append(user)
        personas.append(_persona(rng, user.user_id, profile, tokens))
    return users, personas


def _persona(
    rng: np.random.Generator, user_id: str | None, profile: Profile | None, tokens: set[str]
) -> Persona:
    """Hidden tastes and habits; minors are not given a taste for alcohol."""
    age = profile.age_on(REFERENCE_DAY) if profile else None
    allowed = [c for c in CATEGORIES if not (age is not None and age < 18 and c in ALCOHOL)]
    favourites = rng.choice(allowed, size=int(rng.integers(2, 4)), replace=False)
    n_devices = 1 if user_id is None else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    sessions = int(rng.integers(1, 4)) if user_id is None else 1 + int(rng.poisson(rng.gamma(2, 5)))
    return Persona(
        user_id=user_id,
        profile=profile,
        favourites=tuple(str(c) for c in favourites),
        price_sensitivity=float(rng.beta(2, 2)),
        devices=tuple(_token(rng, "dev", tokens) for _ in range(n_devices)),
        cookies=tuple(_token(rng, "anon", tokens) for _ in range(n_devices)),
        sessions=sessions,
    )


class Catalog:
    """Items grouped by category, with Zipf-skewed popularity so a popularity baseline works."""

    def __init__(self, items: list[Item], rng: np.random.Generator) -> None:
        self.items = items
        weights = 1.0 / np.arange(1, len(items) + 1) ** ZIPF_EXPONENT
        weights = weights[rng.permutation(len(items))]
        self.members: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        totals = []
        for category in CATEGORIES:
            idx = np.array([i for i, item in enumerate(items) if item.category == category])
            self.members[category] = (idx, weights[idx] / weights[idx].sum())
            totals.append(weights[idx].sum())
        self.category_p = np.array(totals) / sum(totals)
        self.median_price = {
            c: float(np.median([items[i].price for i in idx]))
            for c, (idx, _) in self.members.items()
        }

    def pick(self, rng: np.random.Generator, persona: Persona) -> Item:
        if rng.random() < FAVOURITE_SHARE:
            category = pick(rng, list(persona.favourites))
        else:
            category = list(CATEGORIES)[int(rng.choice(len(CATEGORIES), p=self.category_p))]
        idx, p = self.members[category]
        return self.items[int(rng.choice(idx, p=p))]


Step = tuple[int, EventType, Item, float | None]  # (seconds into the session, type, item, value)


def _session_steps(
    rng: np.random.Generator, catalog: Catalog, persona: Persona, day: date
) -> list[Step]:
    """One browsing session: views, and for some views the click → cart → purchase funnel."""
    age = persona.profile.age_on(day) if persona.profile else None
    steps: list[Step] = []
    clock = 0
    for _ in range(1 + int(rng.poisson(6))):
        item = catalog.pick(rng, persona)
        steps.append((clock, EventType.view, item, None))
        if rng.random() < 0.35:
            clock += int(rng.integers(3, 25))
            steps.append((clock, EventType.click, item, None))
            # The cart checks age, so visitors of unknown age only get unrestricted items there.
            allowed = item.min_age == 0 or (age is not None and age >= item.min_age)
            keen = (
                0.3
                * (catalog.median_price[item.category] / item.price) ** persona.price_sensitivity
            )
            if item.stock > 0 and allowed and rng.random() < min(0.6, keen):
                clock += int(rng.integers(10, 120))
                steps.append((clock, EventType.add_to_cart, item, None))
                if persona.user_id is not None and rng.random() < 0.5:
                    clock += int(rng.integers(30, 300))
                    value = round(item.price * int(rng.integers(1, 4)), 2)
                    steps.append((clock, EventType.purchase, item, value))
        clock += int(rng.integers(15, 180))
    return steps


def _session_start(rng: np.random.Generator) -> datetime:
    # Sessions start by 18 Nov, a full day before the window closes, so even the longest one
    # ends inside it; and no event falls on a day before the one its age check used.
    day = int(rng.integers((WINDOW_END - WINDOW_START).days - 1))
    hour = int(rng.choice(24, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum()))
    return WINDOW_START + timedelta(days=day, hours=hour, seconds=int(rng.integers(3600)))


Row = tuple[datetime, EventType, str, float | None, str | None, str | None, str]


def _persona_rows(rng: np.random.Generator, catalog: Catalog, persona: Persona) -> list[Row]:
    rows: list[Row] = []
    for _ in range(persona.sessions):
        device = int(rng.integers(len(persona.devices)))
        start = _session_start(rng)
        steps = _session_steps(rng, catalog, persona, start.date())
        # Users sometimes browse anonymously and log in before they can check out. From the
        # login on, events carry both ids: that is how identity links are learned.
        login = 0
        if persona.user_id is None:
            login = len(steps)
        elif len(steps) > 1 and rng.random() < ANONYMOUS_START_SHARE:
            purchases = [i for i, step in enumerate(steps) if step[1] is EventType.purchase]
            login = int(rng.integers(1, (purchases[0] if purchases else len(steps) - 1) + 1))
        cookie = persona.cookies[device] if login else None
        for i, (offset, kind, item, value) in enumerate(steps):
            user = persona.user_id if i >= login else None
            ts = start + timedelta(seconds=offset)
            rows.append((ts, kind, item.item_id, value, user, cookie, persona.devices[device]))
    return rows


def make_events(
    rng: np.random.Generator, items: list[Item], personas: list[Persona]
) -> list[Event]:
    """Sessions of known users and of purely anonymous visitors, sorted by time."""
    catalog = Catalog(items, rng)
    tokens = {token for p in personas for token in (*p.devices, *p.cookies)}
    visitors = [_persona(rng, None, None, tokens) for _ in range(N_ANONYMOUS_VISITORS)]
    rows = [row for persona in personas + visitors for row in _persona_rows(rng, catalog, persona)]
    rows.sort(key=lambda row: row[0])  # A stable sort keeps generation order within a second.
    return [
        Event(
            event_id=f"evt_{n:06d}",
            type=kind,
            ts=ts,
            user_id=user,
            anonymous_id=cookie,
            device_id=device,
            item_id=item_id,
            value=value,
        )
        for n, (ts, kind, item_id, value, user, cookie, device) in enumerate(rows, start=1)
    ]


# Fields of the schemas that the demo world never sets (an event's attribution to a decision):
# left out rather than written as null, so that a new optional field does not rewrite the files.
UNSET_IN_DEMO = {"decision_id", "offer_id"}


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    lines = (
        json.dumps(
            {
                k: v
                for k, v in r.model_dump(mode="json").items()
                if not (k in UNSET_IN_DEMO and v is None)
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        for r in records
    )
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def generate(seed: int, out: Path) -> dict[str, int]:
    """Write the four files into `out` and return how many records each holds."""
    rng = np.random.default_rng(seed)
    items = make_items(rng, np.random.default_rng([seed, WORDS_STREAM]))
    offers = make_offers(rng)
    users, personas = make_users(rng, seed)
    events = make_events(rng, items, personas)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[BaseModel]] = {
        "items": list(items),
        "offers": list(offers),
        "users": list(users),
        "events": list(events),
    }
    for name, records in tables.items():
        write_jsonl(out / f"{name}.jsonl", records)
    return {name: len(records) for name, records in tables.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = generate(args.seed, args.out)
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"wrote {summary} to {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
