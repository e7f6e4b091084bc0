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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from agents.privacy.vocabulary import WORD, Vocabulary

if TYPE_CHECKING:
    from agents.services import Services

MASK = "<REDACTED>"
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
_EMAIL = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
# Seven or more digits, possibly split by spaces, dots, dashes, slashes or parentheses.
_PHONE = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,3}\d){6,}")

T = TypeVar("T")


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
                        w for w in WORD.findall(match.group(0)) if not vocabulary.knows(w)
                    )
                text = shape.sub(" ", text)
            text = _PLACEHOLDER.sub(" ", text)
            tainted.update(w for w in WORD.findall(text) if not vocabulary.knows(w))
        return cls(tainted)

    def text(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    @classmethod
    def for_services(
        cls, services: Services, texts: Iterable[str | None], *, version: int | None = None
    ) -> Minimizer:
        """The minimizer of a request, over the process's vocabulary (refreshed first, when the
        request has free text for it to judge). `version` is the catalog's version when the
        request has already read it (`Vocabulary.refresh`)."""
        texts = list(texts)
        if any(texts):
            services.vocabulary.refresh(services.db, version)
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
