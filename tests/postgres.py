"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder, on a free
port of 127.0.0.1, trust authentication, stopped at the end of the session.

The server comes from the machine's PostgreSQL binaries (Debian's `postgresql` package, which
`.ci/run` installs). Without them the PostgreSQL half of the suite is skipped with the reason, unless
`ATTUNE_TEST_POSTGRES=required` (as CI sets it), where a missing server fails the run instead.
PostgreSQL refuses to run as root, so under root the cluster is owned by and run as `postgres`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import local_servers
from local_servers import free_port

SEARCH = ("/usr/lib/postgresql",)


def binaries() -> Path | None:
    """The bin folder of the newest installed PostgreSQL, or None."""
    for root in SEARCH:
        versions = sorted(Path(root).glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if versions:
            return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def unavailable(reason: str) -> None:
    local_servers.unavailable("PostgreSQL", "ATTUNE_TEST_POSTGRES", reason)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster in a new temporary folder (directly under the system's temporary
    folder, so that the `postgres` user can reach it); yield the SQLAlchemy URL of its
    `postgres` database; stop it and remove the folder at the end."""
    bin_dir = binaries()
    if bin_dir is None:
        unavailable("initdb not found (apt-get install postgresql)")
    assert bin_dir is not None
    folder = Path(tempfile.mkdtemp(prefix="attune-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            log = folder / "log"
            unavailable(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
                + (f"; server log: {log.read_text()[-500:]}" if log.exists() else "")
            )

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c full_page_writes=off"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-l",
        str(folder / "log"),
        "start",
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """A new, empty database on the server of `url`; its URL."""
    import psycopg

    base = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"
