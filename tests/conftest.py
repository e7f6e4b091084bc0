"""Test-wide guards: nothing reaches the internet, nothing waits on a model hub."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

# Set before any test module imports transformers or huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_real_connect = socket.socket.connect


def _is_local(address: object) -> bool:
    if isinstance(address, str):  # a Unix socket path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny sentence-transformers model (32 dimensions), built once per session."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def pii_guard(tmp_path_factory: pytest.TempPathFactory):
    """One PII guard for the session: it is heavy to build, as in the service."""
    from policies.pii import PIIGuard

    return PIIGuard()


@pytest.fixture(scope="session")
def demo_services(tmp_path_factory: pytest.TempPathFactory):
    """The service on the demo world, seeded once per session into a temporary home."""
    from agents.factory import build_services
    from agents.seed import seed
    from agents.settings import PROJECT_ROOT, Settings

    services = build_services(Settings(home=tmp_path_factory.mktemp("home"), seed=7))
    seed(services, PROJECT_ROOT / "data" / "demo")
    yield services
    services.close()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (see tests/postgres.py); the URL of its admin database."""
    from postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    """The session's Redis server (see tests/redis_server.py); its URL."""
    from redis_server import redis_server

    with redis_server() as url:
        yield url


_databases = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each dialect the store supports: a SQLite file, and a new database
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'attune.db'}"
    from postgres import create_database

    return create_database(request.getfixturevalue("postgres"), f"t{next(_databases)}")
