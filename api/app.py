"""The FastAPI application: one router per resource, services built once by the factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agents.factory import Services, build_services, settle
from agents.settings import Settings
from api import errors
from api.routes import catalog, decide, decisions, events, feedback, health, users


def create_app(
    settings: Settings | None = None, *, services: Callable[[], Services] | None = None
) -> FastAPI:
    """An app whose services are built at start-up (or given, for tests) and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services() if services is not None else build_services(settings or Settings())
        app.state.services = built
        settle()
        try:
            yield
        finally:
            if services is None:
                built.close()

    app = FastAPI(
        title="Attune",
        version="0.1.0",
        summary="Personalized, policy-safe, explained decisions: items, an offer and copy.",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (decide, events, feedback, decisions, users, catalog, health):
        app.include_router(module.router)
    return app
