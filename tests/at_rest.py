"""Reading what the service keeps on disk while it runs, without breaking it.

SQLite locks its database file and the WAL's shared-memory file with POSIX advisory locks, which
belong to the process: when this process closes *any* descriptor of such a file (as
`Path.read_bytes` does), every lock its live connections hold on it is gone. Another process
closing its last connection then believes itself the last, checkpoints and deletes the WAL and
shared memory under this process's connections, whose next statement fails with `disk I/O
error` (seen: tests/test_erasure.py's file scan, then `attune keys revoke` in a subprocess, then
any new connection here). Those two files are read by a child process instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_SQLITE_LOCKED = (".db", ".db-shm", ".sqlite", ".sqlite-shm")


def file_bytes(path: Path) -> bytes:
    """The file's bytes; a SQLite database or shared-memory file is read by another process."""
    if path.name.endswith(_SQLITE_LOCKED):
        return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout
    return path.read_bytes()
