"""Running an eval suite: load and check the suite file, run its kind, check the thresholds, write
the report folder.

A kind reports progress through its `RunContext`: `set_total(n)` once it knows how many steps
there are, then `progress(k)` after each k steps; the runner shows them as a tqdm bar on stderr.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from tqdm import tqdm

from evals.base import KINDS, EvalError, Row, RunContext, Suite, SuiteError
from evals.report import RunRecord, dataset_label, slug, write_report
from evals.threshold import ThresholdResult, check_thresholds, summarize

# The modules whose import registers a kind with `@register(...)`. A module listed here must
# import: a broken kind is an error, never a kind that quietly goes missing.
KIND_MODULES: list[str] = [
    "evals.ranking.suite",
    "evals.ope.suite",
    "evals.bandits.suite",
    "evals.pii.suite",
    "evals.generation",
    "evals.safety.suite",
    "evals.search",
    "evals.predictions",
    "evals.fairness",
    "evals.experiment",
]

DEFAULT_OUT_ROOT = Path("var") / "evals"

# `${VAR}` or `${VAR:-default}`. A default holds no braces, so the innermost variable matches
# first and `${A:-${B:-x}/y}` expands from the inside out (see `_expand`).
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^{}]*))?\}")
_MAX_NESTING = 8


@dataclass
class RunReport:
    out_dir: Path
    passed: bool
    rows: list[Row]
    thresholds: list[ThresholdResult]

    @property
    def summary(self) -> str:
        return summarize(self.thresholds)


def load_suite(path: str | Path) -> Suite:
    """Read a suite file, expand `${VAR}` and `${VAR:-default}` in its strings, and validate it.

    Raises:
        SuiteError: the file cannot be read, is not YAML, does not fit the schema, uses an unset
            variable without a default, or names a kind no module registers.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SuiteError(f"{source}: cannot read the suite file: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SuiteError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: a suite file holds a mapping (name, kind, datasets, ...)")
    try:
        suite = Suite.model_validate(_expand(data, source, ""))
    except ValidationError as error:
        raise SuiteError(
            "\n".join(
                f"{source}: {_field(problem['loc']) or 'top level'}: "
                f"{problem['msg'].removeprefix('Value error, ')}"
                for problem in error.errors()
            )
        ) from error
    _import_kinds()
    if suite.kind not in KINDS:
        known = ", ".join(sorted(KINDS)) or "none (list kind modules in evals.runner.KIND_MODULES)"
        raise SuiteError(f"{source}: kind: unknown kind {suite.kind!r}; known kinds: {known}")
    return suite


def run_suite(
    path: str | Path, out_dir: str | Path | None = None, *, show_progress: bool = True
) -> RunReport:
    """Run the suite in `path` and write its report folder.

    The folder is `out_dir`, or `var/evals/<suite name>-<UTC time>` under the working directory.

    Raises:
        SuiteError: the suite file is wrong (see `load_suite`), or the kind found it wrong.
        EvalError: the kind returned two rows for the same system and dataset.
    """
    suite = load_suite(path)
    suite_file = Path(path).resolve()
    started_at = datetime.now(UTC)
    out = Path(out_dir) if out_dir is not None else _default_out_dir(suite, started_at)
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    with tqdm(desc=suite.name, unit="step", disable=not show_progress) as bar:
        context = RunContext(
            suite=suite,
            suite_dir=suite_file.parent,
            out_dir=out,
            progress=bar.update,
            set_total=partial(_set_total, bar),
        )
        try:
            result = KINDS[suite.kind](context)
        except SuiteError as error:
            raise SuiteError(f"{path}: {error}") from error
    record = RunRecord(
        suite=suite,
        suite_file=suite_file,
        datasets=[dataset_label(context, dataset) for dataset in suite.datasets],
        started_at=started_at,
        finished_at=datetime.now(UTC),
        duration_s=time.perf_counter() - clock,
        result=result,
        checks=check_thresholds(suite, _unique(suite.kind, result.rows)),
    )
    write_report(out, record)
    return RunReport(out_dir=out, passed=record.passed, rows=result.rows, thresholds=record.checks)


def _import_kinds() -> None:
    """Import every module of KIND_MODULES, so that their kinds are registered."""
    for name in KIND_MODULES:
        importlib.import_module(name)


def _default_out_dir(suite: Suite, started_at: datetime) -> Path:
    return DEFAULT_OUT_ROOT / f"{slug(suite.name)}-{started_at:%Y%m%d-%H%M%S}"


def _set_total(bar: tqdm, total: int) -> None:
    bar.total = total
    bar.refresh()


def _unique(kind: str, rows: list[Row]) -> list[Row]:
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row.dataset, row.system)
        if key in seen:
            raise EvalError(
                f"kind {kind!r} returned two rows for system {row.system!r} "
                f"on dataset {row.dataset!r}"
            )
        seen.add(key)
    return rows


def _expand(value: Any, source: str, where: str) -> Any:
    """`value` with the variables in its strings replaced; `where` is its field, for errors."""
    if isinstance(value, str):
        for _ in range(_MAX_NESTING):
            expanded = _VARIABLE.sub(partial(_lookup, source=source, where=where), value)
            if expanded == value:
                break
            value = expanded
        return value
    if isinstance(value, dict):
        return {
            key: _expand(item, source, f"{where}.{key}" if where else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, source, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def _lookup(match: re.Match[str], *, source: str, where: str) -> str:
    name, default = match["name"], match["default"]
    value = os.environ.get(name)
    # As in a shell, `:-` also replaces a variable that is set but empty.
    if default is not None and not value:
        return default
    if value is None:
        raise SuiteError(
            f"{source}: {where}: environment variable {name} is not set; "
            f"set it or give a default with ${{{name}:-default}}"
        )
    return value


def _field(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a reader writes it: `thresholds[0].min`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
