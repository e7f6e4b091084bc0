"""Build the name lists of the PII guard's person-name recognizer from Faker's person providers.

    python data/names/build.py [--out data/names]

Writes, one entry per line, sorted, with a comment header naming the source:

- `first_names.txt`, `last_names.txt`: every given name and surname of Faker's `en_GB`, `en_US`,
  `de_DE`, `fr_FR`, `es_ES` and `it_IT` person providers (Faker is MIT-licensed, see README.md),
  and the given names of `COMMON_GIVEN_NAMES` below.
  Multi-word entries are split into their words ("María José", "van der Dussen"); particles,
  abbreviations ("Hans-J."), roman numerals and words shorter than three letters are left out.
- `common_words.txt`: words that are given names but are often written capitalised as something
  else: months, virtues, flowers, gems, places, brands. Curated below, plus the given names that
  are among Faker's `en_US` lorem words and spaCy's English stop words.
- `english_words.txt`: ordinary English words (Faker's `en_US` lorem words, spaCy's English stop
  words, the shop and support words and the capitalised non-names below). A capitalised word that is in no name list is
  taken for a name only when it is not one of these.
- `not_names.txt`: brands and places that are written like a person's name ("Calvin Klein").

The output depends only on the installed Faker and spaCy versions: nothing is random.
"""

from __future__ import annotations

import argparse
import importlib
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import faker
import spacy
from faker.providers.lorem.en_US import Provider as EnglishLorem
from spacy.lang.en.stop_words import STOP_WORDS

LOCALES = ("en_GB", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT")
FIRST_NAME_FIELDS = (
    "first_names",
    "first_names_male",
    "first_names_female",
    "first_names_nonbinary",
)
PARTICLES = {
    "al", "bin", "da", "das", "de", "degli", "dei", "del", "della", "delle", "der", "des", "di",
    "do", "dos", "du", "el", "ibn", "la", "le", "lo", "san", "st", "ten", "ter", "van", "von",
    "y", "zu", "auch", "ii", "iii", "iv",
}  # fmt: skip
_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")

# Given names that are also ordinary words, written capitalised as something else at times:
# months, virtues, flowers, gems, places, brands. Lower case. They join the given names (Faker
# lacks many of them) and make up `common_words.txt`.
COMMON_GIVEN_NAMES = """
will may june april august summer autumn dawn sky river rain star sunny misty stormy storm
hope faith grace joy charity mercy patience prudence honor honour justice harmony melody
liberty chance destiny trinity genesis eden heaven angel precious sterling royal noble
rose holly iris heather flora fleur olive willow
ruby amber jade pearl crystal coral opal diamond jewel ginger honey candy sugar pepper
cherry berry peach saffron sage basil rosemary
mark bill art guy chase hunter page penny rusty earl duke king prince major miles price cash
brook forest cliff glen dale heath lane rich dusty rocky clay colt gale bay max sol sal bud
buck
paris sydney austin chelsea jersey lincoln washington dakota orlando phoenix denver dallas
houston georgia virginia carolina florida kent jordan roma milan valencia vienna camden india
asia america chester york
zara alexa siri mercedes chanel pandora hermes ferrari porsche tesla hugo levi valentine
"""

# Capitalised words that are no names: months, days, holidays, brands, places. Lower case.
CAPITALISED_WORDS = """
january february march october november december monday tuesday wednesday thursday friday
saturday sunday christmas easter spring fall winter dusk
nike adidas puma vans converse kindle echo nest ring ford fiat jaguar mini lego dyson gucci
prada armani versace fendi dior lacoste boss guess levis mango lamborghini apple samsung
london boston berlin england france scotland wales britain europe africa china ireland holland
"""

# Ordinary words a shopper or a support form uses, beyond the lorem and stop words.
SHOP_WORDS = """
team support customer customers service services sir madam everyone everybody there again
guys folks staff shop store admin help desk sales billing returns return refund refunds order
orders delivery deliveries care account accounts manager hello hi hey thanks thank cheers
regards best wishes sincerely dear love morning afternoon evening night today tomorrow
yesterday please sorry okay ok yes no urgent asap note ps re fw fwd subject question
complaint issue problem update tracking parcel package courier invoice receipt payment card
voucher discount code coupon gift wrap size colour color price product item items basket
cart checkout website app email phone number address postcode zip street road avenue lane
pro plus max mini ultra lite air series edition collection classic original premium deluxe
watch phone tablet laptop headphones earbuds speaker charger cable case cover bag backpack
shoes boots trainers sneakers jacket coat dress shirt jeans socks hat scarf gloves
"""

# Brands and places written like a person's name. Lower case, one phrase per line.
NOT_NAMES = """
calvin klein
tommy hilfiger
ralph lauren
hugo boss
ted baker
jack wolfskin
dr martens
doc martens
kate spade
michael kors
tory burch
marc jacobs
stella mccartney
vera wang
jimmy choo
christian louboutin
christian dior
giorgio armani
emporio armani
laura ashley
ben sherman
fred perry
johnnie walker
jack daniel
jack daniels
ben jerry
le creuset
victoria secret
tom ford
yves saint laurent
saint laurent
jean paul gaultier
vivienne westwood
alexander mcqueen
karl lagerfeld
charlotte tilbury
estee lauder
bobbi brown
paco rabanne
carolina herrera
oscar de la renta
ray ban
marks spencer
levi strauss
mary kay
sam edelman
steve madden
betty crocker
uncle ben
aunt bessie
ronald mcdonald
hello kitty
peppa pig
thomas tank
harry potter
tesla model
monte carlo
santa claus
father christmas
san francisco
santa monica
santa barbara
santa cruz
san diego
san antonio
st andrews
st albans
st ives
st helens
victoria station
victoria park
elizabeth line
kings cross
charing cross
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    first, last = set(), set()
    for locale in LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for field in FIRST_NAME_FIELDS:
            first |= set(_words(getattr(provider, field, ()) or ()))
        last |= set(_words(getattr(provider, "last_names", ()) or ()))
    given = set(COMMON_GIVEN_NAMES.split())
    first |= {name.capitalize() for name in given}
    lorem = {word.lower() for word in EnglishLorem.word_list}
    common = given | ((lorem | set(STOP_WORDS)) & {_fold(name) for name in first})
    english = lorem | set(STOP_WORDS) | set(SHOP_WORDS.split()) | set(CAPITALISED_WORDS.split())
    origin = (
        f"Faker {faker.VERSION} person providers ({', '.join(LOCALES)}); MIT licence. "
        "Rebuild with: python data/names/build.py"
    )
    _write(args.out / "first_names.txt", first, origin)
    _write(args.out / "last_names.txt", last, origin)
    _write(
        args.out / "common_words.txt",
        common,
        "Given names that are often written capitalised as something else; curated in "
        f"data/names/build.py, plus given names among Faker {faker.VERSION}'s en_US lorem words and "
        f"spaCy {spacy.__version__}'s English stop words.",
    )
    _write(
        args.out / "english_words.txt",
        english,
        f"Ordinary English words: Faker {faker.VERSION}'s en_US lorem words, spaCy "
        f"{spacy.__version__}'s English stop words and the shop words in data/names/build.py.",
    )
    _write(
        args.out / "not_names.txt",
        {line.strip() for line in NOT_NAMES.splitlines() if line.strip()},
        "Brands and places written like a person's name; curated in data/names/build.py.",
    )


def _words(entries: Iterable[str]) -> Iterable[str]:
    """The name words of Faker entries: multi-word entries split, particles and initials dropped."""
    for entry in entries:
        for word in _WORD.findall(entry):
            if "." in entry and entry.endswith(word + "."):
                continue  # "Hans-J." and the like: an abbreviation, not a name
            if word.casefold() in PARTICLES or len(word) < 3 or not word[0].isupper():
                continue
            yield word


def _fold(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _write(path: Path, entries: set[str], origin: str) -> None:
    lines = sorted(entries, key=lambda entry: (_fold(entry), entry))
    path.write_text(f"# {origin}\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(f"{path}: {len(lines)} entries")


if __name__ == "__main__":
    main()
