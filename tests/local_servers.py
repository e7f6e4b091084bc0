"""What the throwaway servers of the tests share (`postgres.py`, `redis_server.py`): a free
port on 127.0.0.1, and what to do when a server's binaries are missing — skip with the reason,
or fail where its `ATTUNE_TEST_<NAME>=required` says the run needs it (as CI sets them)."""

from __future__ import annotations

import os
import socket

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable(server: str, variable: str, reason: str) -> None:
    if os.environ.get(variable) == "required":
        pytest.fail(f"{server} is required here ({variable}=required): {reason}")
    pytest.skip(f"no {server} server for the tests: {reason}")
