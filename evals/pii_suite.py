"""The `pii` suite kind: how much of the PII in shoppers' messages the PII guard finds.

Datasets, told apart by their `params.kind`:

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
used when installed; `score_threshold`, default 0.4). Its mode is in the report's details.

Matching rule on labeled sets, per entity type: a predicted span is a true positive when it
overlaps a gold span of the same type; a gold span is found when a predicted span of the same
type overlaps it (precision counts predictions, recall counts gold spans, so one prediction
covering two gold spans finds both). `exact_*` metrics ask for the same start, end and type.
`redacted_recall` (row `ALL`) is the share of gold spans that the findings of any type cover
completely: what stays hidden whatever the type. Predictions of types outside the five labeled
ones (IP_ADDRESS, US_SSN, UK_NHS) are counted as `other_predictions`, in no precision.

Rows: one per dataset and entity type, `system` = `<system name>/<TYPE>` (the runner wants one
row per system and dataset), plus `<system name>/ALL` (micro-averaged) and, on a known-values
dataset, `<system name>/KNOWN_VALUES`.
"""

from __future__ import annotations

import itertools
import json
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberFormat
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
from policies.pii import PHONE_REGIONS, Finding, KnownValues, PIIGuard
from store.schemas import UserRecord

TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE")
DATASET_KINDS = ("labeled", "known-values")
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
    tallies: dict[str, Tally] = field(default_factory=lambda: {t: Tally() for t in TYPES})
    other_predictions: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


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
    guard: PIIGuard, examples: list[Example], progress: Progress | None = None
) -> LabeledScore:
    """Run the guard on every example and count matches per entity type."""
    score = LabeledScore()
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
        if system.type != "guard":
            raise SuiteError(f"systems[{index}].type: unknown type {system.type!r}; use guard")
    datasets = [(spec, _dataset_kind(index, spec)) for index, spec in enumerate(ctx.suite.datasets)]
    rows: list[Row] = []
    details: dict[str, Any] = {"datasets": {}, "systems": {}}
    tables: dict[str, list[dict[str, Any]]] = {}
    labeled: dict[str, list[Example]] = {}
    users: dict[str, list[UserRecord]] = {}
    for spec, kind in datasets:
        path = ctx.dataset_path(spec)
        if kind == "labeled":
            labeled[spec.name] = load_labeled(path, spec.params.get("part"))
        else:
            users[spec.name] = _load_users(path)
        size = len(labeled.get(spec.name, users.get(spec.name, [])))
        details["datasets"][spec.name] = {"kind": kind, "examples": size}
    steps = sum(map(len, labeled.values())) + sum(map(len, users.values()))
    ctx.set_total(len(systems) * steps)
    with tempfile.TemporaryDirectory(prefix="pii-eval-") as work_dir:
        for system in systems:
            guard = PIIGuard(
                spacy_model=str(system.params.get("spacy_model", "en_core_web_lg")),
                work_dir=Path(work_dir),
                score_threshold=float(system.params.get("score_threshold", 0.4)),
            )
            details["systems"][system.name] = {"mode": guard.mode, "degraded": guard.degraded}
            for spec, _ in datasets:
                if spec.name in labeled:
                    score = score_labeled(guard, labeled[spec.name], ctx.progress)
                    rows += _labeled_rows(spec.name, system.name, score)
                    if score.errors:
                        shown = score.errors[:MAX_ERRORS_SHOWN]
                        tables[f"errors on {spec.name} ({system.name})"] = shown
                else:
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
            "The labeled set is synthetic (data/pii/build.py): its names, emails, phones, cards"
            " and IBANs are generated, so the error tables show no real person's data.",
        ],
        tables=tables,
        details=details,
    )


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
