"""The words stored free text may keep: spaCy's stop words and the words of the catalog.

A `Minimizer` (`agents.privacy.minimize`) masks every word of a request's free text that this
vocabulary does not know. One `Vocabulary` is shared by the process (`Services.vocabulary`).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from spacy.lang.en.stop_words import STOP_WORDS
from sqlalchemy import func, select

from store.db import Database
from store.models import CatalogItem, CatalogOffer

WORD = re.compile(r"[^\W\d_]+|\d+")
_TEXT_FIELDS = ("title", "description", "terms", "category", "tags", "categories")
MAX_SHORT_NUMBER = 3  # digits; longer numbers (phones, order numbers, dates) are tainted


class Vocabulary:
    """The words stored text may keep: stop words and the catalog's words. Reloaded when the
    number of items or offers changes; shared by the process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: tuple[int, int] = (-1, -1)
        self._words: frozenset[str] = frozenset(w.casefold() for w in STOP_WORDS)

    def refresh(self, db: Database) -> None:
        with db.session() as session:
            items, offers = session.execute(
                select(
                    select(func.count()).select_from(CatalogItem).scalar_subquery(),
                    select(func.count()).select_from(CatalogOffer).scalar_subquery(),
                )
            ).one()
            counts = (items or 0, offers or 0)
            if counts == self._counts:
                return
            items = session.execute(select(CatalogItem.category, CatalogItem.data)).all()
            offers = session.scalars(select(CatalogOffer.data)).all()
        words = {w.casefold() for w in STOP_WORDS}
        for data in [*(d for _, d in items), *offers]:
            words.update(_words_of(data))
        words.update(_words_of([c for c, _ in items]))
        with self._lock:
            self._words = frozenset(words)
            self._counts = counts

    def knows(self, word: str) -> bool:
        if word.isdigit():
            return len(word) <= MAX_SHORT_NUMBER
        return len(word) <= 1 or word.casefold() in self._words


def _words_of(data: Any) -> set[str]:
    if isinstance(data, str):
        return {w.casefold() for w in WORD.findall(data) if not w.isdigit()}
    if isinstance(data, dict):
        return set().union(*(_words_of(data.get(f)) for f in _TEXT_FIELDS))
    if isinstance(data, list):
        return set().union(*(_words_of(d) for d in data))
    return set()
