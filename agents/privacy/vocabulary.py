"""The words stored free text may keep: spaCy's stop words and the words of the catalog.

A `Minimizer` (`agents.privacy.minimize`) masks every word of a request's free text that this
vocabulary does not know. One `Vocabulary` is shared by the process (`Services.vocabulary`).

Invalidation: the words are read at one catalog version (`store.catalog.catalog_version`), and
`refresh` compares that version with the store's — one single-row read, or none when the caller
already read the version in the same request. Every writer of items, offers or hidden marks
bumps the version in its own transaction, in whichever process it runs, so the next `refresh`
of every process reloads once the change is committed: a word a change removed is masked
again, a word it added is kept. The version is read before the words, so words read while a
change raced are at worst kept under the older version and read again at the next call.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from spacy.lang.en.stop_words import STOP_WORDS
from sqlalchemy import select

from store.catalog import catalog_version
from store.db import Database
from store.models import CatalogItem, CatalogOffer

WORD = re.compile(r"[^\W\d_]+|\d+")
_TEXT_FIELDS = ("title", "description", "terms", "category", "tags", "categories")
MAX_SHORT_NUMBER = 3  # digits; longer numbers (phones, order numbers, dates) are tainted


class Vocabulary:
    """The words stored text may keep: stop words and the catalog's words. Reloaded when the
    catalog's version moves; shared by the process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version: int | None = None
        """The catalog version the words were read at; None before the first read."""
        self._words: frozenset[str] = frozenset(w.casefold() for w in STOP_WORDS)

    def refresh(self, db: Database, version: int | None = None) -> None:
        """Reads the catalog's words again if its version moved since they were read.

        `version` is the catalog's version when the caller has just read it (saving the read);
        by default it is read here.
        """
        if version is None:
            # A Core connection, not an ORM session: a single-row read at a third of the cost.
            with db.engine.connect() as connection:
                version = catalog_version(connection)
        if version == self.version:
            return
        with db.session() as session:
            items = session.execute(select(CatalogItem.category, CatalogItem.data)).all()
            offers = session.scalars(select(CatalogOffer.data)).all()
        words = {w.casefold() for w in STOP_WORDS}
        for data in [*(d for _, d in items), *offers]:
            words.update(_words_of(data))
        words.update(_words_of([c for c, _ in items]))
        with self._lock:
            self._words = frozenset(words)
            self.version = version

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
