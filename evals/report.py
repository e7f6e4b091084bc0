"""The report folder of an eval run: metrics.json, report.md, report.html and one PNG per plot.

report.md is the report; report.html is the same Markdown rendered (raw HTML in notes or
descriptions is escaped), with images referenced by file name so the folder opens in a browser.
"""

from __future__ import annotations

import html
import json
import math
import platform
import re
import subprocess
from collections.abc import Callable, Container, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markdown_it import MarkdownIt

from evals.base import DatasetSpec, Row, RunContext, Suite, SuiteResult
from evals.threshold import ThresholdResult, summarize, verdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; line-height: 1.5; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .7rem; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
code { background: #f6f8fa; padding: 0 .25rem; border-radius: 3px; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class RunRecord:
    """What a finished run knows: the suite, when it ran, what the kind returned, the checks."""

    suite: Suite
    suite_file: Path
    datasets: list[dict[str, Any]]  # `dataset_label` of each of the suite's datasets
    started_at: datetime
    finished_at: datetime
    duration_s: float
    result: SuiteResult
    checks: list[ThresholdResult]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def write_report(out_dir: Path, record: RunRecord) -> None:
    """Write metrics.json, the plots, report.md and report.html into `out_dir`."""
    commit = _git_commit()
    charts = {
        dataset: _save_figure(
            out_dir, f"{dataset}-metrics", f"{dataset}: metrics by system", _metric_bars(rows)
        )
        for dataset, rows in _by_dataset(record.result.rows).items()
        if any(row.metrics for row in rows)
    }
    plots = [
        (plot.title, _save_figure(out_dir, plot.name, plot.title, _on_one_axes(plot.draw)))
        for plot in record.result.plots
    ]
    metrics = _metrics_json(record, commit, [*charts.values(), *(file for _, file in plots)])
    (out_dir / "metrics.json").write_text(
        json.dumps(_plain(metrics), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    markdown = _markdown(record, commit, charts, plots)
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    (out_dir / "report.html").write_text(_html(record.suite.name, markdown), encoding="utf-8")


def dataset_label(context: RunContext, dataset: DatasetSpec) -> dict[str, Any]:
    """What a report says about a dataset: its name, resolved path, and size on disk."""
    label: dict[str, Any] = {"name": dataset.name, "path": None, "files": 0, "bytes": 0}
    if dataset.path is None:
        return label
    path = context.dataset_path(dataset)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    label.update(path=str(path), files=len(files), bytes=sum(f.stat().st_size for f in files))
    if not path.exists():
        label["missing"] = True
    return label


def format_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def markdown_table(
    header: Sequence[str], body: Sequence[Sequence[str]], right: Container[int] = ()
) -> list[str]:
    """The lines of a Markdown table; columns whose index is in `right` align right."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = ["---:" if index in right else "---" for index in range(len(header))]
    return [line(header), "|" + "|".join(rule) + "|", *(line(cells) for cells in body)]


def slug(name: str) -> str:
    """A name made safe as a file name: runs of other characters become `-`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "unnamed"


def _by_dataset(rows: list[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row.dataset, []).append(row)
    return grouped


def _metric_names(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(metric for row in rows for metric in row.metrics))


def _save_figure(out_dir: Path, stem: str, title: str, draw: Callable[[Figure], None]) -> str:
    # The object-oriented API with an explicit Agg canvas: no pyplot state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure)
    figure.suptitle(title)
    file = f"{slug(stem)}.png"
    figure.savefig(out_dir / file, dpi=100)
    return file


def _on_one_axes(draw: Callable[[Any], None]) -> Callable[[Figure], None]:
    return lambda figure: draw(figure.subplots())


def _metric_bars(rows: list[Row]) -> Callable[[Figure], None]:
    """One subplot per metric, one bar per system, the spread as error bars."""

    def draw(figure: Figure) -> None:
        metrics = _metric_names(rows)
        columns = min(4, len(metrics))
        figure.set_size_inches(3.2 * columns + 0.4, 3.2 * math.ceil(len(metrics) / columns))
        grid = figure.subplots(math.ceil(len(metrics) / columns), columns, squeeze=False)
        axes = list(grid.flat)
        positions = range(len(rows))
        colors = [f"C{index % 10}" for index in positions]
        for ax, metric in zip(axes[: len(metrics)], metrics, strict=True):
            errors = [row.spread.get(metric, 0.0) for row in rows]
            ax.bar(
                positions,
                [row.metrics.get(metric, math.nan) for row in rows],
                yerr=errors if any(errors) else None,
                color=colors,
                capsize=3,
            )
            ax.set_xticks(positions, [row.system for row in rows], rotation=30, ha="right")
            ax.set_title(metric)
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)

    return draw


def _git_commit() -> str | None:
    """The commit of the checkout this code runs from, if it runs from one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _metrics_json(record: RunRecord, commit: str | None, plots: list[str]) -> dict[str, Any]:
    suite, result = record.suite, record.result
    return {
        "name": suite.name,
        "kind": suite.kind,
        "suite_file": str(record.suite_file),
        "started_at": record.started_at.isoformat(timespec="seconds"),
        "finished_at": record.finished_at.isoformat(timespec="seconds"),
        "duration_s": round(record.duration_s, 3),
        "git_commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "passed": record.passed,
        "summary": summarize(record.checks),
        "suite": suite.model_dump(mode="json"),
        "datasets": record.datasets,
        "embedder": result.embedder,
        "rows": [asdict(row) for row in result.rows],
        "thresholds": [check.to_json() for check in record.checks],
        "tables": result.tables,
        "notes": result.notes,
        "details": result.details,
        "plots": plots,
    }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy values as Python numbers, paths as strings, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    return value


def _markdown(
    record: RunRecord, commit: str | None, charts: dict[str, str], plots: list[tuple[str, str]]
) -> str:
    suite, result = record.suite, record.result
    lines = [f"# {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += [
        f"Kind `{suite.kind}` · suite `{record.suite_file}` · "
        f"started {record.started_at:%Y-%m-%d %H:%M:%S} UTC · {record.duration_s:.1f} s · "
        f"commit `{commit or 'unknown'}`",
        "",
        f"**{verdict(record.checks)}**",
        "",
        *_provenance(record),
    ]
    for dataset, rows in _by_dataset(result.rows).items():
        lines += [f"## Dataset {dataset}", "", *_rows_table(rows), ""]
        if dataset in charts:
            lines += [f"![{dataset} metrics]({charts[dataset]})", ""]
    if record.checks:
        lines += ["## Thresholds", "", *_checks_table(record.checks), ""]
    for name, table in result.tables.items():
        lines += [f"## {name}", "", *_extra_table(table), ""]
    if result.notes:
        lines += ["## Notes", ""]
        for note in result.notes:
            lines += [note.strip(), ""]
    if plots:
        lines += ["## Plots", ""]
        for title, file in plots:
            lines += [f"### {title}", "", f"![{title}]({file})", ""]
    return "\n".join(lines)


def _provenance(record: RunRecord) -> list[str]:
    """The datasets (name, path, size) and the embedder (model, fallback or not) of the run."""
    lines = ["## Datasets and embedder", ""]
    body = [
        [
            label["name"],
            f"`{label['path']}`" if label["path"] else "—",
            "missing" if label.get("missing") else f"{label['files']:,} files",
            "—" if label.get("missing") else f"{label['bytes'] / 1e6:,.2f} MB",
        ]
        for label in record.datasets
    ]
    lines += [*markdown_table(["dataset", "path", "files", "size"], body), ""]
    embedder = record.result.embedder
    if embedder is None:
        lines += ["Embedder: none (this suite embeds no text).", ""]
    elif embedder["fallback"]:
        lines += [
            f"Embedder: **`{embedder['model']}` (dim {embedder['dim']}), a FALLBACK** — "
            f"{embedder['reason']}",
            "",
        ]
    else:
        lines += [f"Embedder: `{embedder['model']}` (dim {embedder['dim']}), not a fallback.", ""]
    return lines


def _rows_table(rows: list[Row]) -> list[str]:
    metrics = _metric_names(rows)

    def cell(row: Row, metric: str) -> str:
        if metric not in row.metrics:
            return "—"
        value = format_number(row.metrics[metric])
        spread = row.spread.get(metric)
        return value if spread is None else f"{value} ± {format_number(spread)}"

    body = [[row.system, *(cell(row, metric) for metric in metrics)] for row in rows]
    return markdown_table(["system", *metrics], body, right=range(1, len(metrics) + 1))


def _checks_table(checks: list[ThresholdResult]) -> list[str]:
    def number(value: float | None) -> str:
        return "—" if value is None else format_number(value)

    body = [
        [
            "✔" if check.passed else "✘",
            check.dataset,
            check.threshold.system,
            check.threshold.metric,
            check.bound,
            number(check.actual),
            number(check.baseline_value),
            number(check.ratio),
            check.message,
        ]
        for check in checks
    ]
    header = ["", "dataset", "system", "metric", "bound", "actual", "baseline", "ratio", "why"]
    return markdown_table(header, body, right={5, 6, 7})


def _extra_table(table: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(key for entry in table for key in entry))

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return format_number(value)
        return str(value)

    numeric = {
        index
        for index, column in enumerate(columns)
        if all(isinstance(entry.get(column), int | float) for entry in table)
    }
    body = [[cell(entry.get(column)) for column in columns] for entry in table]
    return markdown_table(columns, body, right=numeric)


def _html(title: str, markdown: str) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )
