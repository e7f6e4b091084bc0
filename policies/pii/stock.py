"""Presidio's stock recognizers, adjusted for a shop and for running offline.

The email and URL recognizers validate domains against the public suffix list bundled with
`tldextract` (never fetched, never cached on disk); the IBAN recognizer also reads lower case; the
NHS number recognizer is sure of a number only after an NHS word; the context enhancer finds a
match's token by bisection.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import cast

import tldextract
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    EmailRecognizer,
    IbanRecognizer,
    NhsRecognizer,
    UrlRecognizer,
)

__all__ = [
    "BisectingContextEnhancer",
    "LowerCaseIbanRecognizer",
    "NhsContextRecognizer",
    "OfflineEmailRecognizer",
    "OfflineUrlRecognizer",
    "offline_tldextract",
]


def offline_tldextract() -> tldextract.TLDExtract:
    """A suffix-list reader that never opens a connection or writes a cache: the bundled list."""
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer, validating domains against the bundled suffix list only."""

    def __init__(self) -> None:
        super().__init__()
        # No suffix list URLs and no cache directory: tldextract falls back to the snapshot that
        # ships with the package and never opens a connection or writes under $HOME.
        self._extract = offline_tldextract()

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


class LowerCaseIbanRecognizer(IbanRecognizer):
    """Presidio's IBAN recognizer, also finding IBANs typed in lower case ("gb82 west 1234 ...").

    Presidio's patterns want capitals, so what looks like a lower-case IBAN is upper-cased before
    the search (ASCII letters only, which keeps every offset); the mod-97 check still decides.
    Only those spans change: a following word in capitals could run into the last group.
    """

    _GROUP = r"(?=[a-z0-9]{0,3}\d)[a-z0-9]{1,4}(?![a-z0-9])"  # up to 4, at least one digit
    _LOWER_CASE = re.compile(
        r"(?<![^\W\d_])[a-z]{2}\d{2}"
        rf"(?:[a-z0-9]{{10,30}}(?![a-z0-9])|[ -]?[a-z0-9]{{4}}(?:[ -]{_GROUP}){{1,7}})"
    )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        capitalised = self._LOWER_CASE.sub(lambda m: m.group().upper(), text)
        return super().analyze(capitalised, entities, cast(NlpArtifacts, nlp_artifacts))


class NhsContextRecognizer(NhsRecognizer):
    """Presidio's NHS number recognizer, sure of a number only after an NHS word.

    Presidio scores every 3-3-4 run of ten digits that passes the mod-11 check as certain (1.0),
    and one in eleven random numbers passes: a US number ("201-741-5537") or a French one
    ("0612373851") would then be reported as an NHS number. Without "NHS" or "health" in the
    40 characters before it, a checked number keeps the pattern's own score, so a valid phone
    number of the same digits wins.
    """

    _CONTEXT = re.compile(r"(?i:\b(?:nhs|health|patient|chi)\b)")
    UNSURE_SCORE = 0.5

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for result in results:
            if not self._CONTEXT.search(text[max(0, result.start - 40) : result.start]):
                result.score = min(result.score, self.UNSURE_SCORE)
        return results


class OfflineUrlRecognizer(UrlRecognizer):
    """Presidio's URL recognizer, checking domains against the bundled public suffix list only."""

    def __init__(self) -> None:
        super().__init__()
        self._extract = offline_tldextract()

    def validate_result(self, pattern_text: str) -> bool:
        host = re.sub(r"^[a-z]+://", "", pattern_text, flags=re.IGNORECASE).split("/")[0]
        parts = self._extract(host)  # a pure function of the host: read once
        return bool(parts.suffix) and bool(parts.domain)


class BisectingContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer (context words before a match raise its score), finding the
    match's token by bisecting the tokens' start offsets, and skipped where it cannot change a
    score.

    Presidio walks the spaCy `Doc` from its first token for every result it enhances, building a
    Python object per token: at 1,000 characters that walk was a fifth of a redaction's time.
    The offsets are sorted, so a bisection finds the same token: the first that starts at the
    match or ends after its start.

    The enhancer reads context words from the tokens' lemmas only. The guard's pipelines set no
    lemma (the lemmatizer and attribute ruler are disabled, see `policies.pii.ner`; the blank
    pipeline has none): every surrounding word is then "", which contains no recognizer's
    context word, so no score can change. In that case the results are returned as they are,
    without Presidio's deep copy of every result and the walk over them (about a twentieth of a
    1,000-character redaction). With any lemma set, or a recognizer whose context holds an
    empty word (which "" contains), or context words passed by the caller, Presidio's code runs.
    """

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        if (
            not context
            and nlp_artifacts is not None
            and not any(nlp_artifacts.lemmas)
            and all(word for recognizer in recognizers for word in recognizer.context or ())
        ):
            return raw_results
        return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)

    @staticmethod
    def _find_index_of_match_token(
        word: str, start: int, tokens: Sequence[object], tokens_indices: list[int]
    ) -> int:
        i = max(bisect.bisect_right(tokens_indices, start) - 1, 0)
        if i < len(tokens_indices) and tokens_indices[i] + len(tokens[i]) <= start:  # type: ignore[arg-type]
            i += 1  # the match starts in the space after token i: the next token
        if i >= len(tokens_indices):
            raise ValueError(
                f"Did not find word '{word}' in the list of tokens although it is expected to be found"
            )
        return i
