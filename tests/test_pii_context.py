"""The guard's context enhancer finds the same token as Presidio's, by bisection."""

from __future__ import annotations

import pytest
import spacy
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

from policies.pii.stock import BisectingContextEnhancer


@pytest.mark.parametrize(
    "text",
    [
        "Call me on +44 20 7946 0958, my IBAN is GB82 WEST 1234 5698 7654 32.",
        "  two  spaces\tand a tab\n\nthen lines: jane@example.com ",
        "x",
    ],
)
def test_the_match_token_is_the_one_presidio_finds(text: str) -> None:
    doc = spacy.blank("en")(text)
    starts = [token.idx for token in doc]
    for start in range(len(text) + 2):
        found = []
        for enhancer in (LemmaContextAwareEnhancer, BisectingContextEnhancer):
            try:
                found.append(enhancer._find_index_of_match_token("w", start, doc, starts))
            except ValueError:
                found.append(None)  # past the last token's end: both raise
        assert found[0] == found[1], start


def test_a_match_past_the_last_token_is_an_error_as_in_presidio() -> None:
    doc = spacy.blank("en")("end ")
    starts = [token.idx for token in doc]
    for enhancer in (LemmaContextAwareEnhancer, BisectingContextEnhancer):
        with pytest.raises(ValueError, match="Did not find word"):
            enhancer._find_index_of_match_token("w", 10, doc, starts)
