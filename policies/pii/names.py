"""Other people's names without an NER model: the person-name recognizer.

One idea in one module: the recognizer's context phrases, its scores and the rules that weigh
them read together, and splitting them would scatter one decision over several files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import ClassVar

from presidio_analyzer import EntityRecognizer, RecognizerResult

from policies.pii.entities import PERSON
from policies.pii.folding import fold
from policies.pii.name_lists import NameLists

__all__ = ["PersonNameRecognizer"]


@dataclass(frozen=True, slots=True)
class _Word:
    """A word of the text, as the person-name recognizer sees it."""

    start: int
    end: int  # before a possessive "'s"
    key: str  # accent- and case-folded, without the possessive
    phrase_key: str  # case-folded with its apostrophes, for context phrases ("i'm", "name's")
    capitalised: bool
    upper: bool  # all capitals: a name when shouted, more often an acronym ("IBAN", "UK")
    initial: bool  # a capital letter followed by a dot: "J."
    sentence_start: bool
    possessive: bool
    embedded: bool  # inside an email, a URL, a code or a placeholder


class _Context(IntEnum):
    """How strongly the words before a capitalised word announce a name."""

    NONE = 0
    # "I'm", "this is", "ask for": a listed name, also in lower case; a given name that is a
    # common word ("Grace") or an unlisted capitalised word only at a pause ("I'm Grace,").
    MEDIUM = 1
    GREETING = 2  # "Hi", "Thanks": as MEDIUM, with a higher score
    STRONG = 3  # "my name is", "regards", "my wife": any listed or unlisted name-like word
    TITLE = 4  # "Mr", "Dr.": any capitalised word


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _phrases(text: str) -> frozenset[tuple[str, ...]]:
    """Comma-separated phrases as word tuples: "thank you, cheers" -> {("thank", "you"), ...}."""
    return frozenset(tuple(phrase.split()) for phrase in text.split(","))


class PersonNameRecognizer(EntityRecognizer):
    """Other people's names without an NER model: name lists, context words and capitals.

    A word is a name candidate when it is in the given-name or surname lists built from Faker's
    person providers (`data/names/`). Candidates become a PERSON when there is evidence:
      * a title or a context phrase before them ("Mr", "my name is", "regards", "my sister");
      * a given name followed by other listed names or one unknown capitalised word ("Anna
        Schmidt", "Patrick Chelangat");
      * a listed given name standing alone, capitalised, inside a sentence ("ask Sophie").
    Given names that are ordinary words ("Will", "May", "Grace", "Rose", "Mark") need stronger
    evidence: a surname after them or a context before them, so "I will go in May" and "Mark
    as delivered" stay while "Will Smith called" and "Thanks Grace!" are found. A capital at a
    sentence start is no evidence, brands written like names are listed apart ("Calvin Klein"),
    and words inside emails, URLs and codes are left to their own recognizers.
    """

    ENTITY = PERSON
    SCORES: ClassVar[dict[_Context, float]] = {
        _Context.TITLE: 0.85,
        _Context.STRONG: 0.85,
        _Context.GREETING: 0.75,
        _Context.MEDIUM: 0.7,
    }
    CHAIN_SCORE = 0.75  # a given name and a surname: "Anna Schmidt"
    ALONE_SCORE = 0.6  # a listed given name alone, or followed by one unknown word
    EVIDENCE_SCORE = 0.7  # at least a context phrase or a full name: outranks NER's other labels
    NAME = "PersonNameRecognizer"
    MAX_NAME_WORDS = 4
    TITLES = _wordset(
        "mr mrs ms miss mx dr prof professor sir dame lady lord herr frau monsieur madame mme "
        "mlle mademoiselle senor senora senorita sr sra srta signor signora signorina sig"
    )
    SHORT_TITLES = _wordset("mr mrs ms dr")
    PHRASES: ClassVar[dict[_Context, frozenset[tuple[str, ...]]]] = {
        _Context.STRONG: _phrases(
            "name, name is, name's, names, full name, call me, named, regards, sincerely, "
            "signed, yours, wishes, love from, attn, attention, c o, care of, recipient, "
            "recipient is, holder, cardholder, name on card, name on the card, addressed to, "
            "addressee, wife, husband, partner, son, daughter, mum, mom, mother, dad, father, "
            "sister, brother, friend, colleague, boss, neighbour, neighbor, grandson, "
            "granddaughter, grandma, grandmother, grandpa, grandfather, nan, niece, nephew, "
            "cousin, aunt, uncle, girlfriend, boyfriend, fiance, fiancee, flatmate, roommate, "
            "child, kid, kids"
        ),
        _Context.GREETING: _phrases(
            "hi, hello, hey, dear, thanks, thank you, thank you so much, thanks so much, "
            "thanks a lot, cheers, bye, morning, evening"
        ),
        _Context.MEDIUM: _phrases(
            "i'm, i am, im, this is, it's, its, it is, called, ask for, asked for, speak to, "
            "spoke to, spoke with, speaking to, talk to, talked to, chatted with, contact, "
            "courtesy of"
        ),
    }
    PARTICLES = _wordset(
        "al bin da das de degli dei del della delle der des di do dos du el ibn la le lo ten ter "
        "van von y zu"
    )
    SAINTS = _wordset("st saint san santa santo sainte sankt sao")
    PLACE_WORDS = _wordset(
        "street road avenue lane square station gardens crescent terrace mews hospital school "
        "college university centre center mall airport bridge cathedral hotel stadium arena "
        "market"
    )
    PRODUCT_WORDS = _wordset(
        "gold silver bronze copper platinum green grey gray white black blue red pink cream "
        "ivory navy day sale"
    )
    PAUSE_WORDS = _wordset("here speaking from and")  # "Grace here", "I'm May and I ..."
    _WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*")
    _EMBEDDING = frozenset("@_/\\<>#=+*&")
    _CONTEXT_WORDS = frozenset(p[0] for level in PHRASES.values() for p in level if len(p) == 1)
    _CONTRACTION = re.compile(r"['’](?:m|re|ve|ll|d|t|s)$", re.IGNORECASE)
    _PHRASE_LENGTHS: ClassVar[dict[_Context, tuple[int, ...]]] = {
        level: tuple(sorted({len(p) for p in phrases})) for level, phrases in PHRASES.items()
    }

    def __init__(self, lists: NameLists) -> None:
        self._lists = lists
        self._longest_phrase = max(len(p) for phrases in self.PHRASES.values() for p in phrases)
        self._not_name_starts = frozenset(phrase[0] for phrase in lists.not_names if phrase)
        super().__init__(supported_entities=[self.ENTITY], name=self.NAME)

    def load(self) -> None:
        """The lists are loaded by `name_lists` once per process."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: object = None
    ) -> list[RecognizerResult]:
        words = self._words(text)
        spans: list[tuple[int, int, float]] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word.embedded or not (word.capitalised or word.initial or self._is_name(word)):
                i += 1  # no name starts here, whatever comes before: skip the context lookup
                continue
            context = self._context(text, words, i)
            end = self._run_end(text, words, i, context)
            if end is None:
                i += 1
                continue
            spans += self._names_in_run(text, words, i, end, context)
            i = end + 1
        spans += self._lowercase_pairs(words, spans)
        return [
            RecognizerResult(self.ENTITY, words[a].start, words[b].end, score)
            for a, b, score in spans
        ]

    def _lowercase_pairs(
        self, words: list[_Word], found: list[tuple[int, int, float]]
    ) -> list[tuple[int, int, float]]:
        """A full name typed without capitals ("beverley bartlett"): a listed given name then a
        listed surname, neither an ordinary word nor a common-word name, counts on its own."""
        taken = {j for a, b, _ in found for j in range(a, b + 1)}
        lists = self._lists
        pairs = []
        for i in range(len(words) - 1):
            first, last = words[i], words[i + 1]
            if i in taken or i + 1 in taken or first.embedded or last.embedded:
                continue
            if (
                first.key in lists.first
                and last.key in lists.last
                and not {first.key, last.key} & (lists.english | lists.common)
            ):
                pairs.append((i, i + 1, self.CHAIN_SCORE))
        return pairs

    def _words(self, text: str) -> list[_Word]:
        words: list[_Word] = []
        for match in self._WORD.finditer(text):
            raw, start, end = match.group(), match.start(), match.end()
            before = text[start - 1] if start else " "
            after = text[end] if end < len(text) else " "
            beyond = text[end + 1] if end + 1 < len(text) else " "
            embedded = (
                before in self._EMBEDDING
                or before.isdigit()
                or (before == "." and start > 1 and text[start - 2].isalnum())
                or after in self._EMBEDDING
                or after.isdigit()
                or (after in "./" and beyond.isalnum())
            )
            possessive = len(raw) > 3 and raw[-2:].casefold() in ("'s", "’s")
            core = raw[:-2] if possessive else raw
            # "I'm", "We'll", "Don't" are no names; "O'Brien" and "D'Angelo" are.
            contraction = self._CONTRACTION.search(core) is not None
            words.append(
                _Word(
                    start=start,
                    end=start + len(core),
                    key=fold(core),
                    phrase_key=raw.casefold().replace("’", "'"),
                    capitalised=raw[0].isupper() and len(core) > 1 and not contraction,
                    upper=core.isupper() and len(core) > 1 and not contraction,
                    initial=len(raw) == 1 and raw.isupper() and after == ".",
                    sentence_start=self._starts_sentence(text, start, words),
                    possessive=possessive,
                    embedded=embedded,
                )
            )
        self._mark_not_names(words)
        return words

    def _starts_sentence(self, text: str, start: int, previous: list[_Word]) -> bool:
        position = start - 1
        while position >= 0 and text[position] in " \t\"'“‘([":
            position -= 1
        if position < 0 or text[position] in "!?\n\r":
            return True
        if text[position] != ".":
            return False
        # "Dr. Smith", "J. Smith": the dot ends an abbreviation, not a sentence.
        last = previous[-1] if previous else None
        return not (last and last.end == position and (self._is_title(last) or last.initial))

    def _mark_not_names(self, words: list[_Word]) -> None:
        starts = self._not_name_starts
        for i in range(len(words)):
            if words[i].key not in starts:
                continue  # no listed brand or place starts with this word
            for size in (4, 3, 2):
                keys = tuple(w.key for w in words[i : i + size])
                if len(keys) == size and keys in self._lists.not_names:
                    for j in range(i, i + size):
                        words[j] = replace(words[j], embedded=True)
                    break

    def _context(self, text: str, words: list[_Word], i: int) -> _Context:
        """How the words before word `i` announce a name; a sentence end in between cancels."""
        if i == 0:
            return _Context.NONE
        before = words[i - 1]
        gap = text[before.end : words[i].start]
        if self._is_title(before) and gap.strip() in ("", "."):
            return _Context.TITLE
        if any(mark in gap for mark in ".!?"):
            return _Context.NONE
        keys = [w.phrase_key for w in words[max(0, i - self._longest_phrase) : i]]
        for level in (_Context.STRONG, _Context.GREETING, _Context.MEDIUM):
            # A phrase of n words ends here when the last n keys are one: a lookup per phrase
            # length (a handful) rather than a comparison per phrase (about a hundred). With
            # fewer keys than n the slice is shorter, a phrase of that length, looked up too.
            phrases = self.PHRASES[level]
            if any(tuple(keys[-n:]) in phrases for n in self._PHRASE_LENGTHS[level]):
                # A capitalised "Morning" inside a sentence is a name's part, not a greeting.
                greeting = level is _Context.GREETING
                if greeting and before.capitalised and not before.sentence_start:
                    return _Context.NONE
                return level
        return _Context.NONE

    def _introduces(self, word: _Word) -> bool:
        """Whether the word is a title or a one-word context ("Dear", "Grandma"), not a name."""
        return self._is_title(word) or word.phrase_key in self._CONTEXT_WORDS

    def _is_title(self, word: _Word) -> bool:
        # "I miss Summer" is no title: only the abbreviations count in lower case ("mr smith").
        return word.key in self.TITLES and (word.capitalised or word.key in self.SHORT_TITLES)

    def _is_name(self, word: _Word) -> bool:
        return self._listed(word, self._lists.first) or self._listed(word, self._lists.last)

    def _is_given(self, word: _Word) -> bool:
        return self._listed(word, self._lists.first)

    @staticmethod
    def _listed(word: _Word, names: frozenset[str]) -> bool:
        """Whether the word is in `names`, or is a double name of listed parts: "Jean-Pierre"."""
        if word.key in names:
            return True
        parts = word.key.split("-")
        return len(parts) > 1 and all(part in names for part in parts)

    def _is_unknown(self, word: _Word) -> bool:
        return not self._is_name(word) and word.key not in self._lists.english

    def _run_end(self, text: str, words: list[_Word], i: int, context: _Context) -> int | None:
        """The last word of the run of name-like words starting at `i`, or None if none starts.

        A run is capitalised words (with particles and initials between them) separated by
        spaces only; after a context phrase it may also be listed names in lower case.
        """
        word = words[i]
        if word.embedded or self._introduces(word) or word.key in self.PARTICLES:
            return None
        lowercase_name = (
            not word.capitalised
            and context >= _Context.MEDIUM
            and self._is_name(word)
            and word.key not in self._lists.common
            and word.key not in self._lists.english
        )
        if not (word.capitalised or lowercase_name or word.initial):
            return None
        if word.capitalised and word.sentence_start and not self._is_name(word):
            return None  # a sentence's first capital says nothing
        end = i
        while end + 1 < len(words) and not words[end].possessive:
            following = words[end + 1]
            gap = text[words[end].end : following.start]
            if words[end].initial:
                gap = gap.removeprefix(".")
            if not (gap and gap.isspace() and "\n" not in gap and len(gap) <= 3):
                break
            if following.embedded or self._introduces(following):
                break
            if following.key in self.PARTICLES or following.initial:
                if end + 2 < len(words) and words[end + 2].capitalised:
                    end += 1
                    continue
                break
            if lowercase_name:
                if following.capitalised or not self._is_name(following):
                    break
                if following.key in self._lists.english:
                    break
            elif not following.capitalised:
                break
            end += 1
        return end

    def _names_in_run(
        self, text: str, words: list[_Word], a: int, b: int, context: _Context
    ) -> list[tuple[int, int, float]]:
        run = words[a : b + 1]
        if a > 0 and words[a - 1].key in self.SAINTS:
            return []  # "St Patrick's Day", "San Francisco"
        if len(run) > 1 and run[-1].key in self.PLACE_WORDS:
            return []  # "Victoria Street", "Charlotte Station"
        spans = []
        i = a
        if context is not _Context.NONE:
            end = a
            while (
                end <= b and end - a < self.MAX_NAME_WORDS and self._accepted(run[end - a], context)
            ):
                end += 1
            while end > a and not self._is_namelike(words[end - 1]):
                end -= 1  # a run does not end on a particle or an initial
            if end > a:
                taken = words[a:end]
                needs_pause = context < _Context.STRONG and not all(
                    self._is_name(w) and w.key not in self._lists.common for w in taken
                )
                if not needs_pause or self._at_pause(text, words, end - 1):
                    spans.append((a, end - 1, self.SCORES[context]))
                    i = end
        while i <= b:
            if not self._is_name(words[i]) and not words[i].initial:
                i += 1
                continue
            j = i
            while j + 1 <= b and (
                self._is_name(words[j + 1]) or not self._is_namelike(words[j + 1])
            ):
                j += 1
            while j > i and not self._is_namelike(words[j]):
                j -= 1
            span = self._chain(text, words, i, j, run)
            if span:
                spans.append(span)
            i = j + 1
        return spans

    def _accepted(self, word: _Word, context: _Context) -> bool:
        """Whether `word` may be a name right after a context phrase of strength `context`."""
        if word.key in self.PARTICLES or word.initial:
            return True
        if not word.capitalised:
            lists = self._lists
            return (
                self._is_name(word)
                and word.key not in lists.english
                and word.key not in lists.common
            )
        if context is _Context.TITLE:
            return True  # "Mr Brown", "Mrs Young"
        return self._is_name(word) or self._is_unknown(word)

    def _is_namelike(self, word: _Word) -> bool:
        return word.key not in self.PARTICLES and not word.initial

    def _at_pause(self, text: str, words: list[_Word], k: int) -> bool:
        """Whether word `k` ends a phrase: the text's end, punctuation, or "here", "and" ..."""
        rest = text[words[k].end :].lstrip(" \t")
        if not rest or rest[0] in ",.!?;:)\n\r-–—":
            return True
        return k + 1 < len(words) and words[k + 1].key in self.PAUSE_WORDS

    def _chain(
        self, text: str, words: list[_Word], i: int, j: int, run: list[_Word]
    ) -> tuple[int, int, float] | None:
        """The PERSON span, if any, for the listed names `words[i..j]` inside `run`."""
        chain = words[i : j + 1]
        names = [w for w in chain if self._is_namelike(w)]
        lists = self._lists
        given = [w for w in names if self._is_given(w)]
        if len(names) >= 2 and given:
            head, tail = names[0], names[1:]
            # People write the given name first; a surname-first pair without a comma is
            # more often a brand ("Villa Serena", "Blanc Rosé").
            if not self._is_given(head):
                return None
            product = head.key in lists.common and all(
                w.key in self.PRODUCT_WORDS or w.key in lists.common for w in tail
            )
            return None if product else (i, j, self.CHAIN_SCORE)
        if len(names) == 1 and chain[0].initial and self._listed(names[0], lists.last):
            return (i, j, self.CHAIN_SCORE)  # "J. Smith"
        if len(names) != 1 or not given or given[0].key in lists.common:
            return None
        name = given[0]
        if name.upper:
            return None
        # At a sentence start the capital says nothing, but a pause or a possessive does.
        if run == [name] and (
            not name.sentence_start or name.possessive or self._at_pause(text, words, j)
        ):
            return (i, j, self.ALONE_SCORE)
        following = words[j + 1] if j + 1 < len(words) else None
        if (
            following is not None
            and run[-1] is following
            and run[0] is chain[0]
            and following.capitalised
            and self._is_unknown(following)
        ):
            return (i, j + 1, self.ALONE_SCORE)  # a given name and an unlisted surname
        return None
