"""Scoring the PII guard's findings against the gold spans, and the known-value checks.

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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from evals.base import (
    Progress,
)
from evals.pii.datasets import (
    KNOWN_TEMPLATES,
    KNOWN_TYPES,
    LEGACY_TYPES,
    Example,
    Span,
    known_value_messages,
)
from evals.pii.systems import Finder
from policies.pii import Finding, KnownValues, PIIGuard
from store.schemas import UserRecord

MAX_ERRORS_SHOWN = 25


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
        precision = ratio(self.hits, self.predicted)
        recall = ratio(self.found, self.gold)
        exact_precision = ratio(self.exact, self.predicted)
        exact_recall = ratio(self.exact, self.gold)
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


def score_known_values(
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
    metrics = {"known_values_recall": ratio(sum(every), len(every)), "checks": float(len(every))}
    metrics |= {f"{kind}_recall": ratio(sum(v), len(v)) for kind, v in caught.items()}
    return metrics


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


def ratio(numerator: int, denominator: int) -> float:
    # No gold spans of a type: nothing to miss. No predictions: nothing wrongly flagged.
    return numerator / denominator if denominator else 1.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
