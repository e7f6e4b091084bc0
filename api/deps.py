"""FastAPI dependencies as type aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agents.services import Services


async def get_services(request: Request) -> Services:
    # A coroutine, though it only reads an attribute: FastAPI runs a plain `def` dependency in
    # its threadpool, a hop through a worker thread on every request for nothing.
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
