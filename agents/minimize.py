"""Free text as it may be stored: pseudonymized by the guard, then cut down to words known safe.

The PII guard finds what it can (the subject's own values, listed names, emails, valid phone
numbers), but it misses things: a name outside its lists with no context word, a phone number in
a range `phonenumbers` does not know. What is stored (the decision log, chat thread memory, job
requests, copy campaign rows) therefore goes one step further than what a model sees. A
`Minimizer` is built per request from the request's free text: every word of it that is neither
a placeholder, a common English function word (spaCy's stop words), a word of the catalog (item
titles, descriptions, tags, categories; offer titles and terms) nor a number of at most three
digits is *tainted*, and so is anything shaped like an email address or a phone number. Tainted
words are replaced by `<REDACTED>` wherever they occur in what is stored — also where a model or
writer repeated them. Retrieval's lexical part only ever matches catalog words, so the stored
query keeps what replay needs; what is lost is prose no store needs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from spacy.lang.en.stop_words import STOP_WORDS
from sqlalchemy import func, select

from store.db import Database
from store.models import CatalogItem, CatalogOffer

if TYPE_CHECKING:
    from agents.factory import Services

MASK = "<REDACTED>"
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
_EMAIL = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
# Seven or more digits, possibly split by spaces, dots, dashes, slashes or parentheses.
_PHONE = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,3}\d){6,}")
_WORD = re.compile(r"[^\W\d_]+|\d+")
_TEXT_FIELDS = ("title", "description", "terms", "category", "tags", "categories")
MAX_SHORT_NUMBER = 3  # digits; longer numbers (phones, order numbers, dates) are tainted

T = TypeVar("T")


class Vocabulary:
    """The words stored text may keep: stop words and the catalog's words. Reloaded when the
    number of items or offers changes; shared by the process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: tuple[int, int] = (-1, -1)
        self._words: frozenset[str] = frozenset(w.casefold() for w in STOP_WORDS)

    def refresh(self, db: Database) -> None:
        with db.session() as session:
            counts = (
                session.scalar(select(func.count()).select_from(CatalogItem)) or 0,
                session.scalar(select(func.count()).select_from(CatalogOffer)) or 0,
            )
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


class Minimizer:
    """Masks, in anything about to be stored, the tainted words of one request's free text."""

    def __init__(self, tainted: Iterable[str] = ()) -> None:
        self.tainted = frozenset(t for t in tainted if t)
        alternatives = sorted((re.escape(t) for t in self.tainted), key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w@])(?:" + "|".join(alternatives) + r")(?![\w@])", re.IGNORECASE)
            if alternatives
            else None
        )

    @classmethod
    def of(cls, texts: Iterable[str | None], vocabulary: Vocabulary) -> Minimizer:
        """The minimizer of a request whose free text (already pseudonymized) is `texts`."""
        tainted: set[str] = set()
        for text in texts:
            if not text:
                continue
            for shape in (_EMAIL, _PHONE):
                for match in shape.finditer(text):
                    tainted.add(match.group(0).strip())
                    # Its parts too, in case a writer repeats them in another layout.
                    tainted.update(
                        w for w in _WORD.findall(match.group(0)) if not vocabulary.knows(w)
                    )
                text = shape.sub(" ", text)
            text = _PLACEHOLDER.sub(" ", text)
            tainted.update(w for w in _WORD.findall(text) if not vocabulary.knows(w))
        return cls(tainted)

    def text(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    @classmethod
    def for_services(cls, services: Services, texts: Iterable[str | None]) -> Minimizer:
        """The minimizer of a request, over the process's vocabulary (refreshed first)."""
        services.vocabulary.refresh(services.db)
        return cls.of(texts, services.vocabulary)

    def value(self, value: T) -> T:
        """`value` with every string in it (dict values, list items, nested) minimized."""
        if self._pattern is None:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self._value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(item) for item in value]
        return value


def _words_of(data: Any) -> set[str]:
    if isinstance(data, str):
        return {w.casefold() for w in _WORD.findall(data) if not w.isdigit()}
    if isinstance(data, dict):
        return set().union(*(_words_of(data.get(f)) for f in _TEXT_FIELDS))
    if isinstance(data, list):
        return set().union(*(_words_of(d) for d in data))
    return set()
