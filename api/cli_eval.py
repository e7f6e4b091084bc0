"""`attune eval`: run eval suites and compare their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

evaluate = typer.Typer(help="Run eval suites and compare their reports.", no_args_is_help=True)


@evaluate.command("run")
def eval_run_command(
    suite: Annotated[Path, typer.Argument(help="A suite file (YAML).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder; default var/evals/<suite>-<UTC time>."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run an eval suite and write its report; exit 1 if a threshold fails, 2 if the suite is bad."""
    from evals.base import SuiteError
    from evals.runner import run_suite

    try:
        report = run_suite(suite, out, show_progress=progress)
    except SuiteError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(str(report.out_dir))
    typer.echo(report.summary)
    if not report.passed:
        raise typer.Exit(1)


@evaluate.command("compare")
def eval_compare_command(
    a: Annotated[Path, typer.Argument(help="A report folder.")],
    b: Annotated[Path, typer.Argument(help="Another report folder.")],
) -> None:
    """Compare two eval reports metric by metric (a Markdown table)."""
    from evals.base import EvalError
    from evals.compare import compare_runs

    try:
        typer.echo(compare_runs(a, b), nl=False)
    except EvalError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
