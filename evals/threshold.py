"""Checking a suite's thresholds against the rows a kind returned.

A threshold is checked once per dataset (or only on the dataset it names). A value that is not
there (no row for the system, no such metric, no such dataset) fails the check with a message
saying what is missing: a gate never passes by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evals.base import Row, Suite, Threshold


@dataclass(frozen=True)
class ThresholdResult:
    """One threshold checked on one dataset."""

    threshold: Threshold
    dataset: str
    passed: bool
    actual: float | None = None  # None when the value is missing
    baseline_value: float | None = None  # for min_ratio
    ratio: float | None = None  # actual / baseline_value; None when the baseline is 0
    message: str = ""  # why the check failed; empty when it passed

    @property
    def bound(self) -> str:
        """The bound as a reader writes it, e.g. `≥ 0.05, ≥ 1.1 × most-popular`."""
        threshold = self.threshold
        parts = []
        if threshold.min is not None:
            parts.append(f"≥ {threshold.min:g}")
        if threshold.max is not None:
            parts.append(f"≤ {threshold.max:g}")
        if threshold.min_ratio is not None:
            parts.append(f"≥ {threshold.min_ratio:g} × {threshold.baseline}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.threshold.model_dump(),
            "dataset": self.dataset,
            "bound": self.bound,
            "actual": self.actual,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "passed": self.passed,
            "message": self.message,
        }


def check_thresholds(suite: Suite, rows: list[Row]) -> list[ThresholdResult]:
    """Check every threshold of the suite on every dataset it applies to.

    A threshold without `dataset` applies to each dataset of the suite and to any other dataset
    the rows name, so a dataset the kind skipped fails instead of going unchecked.
    """
    by_key = {(row.dataset, row.system): row for row in rows}
    every_dataset = list(
        dict.fromkeys([d.name for d in suite.datasets] + [r.dataset for r in rows])
    )
    return [
        _check(threshold, dataset, by_key)
        for threshold in suite.thresholds
        for dataset in ([threshold.dataset] if threshold.dataset else every_dataset)
    ]


def verdict(checks: list[ThresholdResult]) -> str:
    """Passed or failed, and how many checks failed, e.g. `FAILED: 1 of 3 threshold checks fail`."""
    failed = sum(not check.passed for check in checks)
    if not checks:
        return "PASSED: no thresholds to check"
    if not failed:
        return f"PASSED: all {len(checks)} threshold checks pass"
    return f"FAILED: {failed} of {len(checks)} threshold checks fail"


def summarize(checks: list[ThresholdResult]) -> str:
    """The verdict and, on one line, why each failed check failed."""
    reasons = [
        f"{c.threshold.metric} of {c.threshold.system} on {c.dataset}: {c.message}"
        for c in checks
        if not c.passed
    ]
    return verdict(checks) + "".join(f"; {reason}" for reason in reasons)


class _Missing(Exception):
    """A value a threshold needs is not in the rows."""


def _check(
    threshold: Threshold, dataset: str, by_key: dict[tuple[str, str], Row]
) -> ThresholdResult:
    try:
        actual = _value(by_key, dataset, threshold.system, threshold.metric)
    except _Missing as missing:
        return ThresholdResult(threshold, dataset, passed=False, message=str(missing))
    # Comparisons are written so that NaN fails every bound.
    failures = []
    if threshold.min is not None and not actual >= threshold.min:
        failures.append(f"{actual:g} < min {threshold.min:g}")
    if threshold.max is not None and not actual <= threshold.max:
        failures.append(f"{actual:g} > max {threshold.max:g}")
    baseline_value = ratio = None
    if threshold.min_ratio is not None:
        assert threshold.baseline is not None  # the schema asks for a baseline with min_ratio
        try:
            baseline_value = _value(by_key, dataset, threshold.baseline, threshold.metric)
        except _Missing as missing:
            return ThresholdResult(
                threshold, dataset, passed=False, actual=actual, message=f"baseline: {missing}"
            )
        ratio = actual / baseline_value if baseline_value else None
        if not actual >= threshold.min_ratio * baseline_value:
            failures.append(
                f"{actual:g} < {threshold.min_ratio:g} × {baseline_value:g} ({threshold.baseline})"
            )
    return ThresholdResult(
        threshold,
        dataset,
        passed=not failures,
        actual=actual,
        baseline_value=baseline_value,
        ratio=ratio,
        message="; ".join(failures),
    )


def _value(by_key: dict[tuple[str, str], Row], dataset: str, system: str, metric: str) -> float:
    row = by_key.get((dataset, system))
    if row is None:
        there = ", ".join(s for d, s in by_key if d == dataset) or "none"
        raise _Missing(
            f"no row for system {system!r} on dataset {dataset!r} (systems with rows there: {there})"
        )
    if metric not in row.metrics:
        known = ", ".join(row.metrics) or "none"
        raise _Missing(
            f"system {system!r} has no metric {metric!r} on dataset {dataset!r} (its metrics: {known})"
        )
    return float(row.metrics[metric])
