"""GET /v1/drift: the drift monitors checked now (scope `reports` or `admin`, never bound)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from agents.retrain import check
from api.auth import ReportsCaller
from api.deps import ServicesDep

router = APIRouter(prefix="/v1", tags=["reports"])


class WindowOut(BaseModel):
    decisions: int
    first: str | None
    last: str | None


class MonitorOut(BaseModel):
    monitor: str  # input | outcome | catalog
    name: str
    statistic: float | None
    threshold: float
    breached: bool
    reference: dict[str, Any]
    current: dict[str, Any]


class DriftOut(BaseModel):
    checked_at: str
    status: str  # ok | drift | collecting
    reference: WindowOut
    current: WindowOut
    monitors: list[MonitorOut]
    retrained: dict[str, Any] | None


@router.get("/drift", response_model=DriftOut)
async def drift(services: ServicesDep, caller: ReportsCaller) -> DriftOut:
    """Each drift monitor's statistic, threshold, windows and whether it crossed (no retraining)."""
    report = await run_in_threadpool(check, services, retrain=False)
    return DriftOut.model_validate(report.as_dict())
