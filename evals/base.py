"""What every eval suite kind shares: the suite file's schema, the result a kind returns, and the
registry that maps a suite's `kind` to the function that runs it.

A suite file (YAML) names its kind, its datasets, the systems to compare, the metrics and the
thresholds that gate it::

    name: movielens-small
    kind: ranking
    datasets:
      - name: ml-latest-small
        path: ${ATTUNE_DATA_DIR:-../shared/data}/movielens/ml-latest-small
    systems:
      - {name: most-popular, type: popularity}
      - {name: attune-hybrid, type: hybrid, params: {alpha: 0.5}}
    metrics: [recall@10, ndcg@10]
    params: {k: 10}
    thresholds:
      - {metric: ndcg@10, system: attune-hybrid, min: 0.05}
      - {metric: ndcg@10, system: attune-hybrid, min_ratio: 1.10, baseline: most-popular}

The runner (`evals/runner.py`) loads the file (expanding `${VAR}` and `${VAR:-default}` in
strings), calls the kind's function, checks thresholds and writes the report; a kind only
computes. Kinds register themselves with `@register("ranking")` in a module of `evals/` that the
runner imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    name: str = Field(min_length=1)
    path: Path | None = Field(None, description="Resolved against the suite file's folder.")
    params: dict[str, Any] = Field(default_factory=dict)


class SystemSpec(_Strict):
    name: str = Field(min_length=1)
    type: str = Field(min_length=1, description="Which implementation, as the kind knows it.")
    params: dict[str, Any] = Field(default_factory=dict)


class Threshold(_Strict):
    """A gate on one metric of one system (on every dataset unless `dataset` is given).

    `min`/`max` bound the value; `min_ratio` asks for value >= min_ratio x the baseline system's
    value on the same dataset.
    """

    metric: str
    system: str
    dataset: str | None = None
    min: float | None = None
    max: float | None = None
    min_ratio: float | None = None
    baseline: str | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.min is None and self.max is None and self.min_ratio is None:
            raise ValueError("a threshold needs min, max or min_ratio")
        if self.min_ratio is not None and self.baseline is None:
            raise ValueError("min_ratio needs a baseline system")
        return self


class Suite(_Strict):
    name: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    description: str = ""
    datasets: list[DatasetSpec] = Field(min_length=1)
    systems: list[SystemSpec] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    thresholds: list[Threshold] = Field(default_factory=list)
    seed: int = 0


@dataclass
class Row:
    """The metrics of one system on one dataset."""

    dataset: str
    system: str
    metrics: dict[str, float]
    # Optional spread per metric (e.g. bootstrap standard deviation or CI half-width).
    spread: dict[str, float] = field(default_factory=dict)


@dataclass
class Plot:
    """A figure the report shows: `draw(ax)` draws on a matplotlib Axes."""

    name: str  # file stem, e.g. "ndcg-by-system"
    title: str
    draw: Callable[[Any], None]


@dataclass
class SuiteResult:
    rows: list[Row]
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # Markdown paragraphs for the report
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra named tables
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able, kept in metrics.json
    # Which text embedder the suite's systems used (`embedder_label`); None = the suite embeds
    # no text. Every report states it, so a figure from the hashing fallback is never mistaken
    # for one from the real model.
    embedder: dict[str, Any] | None = None


def embedder_label(embedder: Any) -> dict[str, Any]:
    """What a report says about an embedder: its model, and whether it is a fallback and why."""
    reason = getattr(embedder, "degraded", None)
    return {
        "model": embedder.name,
        "dim": embedder.dim,
        "fallback": reason is not None,
        "reason": reason,
    }


Progress = Callable[[int], None]
"""Advance the run's progress bar by n steps."""


@dataclass
class RunContext:
    suite: Suite
    suite_dir: Path  # folder of the suite file: relative dataset paths resolve against it
    out_dir: Path  # the report folder; a kind may write extra files here
    progress: Progress = lambda n: None
    set_total: Callable[[int], None] = lambda n: None

    def dataset_path(self, dataset: DatasetSpec) -> Path:
        if dataset.path is None:
            raise ValueError(f"dataset {dataset.name!r} needs a path")
        return (self.suite_dir / dataset.path).resolve()


SuiteKind = Callable[[RunContext], SuiteResult]
KINDS: dict[str, SuiteKind] = {}


def register(kind: str) -> Callable[[SuiteKind], SuiteKind]:
    def decorate(function: SuiteKind) -> SuiteKind:
        KINDS[kind] = function
        return function

    return decorate


class EvalError(Exception):
    """Base of the errors of `evals`."""


class SuiteError(EvalError):
    """The suite file is wrong. The message names the file and the field, and says how to fix it.

    A kind raises it for a bad `params` or system `type` (naming the field, e.g.
    `systems[1].type: ...`); the runner adds the file name.
    """
