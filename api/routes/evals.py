"""GET /v1/evals/reports: the eval reports the service's home holds, read-only.

`attune eval run` writes a report folder (metrics.json, report.md, report.html, plots) under
`var/evals/` by default, which is `ATTUNE_HOME/evals` when the service runs from the same folder
with the default home. This lists the folders of `ATTUNE_HOME/evals` that hold a metrics.json,
and returns one report's metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, HTTPException, Path

from api.auth import EvalCaller
from api.deps import ServicesDep
from api.schemas import EvalReportOut
from store.errors import NotFound

router = APIRouter(prefix="/v1", tags=["evals"])
ReportId = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@router.get("/evals/reports", response_model=list[EvalReportOut])
def list_reports(services: ServicesDep, caller: EvalCaller) -> list[EvalReportOut]:
    """The eval reports under ATTUNE_HOME/evals, newest first."""
    _unbound(caller.bound_user)
    root = services.settings.home / "evals"
    reports = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        metrics = _metrics(folder)
        if metrics is None:
            continue
        reports.append(
            EvalReportOut(
                report_id=folder.name,
                name=str(metrics.get("name") or folder.name),
                kind=str(metrics.get("kind") or ""),
                started_at=_text(metrics.get("started_at")),
                passed=metrics["passed"] if isinstance(metrics.get("passed"), bool) else None,
                summary=_text(metrics.get("summary")),
            )
        )
    return sorted(reports, key=lambda r: (r.started_at or "", r.report_id), reverse=True)


@router.get("/evals/reports/{report_id}", response_model=dict[str, Any])
def read_report(
    services: ServicesDep, caller: EvalCaller, report_id: str = ReportId
) -> dict[str, Any]:
    """One eval report's metrics.json: rows, thresholds, tables and notes."""
    _unbound(caller.bound_user)
    metrics = _metrics(services.settings.home / "evals" / report_id)
    if metrics is None:
        raise NotFound(f"no eval report {report_id!r}")
    return metrics


def _unbound(bound_user: str | None) -> None:
    if bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot read eval reports")


def _metrics(folder: FilePath) -> dict[str, Any] | None:
    """A report folder's metrics.json, or None when it has none (or it is not a JSON object)."""
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
