"""The FastAPI application: one router per resource, services built once by the factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from agents.copy.jobs import JobRunner
from agents.factory import build_services, settle
from agents.retrain import DriftLoop
from agents.rewards import RewardSweeper
from agents.services import Services
from agents.settings import Settings
from api import errors
from api.access_log import AccessLog
from api.auth import BodyLimit, RateLimits
from api.cors import Cors
from api.gate import Gate
from api.routes import (
    admin,
    audience,
    batch,
    catalog,
    chat,
    completions,
    console,
    copy,
    decide,
    decisions,
    drift,
    evals,
    events,
    experiments,
    feedback,
    health,
    home,
    items,
    jobs,
    metrics,
    rank,
    users,
)
from api.schemas import ERROR_RESPONSES

DOCS_ASSETS = "/static/docs"  # where Swagger UI's and ReDoc's files are served


def create_app(
    settings: Settings | None = None, *, services: Callable[[], Services] | None = None
) -> FastAPI:
    """An app whose services are built at start-up (or given, for tests) and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services() if services is not None else build_services(settings or Settings())
        app.state.services = built
        app.state.rate_limits = RateLimits(
            built.settings.rate_limit_per_minute, built.settings.rate_limit_storage
        )
        # Decisions made on the event loop, ranks, similar items and event batches take turns
        # through it (`api.gate`).
        app.state.cpu_gate = Gate(1)
        # Copy jobs: worker loops in this process, unless `attune worker` processes run them.
        runner = JobRunner(built) if built.settings.jobs_in_api else None
        # Drift monitors: checked (and acted on) every drift_check_seconds in this process.
        watch = DriftLoop(built) if built.settings.drift_check_seconds > 0 else None
        app.state.copy_jobs = runner
        # Rewards of closed attribution windows, with the jobs (or by `attune worker`).
        sweeper = RewardSweeper(built, built.settings.reward_sweep_s) if runner else None
        settle()
        try:
            yield
        finally:
            if runner is not None:
                runner.close()
            if watch is not None:
                watch.close()
            if sweeper is not None:
                sweeper.close()
            if services is None:
                built.close()

    # Swagger UI and ReDoc from the assets fastapi-offline ships, not from a CDN: the docs load
    # on a machine with no internet.
    app = FastAPIOffline(
        title="Attune",
        version="0.1.0",
        summary="Personalized, policy-safe, explained decisions: items, an offer and copy.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        # Swagger UI's validator badge would send the schema to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    errors.install(app)
    for module in (
        decide,
        chat,
        completions,
        copy,
        jobs,
        events,
        feedback,
        decisions,
        drift,
        users,
        catalog,
        items,
        rank,
        batch,
        admin,
        health,
        metrics,
        audience,
        evals,
        console,
        experiments,
        home,
    ):
        plain = module is health or module is home
        app.include_router(module.router, responses={} if plain else ERROR_RESPONSES)
    app.add_middleware(BodyLimit)
    app.add_middleware(home.PagePolicy)

    app.add_middleware(AccessLog)

    # Outermost, so that every answer (a 401, a 413) carries the CORS headers a page needs to
    # read it, and a preflight is answered before anything else runs.
    app.add_middleware(Cors)
    return app
