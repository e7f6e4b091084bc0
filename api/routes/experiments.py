"""GET /v1/experiments/report: the experiment report over the decision log, as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from agents.rewards import settle
from agents.services import Services
from api.auth import ReportsCaller
from api.deps import ServicesDep
from evals.experiment import experiment_report

router = APIRouter(prefix="/v1", tags=["experiments"])


class ExperimentReportOut(BaseModel):
    experiment: str | None = Field(description="The experiment's id; None when none is logged.")
    decisions: int
    arms: dict[str, Any] = Field(default_factory=dict)
    uplift: dict[str, Any] = Field(default_factory=dict)
    srm: dict[str, Any] | None = None
    off_policy: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    note: str | None = None


@router.get("/experiments/report", response_model=ExperimentReportOut)
async def get_experiment_report(
    services: ServicesDep, caller: ReportsCaller
) -> ExperimentReportOut:
    """The experiment report: per arm, uplift with intervals, sample ratio, off-policy estimate."""
    return ExperimentReportOut.model_validate(await run_in_threadpool(_report, services))


def _report(services: Services) -> dict[str, Any]:
    settle(services)  # windows that closed since the last sweep are rewarded before reading
    with services.db.session() as session:
        return experiment_report(session, services.policy.policy.experiment)
