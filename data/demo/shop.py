"""The shop's side of the demo world: the catalog's items and the offers on them.

Items take their numbers (price, margin, stock, age limit) and their order from the world's one
seeded stream, and their words (title, description, tags) from a second stream seeded from the
same seed, chosen from `catalog_vocab` so that a title, its category and its description agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
from catalog_vocab import ALCOHOL, CATEGORIES, Category, Kind

from store.schemas import Channel, Item, Offer

ITEMS_PER_CATEGORY = 86
OUT_OF_STOCK_SHARE = 0.07
DESCRIPTION_EXTRA_SHARE = 0.5  # share of descriptions that add a sentence about the category
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# The first catalog drew its words from the main stream: per category, a brand and an adjective
# out of 8 each, a material out of the first number here, a noun out of the second, a sentence
# out of 3 and tags out of the third. `_spend_first_catalog_draws` makes the same draws, so that
# every price, id, user and event drawn after them stays as committed (tests name demo users).
FIRST_CATALOG_DRAWS = {
    "running_shoes": (6, 8, 9), "outdoor_gear": (7, 8, 8), "kitchen": (7, 8, 8),
    "coffee_tea": (8, 8, 8), "wine": (8, 7, 8), "spirits": (7, 8, 8), "books": (6, 8, 8),
    "video_games": (6, 8, 8), "toys": (6, 8, 8), "beauty": (8, 8, 8), "electronics": (6, 8, 8),
    "home_decor": (8, 8, 8), "fitness": (6, 8, 8), "pet_supplies": (7, 8, 8),
}  # fmt: skip

# Offer themes: (title, categories, validity window). The four "broad" offers run on every
# channel with no age limit and together cover every non-alcohol category, so anyone can get one.
_REGULAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC))
WINDOWS = {
    "broad": _REGULAR,
    "regular": _REGULAR,
    "expired_winter": (
        datetime(2025, 11, 1, tzinfo=UTC),
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
    ),
    "expired_spring": (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC),
    ),
    "future": (datetime(2028, 1, 1, tzinfo=UTC), datetime(2028, 6, 30, 23, 59, 59, tzinfo=UTC)),
}
OFFER_PLAN: list[tuple[str, tuple[str, ...], str]] = [
    ("Home & Kitchen Days", ("kitchen", "home_decor", "coffee_tea"), "broad"),
    ("Active Season", ("running_shoes", "fitness", "outdoor_gear"), "broad"),
    ("Play & Read", ("books", "toys", "video_games"), "broad"),
    ("Care & Tech", ("beauty", "electronics", "pet_supplies"), "broad"),
    ("Coffee & Tea Week", ("coffee_tea",), "regular"),
    ("Wine Cellar Selection", ("wine",), "regular"),
    ("Spirits Tasting Club", ("spirits",), "regular"),
    ("Wine & Spirits Gift Box", ("wine", "spirits"), "regular"),
    ("Trail Ready", ("outdoor_gear",), "regular"),
    ("New Runner Bundle", ("running_shoes", "fitness"), "regular"),
    ("Cook Like a Chef", ("kitchen",), "regular"),
    ("Book Lovers", ("books",), "regular"),
    ("Gamer's Corner", ("video_games",), "regular"),
    ("Toy Box", ("toys",), "regular"),
    ("Glow Up", ("beauty",), "regular"),
    ("Gadget Drop", ("electronics",), "regular"),
    ("Cosy Home", ("home_decor",), "regular"),
    ("Home Gym", ("fitness",), "regular"),
    ("Happy Pets", ("pet_supplies",), "regular"),
    ("Morning Ritual", ("coffee_tea", "kitchen"), "regular"),
    ("Gift Guide", ("books", "toys", "beauty"), "regular"),
    ("Outdoor Family", ("outdoor_gear", "toys", "pet_supplies"), "regular"),
    ("Smart Home", ("electronics", "home_decor"), "regular"),
    ("Run & Recover", ("running_shoes", "beauty"), "regular"),
    ("Spring Trail Sale", ("outdoor_gear", "running_shoes"), "expired_spring"),
    ("Winter Reading", ("books",), "expired_winter"),
    ("2028 Preview", ("electronics", "video_games"), "future"),
]
# fmt: on


def pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    """One of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]


# Words read with "an" although they start with a consonant, or with "a" although they start
# with a vowel letter.
_AN = ("8", "11", "18", "XO", "LTE")
_A = ("one", "US", "UV")


def _article(word: str) -> str:
    if word.startswith(_A):
        return "A"
    return "An" if word.startswith(_AN) or word[:1].lower() in "aeiou" else "A"


def _capitalise(text: str) -> str:
    # Words with capitals of their own ("mAh", "PS5") are written as they are.
    return " ".join(w[:1].upper() + w[1:] if w.islower() else w for w in text.split())


def _slug(text: str) -> str:
    return text.lower().replace(" ", "-").replace("'", "")


def _price(rng: np.random.Generator, low: float, high: float) -> float:
    # Log-uniform, so cheap items outnumber expensive ones, with shop-like .99 endings.
    raw = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return round(max(round(raw) - 0.01, 1.99), 2)


def _spend_first_catalog_draws(
    rng: np.random.Generator, category: str, seen: set[tuple[int, ...]]
) -> None:
    """Draw from `rng` exactly what the first catalog's words drew, and throw it away."""
    materials, nouns, tags = FIRST_CATALOG_DRAWS[category]
    while True:
        key = tuple(int(rng.integers(n)) for n in (8, 8, materials, nouns))
        if key not in seen:
            seen.add(key)
            break
    if rng.random() < 0.7:
        rng.integers(3)
    rng.choice(tags, size=int(rng.integers(2, 6)), replace=False)


def _numbers(rng: np.random.Generator, category: str) -> dict[str, float | int]:
    """Price, margin, stock and age limit, drawn in the order the first catalog drew them."""
    min_age = 18 if category in ALCOHOL else 0
    if category == "video_games":
        min_age = int(rng.choice([0, 16, 18], p=[0.6, 0.2, 0.2]))
    return {
        "price": _price(rng, *CATEGORIES[category].price),
        "margin": round(float(rng.uniform(0.05, 0.6)), 2),
        "stock": 0 if rng.random() < OUT_OF_STOCK_SHARE else int(rng.integers(1, 501)),
        "min_age": min_age,
    }


def _words(
    words: np.random.Generator, category: Category, price: float, min_age: int, taken: set[str]
) -> dict[str, object]:
    """A title, description and tags for one item of a kind that fits its price and age limit."""
    kinds = [k for k in category.kinds if k.fits(price, min_age)]
    if not kinds:
        raise ValueError(f"no kind of {category.label} sells at {price} for ages {min_age}+")
    while True:
        kind: Kind = kinds[int(words.integers(len(kinds)))]
        brand = pick(words, kind.brands or category.brands)
        style, attribute = pick(words, kind.styles), pick(words, kind.attributes)
        title = f"{brand} {_capitalise(f'{style} {attribute} {kind.noun}')}"
        if title not in taken:
            taken.add(title)
            break
    # "Wireless over-ear headphones from ...", but "A wireless speaker from ...".
    article = "" if kind.noun.endswith("s") else f"{_article(style)} "
    opening = f"{article}{style} {attribute} {kind.noun}"
    description = (
        f"{opening[:1].upper()}{opening[1:]} from {brand}, made for {kind.use}."
        f" {pick(words, kind.notes)}"
    )
    if words.random() < DESCRIPTION_EXTRA_SHARE:
        description += f" {pick(words, category.sentences)}"
    if min_age and category.label == "video games":
        description += f" Rated PEGI {min_age}."
    noun = _slug(kind.noun)
    pool = [tag for tag in dict.fromkeys(kind.tags + category.tags) if tag != noun]
    chosen = words.choice(len(pool), size=int(words.integers(2, 6)), replace=False)
    tags = [noun] + [pool[i] for i in sorted(chosen)]
    return {"title": title, "description": description, "tags": tags}


def make_items(rng: np.random.Generator, words: np.random.Generator) -> list[Item]:
    """Distinct, coherent items in a shuffled order, ids assigned after shuffling.

    `rng` is the world's stream (numbers and order), `words` the stream the words come from.
    """
    drafts: list[dict[str, object]] = []
    for name, category in CATEGORIES.items():
        seen: set[tuple[int, ...]] = set()
        titles: set[str] = set()
        for _ in range(ITEMS_PER_CATEGORY):
            _spend_first_catalog_draws(rng, name, seen)
            numbers = _numbers(rng, name)
            text = _words(words, category, float(numbers["price"]), int(numbers["min_age"]), titles)
            drafts.append({**text, "category": name, **numbers})
    order = rng.permutation(len(drafts))
    return [Item(item_id=f"itm_{n:05d}", **drafts[i]) for n, i in enumerate(order, start=1)]


def _day(moment: datetime) -> str:
    return f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}"


def _phrase(categories: Iterable[str]) -> str:
    labels = [CATEGORIES[c].label for c in categories]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def make_offers(rng: np.random.Generator) -> list[Offer]:
    """Offers with human terms; most valid now, two expired, one not started yet."""
    offers = []
    for n, (theme, categories, window) in enumerate(OFFER_PLAN, start=1):
        start, end = WINDOWS[window]
        percent = int(rng.integers(5, 41))
        channels = list(Channel)
        if window != "broad":
            keep = rng.choice(len(channels), size=int(rng.integers(1, 5)), replace=False)
            channels = [channels[i] for i in sorted(keep)]
        min_age = 18 if ALCOHOL & set(categories) else 0
        terms = f"{percent}% off all {_phrase(categories)} until {_day(end)}."
        if start > _REGULAR[0]:
            terms += f" Starts {_day(start)}."
        if len(channels) < len(Channel):
            terms += f" Only via {_phrase_channels(channels)}."
        if rng.random() < 0.4:
            terms += f" Minimum order €{int(rng.choice([20, 30, 50]))}."
        if min_age:
            terms += " Customers must be 18 or over; ID may be checked on delivery."
        offers.append(
            Offer(
                offer_id=f"off_{n:03d}",
                title=f"{theme}: {percent}% off",
                terms=terms + " One use per customer.",
                discount_percent=percent,
                categories=list(categories),
                channels=channels,
                min_age=min_age,
                valid_from=start,
                valid_until=end,
                margin_weight=round(float(rng.uniform(0.5, 2.0)), 2),
                # A few offers are for English speakers only, one for the UK only.
                locales=["en-GB"] if n == 7 else (["en"] if n % 10 == 3 else []),
            )
        )
    return offers


def _phrase_channels(channels: list[Channel]) -> str:
    names = {"web": "our website", "app": "the app", "email": "email", "push": "push"}
    labels = [names[c.value] for c in channels]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]
