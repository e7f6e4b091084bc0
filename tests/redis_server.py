"""A throwaway Redis server for the tests: `redis-server` on a free port of 127.0.0.1, no
persistence, stopped at the end of the session.

The server comes from the machine's `redis-server` (Debian's package, which `.ci/run` installs).
Without it the tests that need Redis are skipped with the reason, unless
`ATTUNE_TEST_REDIS=required` (as CI sets it), where a missing server fails the run instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import local_servers
from local_servers import free_port


def unavailable(reason: str) -> None:
    local_servers.unavailable("Redis", "ATTUNE_TEST_REDIS", reason)


@contextmanager
def redis_server() -> Iterator[str]:
    """Start `redis-server` in a temporary folder; yield its URL; stop it at the end."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        unavailable("redis-server not found (apt-get install redis-server)")
    assert binary is not None
    folder = Path(tempfile.mkdtemp(prefix="attune-redis-"))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode(errors="replace") if server.stdout else ""
                unavailable(f"redis-server did not start ({server.poll()}): {output[-500:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)
