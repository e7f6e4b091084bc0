"""Two eval report folders side by side, as Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.base import EvalError
from evals.report import format_number, markdown_table

_MISSING = "—"


def compare_runs(a_dir: str | Path, b_dir: str | Path) -> str:
    """A Markdown table of every (dataset, system, metric) in either run: A, B and the deltas.

    Raises:
        EvalError: a folder has no metrics.json, or it is not an eval report.
    """
    a, b = _load(Path(a_dir)), _load(Path(b_dir))
    values_a, values_b = _values(a), _values(b)
    body = [
        [
            *key,
            _number(values_a.get(key)),
            _number(values_b.get(key)),
            *_deltas(values_a.get(key), values_b.get(key)),
        ]
        for key in dict.fromkeys([*values_a, *values_b])
    ]
    header = ["dataset", "system", "metric", "A", "B", "Δ", "Δ %"]
    return "\n".join(
        [
            f"- A: `{a_dir}`: {_describe(a)}",
            f"- B: `{b_dir}`: {_describe(b)}",
            "",
            *markdown_table(header, body, right={3, 4, 5, 6}),
            "",
        ]
    )


def _load(folder: Path) -> dict[str, Any]:
    file = folder / "metrics.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise EvalError(
            f"{folder}: no metrics.json; pass a report folder written by `attune eval run`"
        ) from error
    except json.JSONDecodeError as error:
        raise EvalError(f"{file}: not valid JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise EvalError(f"{file}: not an eval report (it has no rows)")
    return data


def _values(run: dict[str, Any]) -> dict[tuple[str, str, str], float | None]:
    return {
        (row["dataset"], row["system"], metric): value
        for row in run["rows"]
        for metric, value in row["metrics"].items()
    }


def _describe(run: dict[str, Any]) -> str:
    verdict = "PASSED" if run.get("passed") else "FAILED"
    return f"suite {run.get('name')}, started {run.get('started_at')}, {verdict}"


def _number(value: float | None) -> str:
    return _MISSING if value is None else format_number(value)


def _deltas(a: float | None, b: float | None) -> list[str]:
    if a is None or b is None:
        return [_MISSING, _MISSING]
    delta = b - a
    absolute = ("+" if delta > 0 else "") + format_number(delta)
    return [absolute, f"{delta / abs(a):+.1%}" if a else _MISSING]
