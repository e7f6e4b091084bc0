"""Schema fuzzing: schemathesis over every operation of /openapi.json, in process (ASGI).

Each operation gets positive data (valid by the schema) and negative data (invalid by it), with
authentication off, and with ATTUNE_AUTH=keys as an unbound admin and as a key bound to one
user. Every answer must be no 5xx and must conform to the documented response schema for its
status. `ATTUNE_FUZZ_EXAMPLES` sets the examples per operation, mode and caller (default 6;
a long run by hand: `ATTUNE_FUZZ_EXAMPLES=100`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from small_world import write_small_world

from agents.factory import build_services
from agents.seed import seed
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.access import create_key

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("ATTUNE_FUZZ_EXAMPLES", "6"))
CHECKS = [not_a_server_error, response_schema_conformance]


def _can_be_invalid(operation: dict) -> bool:
    """Whether negative data exists: a body, or a parameter constrained beyond 'any string'."""
    plain = {"type": "string"}
    return "requestBody" in operation or any(
        {k: v for k, v in p["schema"].items() if k != "title"} != plain
        for p in operation.get("parameters", [])
    )


# The operations, read from the app's own schema (no services are needed to build it), each
# with the modes it has data for.
CASES = [
    (method.upper(), path, mode)
    for path, methods in create_app().openapi()["paths"].items()
    for method, operation in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _can_be_invalid(operation)
]
BOUND_USER = "u_0002"


@dataclass(frozen=True)
class Fuzzed:
    schema: schemathesis.BaseSchema
    headers: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The service on a slice of the demo world in a home of its own: fuzzing changes what it
    touches, and the whole demo world takes minutes to seed on a busy 2-core machine."""
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    services = build_services(Settings(home=home, seed=7, rate_limit_per_minute=10**6))
    seed(services, write_small_world(tmp_path_factory.mktemp("fuzz-world")))
    yield services
    services.close()


@pytest.fixture(scope="module")
def schemas(world: Services) -> dict[str, Fuzzed]:
    secured = replace(world, settings=world.settings.model_copy(update={"auth": "keys"}))
    with world.db.session() as session:
        admin, _ = create_key(session, name="fuzz-admin", scopes=["admin"])
        bound, _ = create_key(
            session,
            name="fuzz-bound",
            scopes=["decide", "chat", "copy", "events", "eval"],
            subject_user_id=BOUND_USER,
        )
    open_schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(services=lambda: world)
    )
    keyed_schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(services=lambda: secured)
    )
    return {
        "auth-off": Fuzzed(open_schema, {}),
        "admin-key": Fuzzed(keyed_schema, {"Authorization": f"Bearer {admin}"}),
        "bound-key": Fuzzed(keyed_schema, {"Authorization": f"Bearer {bound}"}),
    }


@pytest.mark.parametrize("caller", ["auth-off", "admin-key", "bound-key"])
@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_no_server_error_and_responses_match_the_schema(
    schemas: dict[str, Fuzzed], caller: str, mode: GenerationMode, method: str, path: str
) -> None:
    fuzzed = schemas[caller]
    operation = fuzzed.schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=fuzzed.headers)
        case.validate_response(response, checks=CHECKS)

    run()
