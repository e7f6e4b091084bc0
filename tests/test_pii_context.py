"""The guard's context enhancer finds the same token as Presidio's, by bisection; it and the NLP
engine's artifacts give what Presidio's stock path gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import UsSsnRecognizer
from spacy.language import Language
from spacy.tokens import Doc

from policies.pii import PIIGuard
from policies.pii.ner import Pipeline, nlp_engine
from policies.pii.stock import BisectingContextEnhancer

LABELED = Path(__file__).resolve().parents[1] / "data" / "pii" / "labeled.jsonl"


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


def _stock_engine(guard: PIIGuard) -> AnalyzerEngine:
    """Presidio's own path on the guard's pipeline and recognizers: its NLP engine's artifacts
    and its lemma context enhancer, with its deep copy and its walk over the results."""
    engine = guard._analyzer
    stock_nlp = SpacyNlpEngine(
        models=[{"lang_code": guard.LANGUAGE, "model_name": "stock"}],
        ner_model_configuration=engine.nlp_engine.ner_model_configuration,
    )
    stock_nlp.nlp = engine.nlp_engine.nlp
    return AnalyzerEngine(
        registry=engine.registry,
        nlp_engine=stock_nlp,
        context_aware_enhancer=LemmaContextAwareEnhancer(),
        supported_languages=[guard.LANGUAGE],
        default_score_threshold=guard.score_threshold,
    )


def _found(engine: AnalyzerEngine, text: str, entities: list[str]) -> list[tuple[object, ...]]:
    results = engine.analyze(text=text, language="en", entities=entities, score_threshold=0.4)
    return sorted((r.entity_type, r.start, r.end, r.score) for r in results)


def test_the_guards_analysis_is_presidios_stock_analysis(pii_guard: PIIGuard) -> None:
    # The guard skips the context enhancer where no lemma is set and builds the artifacts its
    # own way; what it finds must be what Presidio's own path finds on the same pipeline.
    stock = _stock_engine(pii_guard)
    assert pii_guard._analyzer.nlp_engine.nlp is stock.nlp_engine.nlp
    rows = [json.loads(line) for line in LABELED.read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows if row["part"] == "dev"][:120]
    texts += [" ".join(texts[i : i + 8]) for i in range(0, 120, 8)]  # about 1,000 characters
    for text in texts:
        assert _found(pii_guard._analyzer, text, pii_guard._entities) == _found(
            stock, text, pii_guard._entities
        ), text


def _lemmatized() -> Language:
    """A blank pipeline whose tokens get a lemma (their lower case), as a lemmatizer would set."""
    nlp = spacy.blank("en")

    @Language.component("attune_test_lemmas")
    def lemmas(doc: Doc) -> Doc:
        for token in doc:
            token.lemma_ = token.lower_
        return doc

    nlp.add_pipe("attune_test_lemmas")
    return nlp


def test_with_lemmas_set_context_words_still_raise_scores() -> None:
    # The skip holds only while no lemma is set: a pipeline that sets them (a lemmatizer turned
    # back on) must get Presidio's context enhancement, as its stock path gives it.
    pipeline = Pipeline(nlp=_lemmatized(), name="lemmas", degraded=None)
    registry = RecognizerRegistry([UsSsnRecognizer()], supported_languages=["en"])

    def engine(nlp_engine: SpacyNlpEngine, enhancer: LemmaContextAwareEnhancer) -> AnalyzerEngine:
        return AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            context_aware_enhancer=enhancer,
            supported_languages=["en"],
        )

    stock_nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "lemmas"}])
    stock_nlp.nlp = {"en": pipeline.nlp}
    ours = engine(nlp_engine(pipeline), BisectingContextEnhancer())
    stock = engine(stock_nlp, LemmaContextAwareEnhancer())
    text = "My social security number (ssn) is 536-90-4512, please."
    found = _found(ours, text, ["US_SSN"])
    assert found == _found(stock, text, ["US_SSN"])
    assert max(score for *_, score in found) > UsSsnRecognizer.PATTERNS[-1].score  # by "ssn"
