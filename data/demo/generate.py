"""Generate Attune's demo world: a catalog, offers, fake users and their behavioural events.

The demo, the evals and the benchmarks all need the same believable shop to work on: items whose
text is distinctive enough for retrieval, offers with real terms and age limits, users with
PII for the guard to find and consent to respect, and a few months of sessions with skewed item
popularity, anonymous visits that are later linked to a login, and minors who never buy wine.

Everything is drawn from one seeded `numpy` generator and seeded `Faker` instances, and all
dates are fixed (the reference day is 2026-11-23), so the same seed writes byte-identical files
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
from faker import Faker
from pydantic import BaseModel

from store.schemas import (
    Address,
    Channel,
    Event,
    EventType,
    Item,
    Offer,
    Profile,
    Purpose,
    UserRecord,
)

DEFAULT_SEED = 20261123
REFERENCE_DAY = date(2026, 11, 23)
WINDOW_START = datetime(2026, 8, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 20, tzinfo=UTC)

ITEMS_PER_CATEGORY = 86
N_USERS = 240
N_MINORS = 24
N_ANONYMOUS_VISITORS = 300
OUT_OF_STOCK_SHARE = 0.07
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
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Vocabulary:
    """Words one category's titles, descriptions and tags are built from."""

    label: str
    brands: str
    adjectives: str
    materials: str
    nouns: str  # "noun: what it is used for; ..."
    sentences: str
    tags: str
    price: tuple[float, float]


# fmt: off
CATEGORIES: dict[str, Vocabulary] = {
    "running_shoes": Vocabulary(
        "running shoes", "Stridewell|Aerolite|Trailhawk|Pacewise|Zephyr Run|Kinetica|Swiftfoot|Tempo Lab",
        "lightweight|cushioned|responsive|breathable|stability|carbon-plated|waterproof|neutral",
        "engineered mesh|recycled knit|Gore-Tex|foam-core|seamless|reflective",
        "road running shoe: daily road miles and tempo runs; trail running shoe: rocky trails and muddy descents; racing flat: race day and 10k personal bests; marathon trainer: long runs and marathon training; recovery shoe: easy runs and recovery days; track spike: sprint sessions on the track; walking shoe: brisk walks and commuting; minimalist shoe: natural, barefoot-style running",
        "The heel-to-toe drop and grippy outsole suit runners who log serious weekly mileage.|Available in half sizes with a roomy toe box for long-distance comfort.|A secure lockdown fit keeps your foot stable through every stride.",
        "running|jogging|marathon|trail|cushioning|sneakers|athletics|5k|10k", (55, 230)),
    "outdoor_gear": Vocabulary(
        "outdoor gear", "Northridge|Summitcraft|Wildpine|Cairn & Co|Alpenglow|Ridgeline|Basecamp|Tundra",
        "ultralight|insulated|waterproof|packable|four-season|rugged|windproof|compact",
        "ripstop nylon|down-filled|aluminium|merino|Gore-Tex|titanium|canvas",
        "hiking backpack: multi-day treks and summit pushes; two-person tent: wild camping and festival weekends; sleeping bag: cold nights under the stars; trekking poles: steep ascents and river crossings; headlamp: night hikes and early alpine starts; camping stove: hot meals at camp; rain jacket: staying dry on exposed ridges; water filter: safe drinking water from streams",
        "Tested in the Highlands and the Alps, it shrugs off wind, rain and rough handling.|Packs down small enough to clip onto any rucksack.|A smart pick for hikers, campers and backpackers heading off-grid.",
        "hiking|camping|outdoors|backpacking|mountaineering|trekking|adventure|waterproof", (15, 600)),
    "kitchen": Vocabulary(
        "kitchenware", "Cucina Forte|Hearth & Home|Bladeworks|Le Marmiton|Copperleaf|Stoneware Co|ChefLine|Panovo",
        "non-stick|professional|cast-iron|dishwasher-safe|induction-ready|forged|stackable|heavy-duty",
        "stainless steel|enamelled|carbon steel|bamboo|ceramic|copper|borosilicate glass",
        "frying pan: searing steaks and crisping vegetables; chef's knife: dicing, slicing and chopping; Dutch oven: slow-cooked stews and sourdough bread; stand mixer: baking cakes, kneading dough and whipping cream; cutting board: prepping meat and vegetables; saucepan: sauces, soups and boiling pasta; baking tray: roasting vegetables and baking cookies; food processor: chopping, pureeing and making pesto",
        "Even heat distribution means fewer hot spots and better browning on the hob.|Built for home cooks who want restaurant results in their own kitchen.|Easy to clean and made to last for years of daily cooking.",
        "cooking|cookware|baking|kitchen|chef|homecooking|utensils|bakeware", (8, 450)),
    "coffee_tea": Vocabulary(
        "coffee & tea", "Roastery Row|Kettle & Leaf|Morning Ritual|Bean Collective|Highland Brew|Jade Garden|Crema Nord|Teahouse 9",
        "single-origin|organic|fair-trade|dark-roast|smooth|aromatic|decaf|hand-picked",
        "Ethiopian|Colombian|Darjeeling|Assam|Sencha|Sumatran|Kenyan|Yunnan",
        "whole coffee beans: espresso and filter brewing; ground coffee: cafetière and drip coffee; loose-leaf tea: a calm afternoon cup; green tea: a light, grassy morning brew; espresso capsules: quick espresso at home; chai blend: spiced tea lattes; pour-over dripper: slow, clear filter coffee; cold brew kit: smooth iced coffee in summer",
        "Tasting notes of chocolate, citrus and caramel come through in every cup.|Roasted or blended in small batches and shipped within days for peak freshness.|Perfect for coffee lovers and tea drinkers who care where their brew comes from.",
        "coffee|tea|espresso|caffeine|barista|brewing|beans|latte", (4, 70)),
    "wine": Vocabulary(
        "wine", "Château Belrive|Casa Alta|Domaine Lefèvre|Villa Serena|Bodega Sol|Weingut Adler|Kloof Estate|Tenuta Rossa",
        "oak-aged|reserve|organic|crisp|full-bodied|late-harvest|vintage|estate-bottled",
        "Cabernet Sauvignon|Pinot Noir|Tempranillo|Sauvignon Blanc|Riesling|Merlot|Chardonnay|Malbec",
        "red wine: roast lamb, steak and hearty pasta; white wine: seafood, salads and summer evenings; rosé: long lunches in the sun; sparkling wine: celebrations and toasts; dessert wine: cheese boards and fruit tarts; wine gift set: birthdays and dinner-party gifts; magnum: big gatherings and holiday feasts",
        "Aromas of dark cherry, blackcurrant and a hint of vanilla lead to a long, dry finish.|Serve slightly chilled, or decant for thirty minutes to open up the bouquet.|Sold to adults 18 and over only; please drink responsibly.",
        "wine|vineyard|grape|sommelier|cellar|vintage|alcohol|pairing", (7, 120)),
    "spirits": Vocabulary(
        "spirits", "Glen Arran|Old Harbour|Copper Still|Juniper & Oak|Black Barrel|Casa Agave|Nordic Frost|Saint Croix",
        "small-batch|aged|smoky|double-distilled|cask-strength|smooth|spiced|premium",
        "single malt|rye|juniper|blue agave|sugar cane|sherry cask|bourbon cask",
        "whisky: slow sipping neat or with a drop of water; gin: classic gin and tonics; rum: tiki cocktails and dark 'n' stormies; tequila: margaritas and palomas; vodka: martinis and mixed drinks; cognac: after-dinner sipping; liqueur: dessert cocktails and coffee; bitters: stirring old fashioneds",
        "Matured in oak casks for a rich, warming finish with notes of toffee and spice.|A favourite of bartenders for cocktails and of collectors for sipping.|For adults 18 and over only; please enjoy responsibly.",
        "spirits|whisky|cocktails|distillery|liquor|alcohol|bar|mixology", (15, 250)),
    "books": Vocabulary(
        "books", "Lantern Press|Harbour Books|Quillfield|Penwright|Orchard House|Midnight Ink|Atlas & Page|Foxglove",
        "bestselling|illustrated|award-winning|gripping|annotated|heartwarming|collector's|pocket",
        "hardcover|paperback|large-print|box-set|special edition|first edition",
        "mystery novel: curling up with a page-turning whodunnit; cookbook: weeknight dinners and weekend baking; fantasy saga: losing yourself in epic worlds; biography: learning from remarkable lives; children's picture book: bedtime stories; science fiction novel: big ideas about the future; travel guide: planning your next city break; history book: understanding the past",
        "Readers and critics alike call it impossible to put down.|A thoughtful gift for book lovers and book clubs.|Printed on quality paper with a sewn binding that lasts.",
        "books|reading|novel|fiction|literature|bookclub|author|nonfiction", (6, 60)),
    "video_games": Vocabulary(
        "video games", "Pixelforge|Nova Studios|Redshift Games|Lumen Interactive|Arcadia|Ironclad|Byte Bandit|Starfall",
        "open-world|co-op|multiplayer|story-driven|retro|competitive|survival|remastered",
        "PS5|Xbox Series X|Nintendo Switch|PC|deluxe edition|collector's edition",
        "action RPG: hundreds of hours of questing and loot; racing game: split-screen races with friends; platformer: tight jumps and secret levels; shooter: fast online matches; strategy game: building empires turn by turn; sports game: seasons, transfers and online leagues; puzzle game: relaxing brain teasers; horror game: late-night scares",
        "Features online multiplayer, ranked modes and regular free updates.|Gamers praise its stunning graphics and responsive controls.|Includes a season pass and bonus in-game content.",
        "gaming|videogame|console|multiplayer|gamer|rpg|esports|controller", (15, 80)),
    "toys": Vocabulary(
        "toys", "Tinkertot|Wonderbox|Little Explorer|Brickhaven|Puddle & Pip|Toyland Works|Jolly Bear|Sprout",
        "educational|wooden|colourful|interactive|cuddly|glow-in-the-dark|magnetic|build-your-own",
        "beechwood|plush|recycled plastic|cardboard|silicone|felt",
        "building blocks set: creative construction play; teddy bear: bedtime cuddles; jigsaw puzzle: family puzzle afternoons; remote-control car: racing around the garden; dollhouse: imaginative role play; board game: family game nights; science kit: hands-on STEM experiments; marble run: learning cause and effect",
        "Safety-tested and suitable for children aged 3 and up.|Encourages creativity, problem solving and fine motor skills.|A favourite birthday and Christmas present for kids.",
        "toys|kids|children|play|games|gift|learning|family", (6, 150)),
    "beauty": Vocabulary(
        "beauty", "Lumière|Petal & Pure|Glowlab|Maison Rose|Verdant Skin|Aurelia|Dewdrop|Saltwater",
        "hydrating|vegan|fragrance-free|brightening|nourishing|long-wear|gentle|anti-ageing",
        "hyaluronic acid|vitamin C|shea butter|argan oil|retinol|aloe vera|niacinamide|rosehip",
        "face serum: a radiant, even complexion; moisturiser: soft skin through the day; cleanser: removing make-up and daily grime; lipstick: all-day colour; shampoo: shiny, healthy hair; sheet mask: a weekly spa moment at home; eye cream: puffiness and dark circles; body lotion: dry winter skin",
        "Dermatologist-tested and suitable for sensitive skin.|Cruelty-free, with no parabens or sulphates.|Apply morning and evening as part of your skincare routine.",
        "beauty|skincare|cosmetics|makeup|haircare|selfcare|glow|spa", (5, 95)),
    "electronics": Vocabulary(
        "electronics", "Voltara|Sonique|Pixelon|Arcwave|Nexon|Quanta|Lumio|Ampere",
        "wireless|noise-cancelling|4K|smart|portable|fast-charging|ultra-slim|Bluetooth",
        "aluminium|matte black|graphite|USB-C|OLED|water-resistant",
        "headphones: music and calls on the go; smartwatch: tracking steps, sleep and notifications; laptop: work, study and streaming; speaker: parties and outdoor listening; tablet: reading, drawing and video; power bank: charging phones while travelling; e-reader: reading hundreds of books on one charge; webcam: video calls and streaming",
        "Long battery life and quick pairing with iOS and Android devices.|Comes with a two-year warranty and free software updates.|Tech reviewers rate it highly for value, sound and build quality.",
        "electronics|tech|gadgets|wireless|audio|smart|battery|bluetooth", (15, 1500)),
    "home_decor": Vocabulary(
        "home decor", "Nordhaus|Linen & Loom|Oakhurst|Terracotta Lane|Maison Blanc|Driftwood|Velvet Moon|Hygge Home",
        "handmade|Scandinavian|minimalist|rustic|vintage-style|hand-woven|boho|mid-century",
        "linen|rattan|oak|ceramic|velvet|jute|brass|marble",
        "throw cushion: a cosy sofa corner; table lamp: warm evening light; wall mirror: brightening a hallway; area rug: grounding a living room; scented candle: relaxing evenings; vase: fresh flowers and dried stems; picture frame: family photos and prints; wall clock: a statement kitchen wall",
        "Adds warmth and texture to living rooms, bedrooms and hallways.|Each piece is finished by hand, so no two are exactly alike.|Pairs well with neutral palettes and natural materials.",
        "homedecor|interior|decor|home|cosy|livingroom|design|furnishing", (8, 350)),
    "fitness": Vocabulary(
        "fitness equipment", "IronPeak|FlexCore|Pulse Athletics|Kettle Kings|Zenflow|Reprise|GymCraft|Vital Motion",
        "adjustable|non-slip|heavy-duty|foldable|resistance|premium|compact|shock-absorbing",
        "rubber-coated|cast iron|natural rubber|TPE|neoprene|steel",
        "dumbbell set: strength training at home; yoga mat: yoga, pilates and stretching; kettlebell: swings, squats and HIIT; resistance bands: mobility and physio exercises; exercise bike: indoor cardio sessions; foam roller: post-workout recovery; pull-up bar: upper-body training in a doorway; skipping rope: quick cardio warm-ups",
        "Built for daily home workouts and garage gyms.|Personal trainers recommend it for building strength and mobility.|A sturdy, grippy design keeps every rep safe.",
        "fitness|workout|gym|training|strength|yoga|cardio|exercise", (8, 700)),
    "pet_supplies": Vocabulary(
        "pet supplies", "Happy Paws|Whisker & Wag|Barkley|Purrfect|Tailwind|Meadow Pet|Fetch Co|Snout",
        "grain-free|orthopedic|chew-proof|washable|natural|interactive|reflective|vet-approved",
        "salmon|chicken|memory foam|hemp|rubber|fleece|lamb",
        "dog food: healthy, balanced daily meals; cat litter: odour control in multi-cat homes; dog bed: restful sleep for older dogs; scratching post: keeping claws off the sofa; dog lead: safe city walks; chew toy: teething puppies; pet carrier: vet visits and travel; aquarium filter: clear, healthy aquarium water",
        "Loved by dogs, cats and their owners alike.|Recommended by vets for pets of all ages and sizes.|Easy to clean and built to survive enthusiastic play.",
        "pets|dog|cat|puppy|kitten|petcare|animals|vet", (4, 150)),
}
ALCOHOL = frozenset({"wine", "spirits"})

# Offer themes: (title, categories, validity window). The four "broad" offers run on every
# channel with no age limit and together cover every non-alcohol category, so anyone can get one.
_REGULAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC))
WINDOWS = {
    "broad": _REGULAR, "regular": _REGULAR,
    "expired_winter": (datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)),
    "expired_spring": (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC)),
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


def _words(text: str, sep: str = "|") -> list[str]:
    return [word.strip() for word in text.split(sep)]


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _capitalise(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _token(rng: np.random.Generator, prefix: str, seen: set[str]) -> str:
    """A fresh random id such as `dev_3fa9c01d2b`, unique among `seen`."""
    while (token := f"{prefix}_{int(rng.integers(16**10)):010x}") in seen:
        pass
    seen.add(token)
    return token


def _price(rng: np.random.Generator, low: float, high: float) -> float:
    # Log-uniform, so cheap items outnumber expensive ones, with shop-like .99 endings.
    raw = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return round(max(round(raw) - 0.01, 1.99), 2)


def make_items(rng: np.random.Generator) -> list[Item]:
    """Distinct, category-flavoured items in a shuffled order, ids assigned after shuffling."""
    drafts: list[dict[str, object]] = []
    for category, vocab in CATEGORIES.items():
        brands, adjectives, materials = map(
            _words, (vocab.brands, vocab.adjectives, vocab.materials)
        )
        uses = dict(pair.split(": ") for pair in _words(vocab.nouns, ";"))
        sentences, tags = _words(vocab.sentences), _words(vocab.tags)
        titles: set[str] = set()
        while len(titles) < ITEMS_PER_CATEGORY:
            brand, adjective = _pick(rng, brands), _pick(rng, adjectives)
            material, noun = _pick(rng, materials), _pick(rng, list(uses))
            title = f"{brand} {_capitalise(f'{adjective} {material} {noun}')}"
            if title in titles:
                continue
            titles.add(title)
            description = (
                f"{_article(adjective)} {adjective} {material} {noun} from {brand},"
                f" made for {uses[noun]}."
            )
            if rng.random() < 0.7:
                description += " " + _pick(rng, sentences)
            extra = rng.choice(len(tags), size=int(rng.integers(2, 6)), replace=False)
            min_age = 18 if category in ALCOHOL else 0
            if category == "video_games":
                min_age = int(rng.choice([0, 16, 18], p=[0.6, 0.2, 0.2]))
            drafts.append(
                {
                    "title": title,
                    "description": description,
                    "category": category,
                    "tags": [noun.replace(" ", "-").replace("'", "")] + [tags[i] for i in extra],
                    "price": _price(rng, *vocab.price),
                    "margin": round(float(rng.uniform(0.05, 0.6)), 2),
                    "stock": 0 if rng.random() < OUT_OF_STOCK_SHARE else int(rng.integers(1, 501)),
                    "min_age": min_age,
                }
            )
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
        number, domain = int(rng.integers(1, 1000)), _pick(rng, list(EMAIL_DOMAINS))
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
            category = _pick(rng, list(persona.favourites))
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


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    lines = (
        json.dumps(r.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) for r in records
    )
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def generate(seed: int, out: Path) -> dict[str, int]:
    """Write the four files into `out` and return how many records each holds."""
    rng = np.random.default_rng(seed)
    items = make_items(rng)
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
