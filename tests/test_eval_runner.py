"""The eval runner end to end on a small real kind: suite loading, thresholds, report, CLI."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from api.cli import app
from evals import runner
from evals.base import (
    KINDS,
    DatasetSpec,
    EvalError,
    Plot,
    Row,
    RunContext,
    Suite,
    SuiteError,
    SuiteResult,
    Threshold,
    register,
)
from evals.compare import compare_runs
from evals.runner import load_suite, run_suite
from evals.threshold import ThresholdResult, check_thresholds

NUMBERS = [1.5, 2.25, 4.0, 7.75]


@register("toy")
def toy(context: RunContext) -> SuiteResult:
    """Mean and max of the numbers in each dataset file, each system scaling them by its `scale`."""
    suite = context.suite
    context.set_total(len(suite.datasets) * len(suite.systems))
    rows = []
    for dataset in suite.datasets:
        numbers = [float(word) for word in context.dataset_path(dataset).read_text().split()]
        for system in suite.systems:
            values = [number * system.params.get("scale", 1.0) for number in numbers]
            rows.append(
                Row(
                    dataset.name,
                    system.name,
                    {"mean": statistics.fmean(values), "max": max(values)},
                    spread={"mean": statistics.pstdev(values)},
                )
            )
            context.progress(1)
    return SuiteResult(
        rows=rows,
        plots=[Plot("numbers", "The numbers", lambda ax: ax.plot(numbers))],
        notes=["Scaled numbers: *mean* and max."],
        tables={"Sizes": [{"dataset": d.name, "count": len(numbers)} for d in suite.datasets]},
        details={"seed": suite.seed},
    )


def _suite(tmp_path: Path, **changes: Any) -> Path:
    (tmp_path / "numbers.txt").write_text(" ".join(map(str, NUMBERS)))
    suite = {
        "name": "toy suite",
        "kind": "toy",
        "description": "Numbers, scaled.",
        "datasets": [{"name": "numbers", "path": "numbers.txt"}],
        "systems": [
            {"name": "single", "type": "scale"},
            {"name": "double", "type": "scale", "params": {"scale": 2.0}},
        ],
        "thresholds": [{"metric": "mean", "system": "double", "min": 1.0}],
        **changes,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(tmp_path: Path, **changes: Any) -> runner.RunReport:
    return run_suite(_suite(tmp_path, **changes), tmp_path / "report", show_progress=False)


def test_run_writes_the_report_with_the_computed_numbers(tmp_path: Path) -> None:
    thresholds = [
        {"metric": "mean", "system": "double", "min": 1.0},
        {"metric": "max", "system": "double", "min_ratio": 1.5, "baseline": "single"},
    ]

    report = _run(tmp_path, thresholds=thresholds)

    mean, top = statistics.fmean(NUMBERS), max(NUMBERS)
    assert report.passed
    assert report.out_dir == tmp_path / "report"
    metrics = json.loads((report.out_dir / "metrics.json").read_text())
    assert metrics["name"] == "toy suite"
    assert metrics["kind"] == "toy"
    assert metrics["passed"] is True
    assert metrics["suite"]["systems"][1]["params"] == {"scale": 2.0}
    assert metrics["rows"][1]["dataset"] == "numbers"
    assert metrics["rows"][1]["system"] == "double"
    assert metrics["rows"][1]["metrics"] == pytest.approx({"mean": 2 * mean, "max": 2 * top})
    assert metrics["rows"][0]["spread"]["mean"] == pytest.approx(statistics.pstdev(NUMBERS))
    assert metrics["thresholds"][0]["actual"] == pytest.approx(2 * mean)
    assert metrics["thresholds"][0]["passed"] is True
    assert metrics["thresholds"][1]["baseline_value"] == pytest.approx(top)
    assert metrics["thresholds"][1]["ratio"] == pytest.approx(2.0)
    assert metrics["tables"] == {"Sizes": [{"dataset": "numbers", "count": 4}]}
    assert metrics["details"] == {"seed": 0}
    assert metrics["duration_s"] >= 0
    assert {"started_at", "finished_at", "git_commit", "python", "platform"} <= metrics.keys()
    for plot in ("numbers-metrics.png", "numbers.png"):
        assert (report.out_dir / plot).read_bytes().startswith(b"\x89PNG")
    assert metrics["plots"] == ["numbers-metrics.png", "numbers.png"]

    markdown = (report.out_dir / "report.md").read_text()
    assert "# toy suite" in markdown
    assert (
        f"| double | {2 * mean:.4g} ± {2 * statistics.pstdev(NUMBERS):.4g} | {2 * top:.4g} |"
        in (markdown)
    )
    assert "| ✔ | numbers | double | mean | ≥ 1 |" in markdown
    assert f"| ✔ | numbers | double | max | ≥ 1.5 × single | {2 * top:.4g} | {top:.4g} | 2 |" in (
        markdown
    )
    assert "![numbers metrics](numbers-metrics.png)" in markdown
    assert "![The numbers](numbers.png)" in markdown
    html = (report.out_dir / "report.html").read_text()
    assert "<title>toy suite</title>" in html
    assert f'<td style="text-align:right">{top:.4g}</td>' in html
    assert '<img src="numbers.png" alt="The numbers" />' in html
    assert "<em>mean</em>" in html


def test_report_html_escapes_raw_html(tmp_path: Path) -> None:
    report = _run(tmp_path, name="<b>toy</b>", description="<script>alert(1)</script>")

    html = (report.out_dir / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<title>&lt;b&gt;toy&lt;/b&gt;</title>" in html


def _check(rows: list[Row], datasets: list[str], **threshold: Any) -> list[ThresholdResult]:
    suite = Suite(
        name="toy",
        kind="toy",
        datasets=[DatasetSpec(name=name, path=None) for name in datasets],
        thresholds=[Threshold.model_validate(threshold)],
    )
    return check_thresholds(suite, rows)


ROWS = [
    Row("numbers", "single", {"mean": statistics.fmean(NUMBERS), "max": max(NUMBERS)}),
    Row("numbers", "double", {"mean": 2 * statistics.fmean(NUMBERS), "max": 2 * max(NUMBERS)}),
]


@pytest.mark.parametrize("min_ratio, passed", [(1.5, True), (2.0, True), (2.5, False)])
def test_min_ratio_compares_with_the_baseline(min_ratio: float, passed: bool) -> None:
    [check] = _check(
        ROWS, ["numbers"], metric="max", system="double", min_ratio=min_ratio, baseline="single"
    )

    assert check.passed is passed
    assert check.actual == 2 * max(NUMBERS)
    assert check.baseline_value == max(NUMBERS)
    assert check.ratio == 2.0
    assert check.bound == f"≥ {min_ratio:g} × single"


@pytest.mark.parametrize(
    "threshold, message",
    [
        ({"system": "triple"}, "no row for system 'triple' on dataset 'numbers'"),
        ({"metric": "median"}, "system 'double' has no metric 'median' on dataset 'numbers'"),
        ({"dataset": "letters"}, "no row for system 'double' on dataset 'letters'"),
        (
            {"min_ratio": 1.0, "baseline": "nobody"},
            "baseline: no row for system 'nobody' on dataset 'numbers'",
        ),
    ],
)
def test_a_threshold_on_a_missing_value_fails(threshold: dict[str, Any], message: str) -> None:
    [check] = _check(
        ROWS, ["numbers"], **{"metric": "mean", "system": "double", "min": 0, **threshold}
    )

    assert not check.passed
    assert message in check.message


def test_a_threshold_fails_on_a_dataset_the_kind_skipped() -> None:
    checks = _check(ROWS, ["numbers", "letters"], metric="mean", system="double", min=0)

    assert [(check.dataset, check.passed) for check in checks] == [
        ("numbers", True),
        ("letters", False),
    ]


def test_nan_fails_every_bound() -> None:
    rows = [Row("numbers", "double", {"mean": math.nan})]

    assert not _check(rows, ["numbers"], metric="mean", system="double", max=1)[0].passed
    assert not _check(rows, ["numbers"], metric="mean", system="double", min=0)[0].passed


def test_a_threshold_on_a_missing_system_fails_the_run(tmp_path: Path) -> None:
    report = _run(tmp_path, thresholds=[{"metric": "mean", "system": "triple", "min": 0}])

    assert not report.passed
    metrics = json.loads((report.out_dir / "metrics.json").read_text())
    assert metrics["passed"] is False
    assert "no row for system 'triple'" in metrics["thresholds"][0]["message"]
    assert "no row for system 'triple'" in (report.out_dir / "report.md").read_text()


def test_a_failing_threshold_exits_1(tmp_path: Path) -> None:
    suite = _suite(tmp_path, thresholds=[{"metric": "max", "system": "single", "max": 5}])

    result = CliRunner().invoke(
        app, ["eval", "run", str(suite), "--out", str(tmp_path / "report"), "--no-progress"]
    )

    assert result.exit_code == 1
    assert str(tmp_path / "report") in result.stdout
    assert (
        f"FAILED: 1 of 1 threshold checks fail; max of single on numbers: {max(NUMBERS):g} > max 5"
        in (result.stdout)
    )
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["passed"] is False


def test_a_passing_run_exits_0_and_reports_into_a_folder_named_after_suite_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = _suite(tmp_path)
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["eval", "run", str(suite), "--no-progress"])

    assert result.exit_code == 0, result.output
    folder, summary = result.stdout.splitlines()
    assert summary == "PASSED: all 1 threshold checks pass"
    assert Path(folder).parent == Path("var/evals")
    assert Path(folder).name.startswith("toy-suite-20")
    assert (tmp_path / folder / "metrics.json").exists()


def test_variables_expand_with_their_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _suite(
        tmp_path,
        name="${TOY_NAME}",
        datasets=[{"name": "numbers", "path": "${TOY_DIR:-.}/numbers.txt"}],
    )
    monkeypatch.setenv("TOY_NAME", "named by env")
    monkeypatch.delenv("TOY_DIR", raising=False)

    assert load_suite(path).name == "named by env"
    assert load_suite(path).datasets[0].path == Path("numbers.txt")
    monkeypatch.setenv("TOY_DIR", "/data")
    assert load_suite(path).datasets[0].path == Path("/data/numbers.txt")


def test_a_default_may_hold_another_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _suite(
        tmp_path,
        datasets=[{"name": "numbers", "path": "${TOY_FILE:-${TOY_DIR:-.}/sub}/numbers.txt"}],
    )
    monkeypatch.delenv("TOY_FILE", raising=False)
    monkeypatch.delenv("TOY_DIR", raising=False)
    assert load_suite(path).datasets[0].path == Path("sub/numbers.txt")
    monkeypatch.setenv("TOY_DIR", "/data")
    assert load_suite(path).datasets[0].path == Path("/data/sub/numbers.txt")
    monkeypatch.setenv("TOY_FILE", "/elsewhere")
    assert load_suite(path).datasets[0].path == Path("/elsewhere/numbers.txt")


def test_every_report_names_its_datasets_and_says_when_no_embedder_was_used(
    tmp_path: Path,
) -> None:
    report = _run(tmp_path)

    metrics = json.loads((report.out_dir / "metrics.json").read_text())
    numbers = tmp_path / "numbers.txt"
    assert metrics["datasets"] == [
        {"name": "numbers", "path": str(numbers), "files": 1, "bytes": numbers.stat().st_size}
    ]
    assert metrics["embedder"] is None
    markdown = (report.out_dir / "report.md").read_text()
    assert f"| numbers | `{numbers}` | 1 files |" in markdown
    assert "Embedder: none (this suite embeds no text)." in markdown


def test_an_unset_variable_without_default_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOY_MISSING", raising=False)
    path = _suite(tmp_path, datasets=[{"name": "numbers", "path": "${TOY_MISSING}/numbers.txt"}])

    with pytest.raises(SuiteError, match=r"suite\.yaml: datasets\[0\]\.path: .*TOY_MISSING"):
        load_suite(path)


def test_a_bad_suite_exits_2_naming_the_field(tmp_path: Path) -> None:
    suite = _suite(tmp_path, thresholds=[{"metric": "mean", "system": "double"}])

    result = CliRunner().invoke(app, ["eval", "run", str(suite), "--no-progress"])

    assert result.exit_code == 2
    assert "suite.yaml: thresholds[0]: a threshold needs min, max or min_ratio" in result.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"datasets": []}, r"suite\.yaml: datasets: List should have at least 1 item"),
        ({"colour": "red"}, r"suite\.yaml: colour: Extra inputs are not permitted"),
        ({"systems": [{"name": "x"}]}, r"suite\.yaml: systems\[0\]\.type: Field required"),
        ({"kind": "nope"}, r"suite\.yaml: kind: unknown kind 'nope'; known kinds: .*toy"),
    ],
)
def test_load_suite_errors_name_file_and_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suite(_suite(tmp_path, **changes))


def test_a_suite_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("- just\n- a list\n")

    with pytest.raises(SuiteError, match=r"suite\.yaml: a suite file holds a mapping"):
        load_suite(path)


def test_a_kind_module_that_does_not_import_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "KIND_MODULES", ["evals.no_such_kind"])

    with pytest.raises(ModuleNotFoundError, match=r"evals\.no_such_kind"):
        load_suite(_suite(tmp_path))


def test_compare_shows_both_values_and_the_deltas(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b", systems=[{"name": "single", "type": "scale", "params": {"scale": 3}}])

    table = compare_runs(a.out_dir, b.out_dir)

    mean = statistics.fmean(NUMBERS)
    assert (
        f"| numbers | single | mean | {mean:.4g} | {3 * mean:.4g} | +{2 * mean:.4g} | +200.0% |"
        in (table)
    )
    assert f"| numbers | double | mean | {2 * mean:.4g} | — | — | — |" in table
    assert "suite toy suite" in table
    assert "PASSED" in table
    assert "FAILED" in table  # run B has no "double" system for its threshold
    result = CliRunner().invoke(app, ["eval", "compare", str(a.out_dir), str(b.out_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout == table


def test_compare_refuses_a_folder_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"no metrics\.json"):
        compare_runs(tmp_path, tmp_path)
    result = CliRunner().invoke(app, ["eval", "compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2
    assert "no metrics.json" in result.stderr


def test_a_kind_returning_two_rows_for_one_system_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def twice(context: RunContext) -> SuiteResult:
        return SuiteResult(rows=[Row("numbers", "single", {"mean": 1.0})] * 2)

    monkeypatch.setitem(KINDS, "toy-twice", twice)

    with pytest.raises(EvalError, match="two rows for system 'single' on dataset 'numbers'"):
        _run(tmp_path, kind="toy-twice")
