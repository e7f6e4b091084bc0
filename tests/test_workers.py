"""Several workers: `attune serve --workers N` (refused in one line on the embedded parts),
rate limits shared through Redis by two apps on one PostgreSQL, and a copy job that survives a
kill -9 of its `attune worker` and completes under the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai import Reply, fake_openai
from fastapi.testclient import TestClient
from postgres import create_database
from typer.testing import CliRunner

from agents.copy.jobs import stored_request
from agents.copy.state import CopyRequest
from agents.factory import build_services
from agents.seed import seed
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from api.app import create_app
from api.auth import RateLimits
from api.cli import app as cli
from store.access import create_key
from store.bandit import get_arms
from store.copy import get_variants
from store.db import Database
from store.jobs import create_job, get_job

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from api.cli import app; app()"]
LOGS: dict[int, Path] = {}  # worker pid → its log file


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTUNE_")}
    env.update(PYTHONPATH=str(ROOT), ATTUNE_HOME=str(home), HF_HUB_OFFLINE="1", **extra)
    return env


def test_a_second_worker_on_the_embedded_defaults_is_refused_in_one_line(tmp_path: Path) -> None:
    """The process exits with 2 and one line that says how to scale: no traceback, no server
    started, so nothing to respawn; nothing is built in the home either."""
    done = subprocess.run(
        [*CLI, "serve", "--workers", "2"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert "SQLite" in line and "Qdrant Edge" in line
    for setting in ("ATTUNE_DATABASE_URL=postgresql", "ATTUNE_VECTOR_BACKEND=qdrant"):
        assert setting in line
    assert "ATTUNE_QDRANT_URL" in line and "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        (
            {"ATTUNE_DATABASE_URL": "postgresql+psycopg://a@127.0.0.1/a"},
            "Qdrant Edge",
            "SQLite",
        ),
        (
            {"ATTUNE_VECTOR_BACKEND": "qdrant", "ATTUNE_QDRANT_URL": "http://127.0.0.1:6333"},
            "SQLite",
            "Qdrant",
        ),
        ({"ATTUNE_VECTOR_BACKEND": "qdrant"}, "local mode", "SQLite store and the"),
    ],
)
def test_each_embedded_part_is_named_when_refusing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    named: str,
    not_named: str,
) -> None:
    monkeypatch.setenv("ATTUNE_HOME", str(tmp_path))
    if "ATTUNE_DATABASE_URL" not in env:
        monkeypatch.delenv("ATTUNE_DATABASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve", "--workers", "3"])
    assert result.exit_code == 2
    assert named in result.output and not_named not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_several_workers_on_postgresql_and_a_qdrant_server_are_uvicorn_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On shared parts the command starts uvicorn's workers on the app factory, each building
    its own services (the parent only seeds and closes what it built)."""
    monkeypatch.setenv("ATTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("ATTUNE_DATABASE_URL", "postgresql+psycopg://a@127.0.0.1/a")
    monkeypatch.setenv("ATTUNE_VECTOR_BACKEND", "qdrant")
    monkeypatch.setenv("ATTUNE_QDRANT_URL", "http://127.0.0.1:6333")
    calls: list[Any] = []

    class Built:
        def close(self) -> None:
            calls.append("closed")

    import uvicorn

    import agents.factory
    import agents.reindex

    monkeypatch.setattr(agents.factory, "build_services", lambda settings: Built())
    monkeypatch.setattr(agents.reindex, "start", lambda services, demo: calls.append("seeded"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    result = CliRunner().invoke(cli, ["serve", "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert calls[:2] == ["seeded", "closed"]
    target, options = calls[2]
    assert target == "api.app:create_app"
    assert options["factory"] is True and options["workers"] == 3


def test_rate_limiters_on_one_redis_share_a_key_budget(redis_url: str) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first, second = RateLimits(3, redis_url), RateLimits(3, redis_url)
    assert [first.hit(key), second.hit(key), first.hit(key)] == [None, None, None]
    waits = [second.hit(key), first.hit(key)]
    assert all(wait is not None and 1 <= wait <= 61 for wait in waits), waits
    assert second.hit(f"other-{key}") is None  # per key
    # The default storage counts per process: two limiters, two budgets.
    alone, other = RateLimits(3), RateLimits(3)
    assert [alone.hit(key) for _ in range(3)] == [None] * 3
    assert other.hit(key) is None and alone.hit(key) is not None


@pytest.fixture(scope="module")
def two_apps(
    postgres: str,
    redis_url: str,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Services]]:
    """Two services (as two worker processes would build them) on one PostgreSQL database,
    each with its own home, sharing Redis for rate limits."""
    url = create_database(postgres, "two_apps")
    built = [
        build_services(
            Settings(
                home=tmp_path_factory.mktemp(f"worker-{n}"),
                database_url=url,
                embedding_model=str(tiny_model_dir),
                auth="keys",
                rate_limit_per_minute=4,
                rate_limit_storage=redis_url,
            )
        )
        for n in range(2)
    ]
    yield built
    for services in built:
        services.close()


def test_two_apps_on_one_postgresql_share_a_keys_rate_limit(two_apps: list[Services]) -> None:
    with two_apps[0].db.session() as session:
        key, _ = create_key(session, name="shared", scopes=["copy"])
    headers = {"Authorization": f"Bearer {key}"}
    with (
        TestClient(create_app(services=lambda: two_apps[0])) as first,
        TestClient(create_app(services=lambda: two_apps[1])) as second,
    ):
        answers = [
            client.get("/v1/jobs/nope", headers=headers).status_code
            for client in (first, second, first, second, first, second)
        ]
        assert answers == [404, 404, 404, 404, 429, 429]
        refused = second.get("/v1/jobs/nope", headers=headers)
    assert "4 requests a minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61


def test_a_copy_job_survives_a_kill_9_of_its_worker(
    postgres: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two `attune worker` processes on one PostgreSQL database, each with its own home. The
    first takes the queued job and is killed (SIGKILL) while the model server holds its first
    call; the job is left `running`, and the second worker, which never took it while the
    first one beat for it, takes it once the heartbeat is stale, runs it from the start and
    finishes it: done, on the second attempt, its variants stored once."""
    url = create_database(postgres, "kill9")
    # The tiny embedding model and spaCy's small pipeline keep each process's start short.
    settings = Settings(
        home=tmp_path / "seed",
        database_url=url,
        embedding_model=str(tiny_model_dir),
        spacy_model="en_core_web_sm",
    )
    services = build_services(settings)
    try:
        seed(services, PROJECT_ROOT / "data" / "demo")
        request = CopyRequest.model_validate(
            {
                "brief": {"goal": "a treat for coffee lovers", "categories": ["coffee_tea"]},
                "channel": "push",
                "audience": {
                    "segments": [
                        {"name": "active", "rule": {"lifecycle": ["active", "lapsing"]}},
                        {"name": "over-30", "rule": {"min_age": 30}},
                    ]
                },
                "variants": 2,
            }
        )
        stored = stored_request(services, request)
    finally:
        services.close()
    db = Database(url)

    def job() -> Any:
        with db.session() as session:
            return get_job(session, "killed-job")

    # The first call hangs until its worker is killed; every later call answers at once.
    script = [Reply(content="Coffee you will love.", delay_s=60), Reply(content="Coffee time.")]
    with fake_openai(script) as model:

        def worker(name: str) -> subprocess.Popen[bytes]:
            env = _env(
                tmp_path / name,
                ATTUNE_DATABASE_URL=url,
                ATTUNE_EMBEDDING_MODEL=str(tiny_model_dir),
                ATTUNE_SPACY_MODEL="en_core_web_sm",
                ATTUNE_OPENAI_BASE_URL=model.base_url,
                ATTUNE_OPENAI_MODEL="fake",
                ATTUNE_OPENAI_TIMEOUT_S="120",
                ATTUNE_JOB_STALE_AFTER_S="3",  # beats every half second
            )
            log = tmp_path / f"{name}.log"
            with log.open("wb") as output:
                process = subprocess.Popen([*CLI, "worker"], env=env, cwd=ROOT, stderr=output)
            LOGS[process.pid] = log
            return process

        started = time.monotonic()
        first = worker("first")
        with db.session() as session:
            create_job(
                session,
                "killed-job",
                kind="copy",
                request=stored,
                created_by="local",
                worker=None,
                segments_total=2,
                members_total=0,
            )
        second: subprocess.Popen[bytes] | None = None
        try:
            _until(lambda: model.exchanges, first, "the first worker to call the model")
            held = job()
            assert held.status == "running" and held.attempts == 1
            second = worker("second")
            # Started while the first one holds the job and beats for it: it waits.
            ready = tmp_path / "second.log"
            _until(lambda: b"is taking copy jobs" in ready.read_bytes(), second, "it to start")
            time.sleep(4)  # longer than the staleness window: beats keep the job with the first
            assert (job().status, job().attempts) == ("running", 1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert first.returncode == -signal.SIGKILL
        assert second is not None
        try:
            _until(lambda: job().status in ("done", "failed"), second, "the job to finish")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
        elapsed = time.monotonic() - started
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-2000:]
    finished = job()
    assert finished.status == "done", finished.error
    assert finished.attempts == 2
    assert finished.segments_done == 2 and finished.members_scanned > 0
    with db.session() as session:
        variants = get_variants(session, "killed-job")
    assert finished.summary is not None and len(variants) == finished.summary["variants"] == 4
    assert len({v["variant_id"] for v in variants}) == 4
    db.dispose()
    print(f"kill -9 and resume: {elapsed:.1f} s from the first worker's start to done")


def _until(condition: Any, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait for `condition`; fail with the worker's log (`<home>.log`, from its environment)
    if the worker exits first."""
    deadline = time.monotonic() + 120
    while not condition():
        if process.poll() is not None:
            log = LOGS.get(process.pid)
            errors = log.read_text() if log is not None and log.exists() else ""
            pytest.fail(f"the worker exited ({process.returncode}) before {what}: {errors[-2000:]}")
        if time.monotonic() > deadline:
            log = LOGS.get(process.pid)
            errors = log.read_text() if log is not None and log.exists() else ""
            pytest.fail(f"timed out waiting for {what}; the worker's log: {errors[-3000:]}")
        time.sleep(0.1)


REWARDER = """
import sys, time
from pathlib import Path
from store.bandit import add_reward
from store.db import Database

url, start, rewards = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
db = Database(url)
while not start.exists():  # both processes begin together
    time.sleep(0.01)
for n in range(rewards):
    with db.session() as session:
        add_reward(session, "thompson", "web", "o1", float(n % 2), (1.0, 1.0))
db.dispose()
"""


def test_two_processes_rewarding_one_arm_lose_no_update(database_url: str, tmp_path: Path) -> None:
    """Two processes (as two workers are), each with its own engine, reward one arm at once:
    every reward is counted, successes and failures alike."""
    Database(database_url).dispose()  # the schema, before they start
    start, per_process = tmp_path / "start", 100
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REWARDER, database_url, str(start), str(per_process)],
            env=_env(tmp_path),
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # not a timing assertion: gives both processes the time to be waiting
    start.touch()
    for process in processes:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors.decode()[-2000:]
    db = Database(database_url)
    with db.session() as session:
        arm = get_arms(session, "thompson", "web", ["o1"], lambda _: (1.0, 1.0))["o1"]
    db.dispose()
    assert arm.pulls == 2 * per_process
    assert (arm.alpha, arm.beta) == (1.0 + per_process, 1.0 + per_process)
