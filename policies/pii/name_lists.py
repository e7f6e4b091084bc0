"""The person-name recognizer's word lists (`data/names/`), folded and read once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from policies.pii.folding import fold

__all__ = ["NAMES_DIR", "NameLists", "name_lists"]

# The person-name recognizer's lists, built by data/names/build.py.
NAMES_DIR = Path(__file__).resolve().parents[2] / "data" / "names"


@dataclass(frozen=True)
class NameLists:
    """The word lists of the person-name recognizer, accent- and case-folded (see data/names)."""

    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]  # given names that are often written capitalised as something else
    english: frozenset[str]  # ordinary words: a capitalised one is no unknown surname
    not_names: frozenset[tuple[str, ...]]  # brands and places written like names


@lru_cache(maxsize=4)
def name_lists(folder: Path) -> NameLists:
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
        return [fold(line.strip()) for line in text.splitlines() if line.strip()[:1] not in "#"]

    return NameLists(
        first=frozenset(read("first_names.txt")),
        last=frozenset(read("last_names.txt")),
        common=frozenset(read("common_words.txt")),
        english=frozenset(read("english_words.txt")),
        not_names=frozenset(tuple(phrase.split()) for phrase in read("not_names.txt")),
    )
