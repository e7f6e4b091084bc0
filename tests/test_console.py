"""What the console reads beyond the existing API, in process: the copy studio's live audience and
its export of recipients, the eval reports, and the console's own files."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from agents.services import Services
from api.app import create_app
from evals.base import Row, RunContext, SuiteResult, register
from evals.runner import run_suite
from store.access import create_key

SEGMENTS = [
    {"name": "everyone", "rule": {}},
    {"name": "lapsing", "rule": {"lifecycle": ["lapsing"]}},
    {"name": "coffee", "rule": {"top_category": ["coffee_tea"]}},
]


@register("console-toy")
def console_toy(context: RunContext) -> SuiteResult:
    """One row per system: its `value` param as the metric `score`."""
    return SuiteResult(
        rows=[
            Row(context.suite.datasets[0].name, s.name, {"score": s.params["value"]})
            for s in context.suite.systems
        ],
        notes=["Two systems, one number each."],
    )


def write_eval_report(folder: Path, name: str = "console toy") -> Path:
    """A real report folder (the runner's own writer) of a tiny suite whose gate passes."""
    suite_dir = folder.parent / f"{folder.name}-suite"
    suite_dir.mkdir(parents=True)
    (suite_dir / "suite.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "kind": "console-toy",
                "datasets": [{"name": "numbers"}],
                "systems": [
                    {"name": "baseline", "type": "fixed", "params": {"value": 0.25}},
                    {"name": "attune", "type": "fixed", "params": {"value": 0.5}},
                ],
                "thresholds": [{"metric": "score", "system": "attune", "min": 0.4}],
            }
        )
    )
    run_suite(suite_dir / "suite.yaml", folder, show_progress=False)
    return folder


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def test_the_audience_preview_counts_as_a_copy_run_does(client: TestClient) -> None:
    preview = client.post(
        "/v1/copy/audience",
        json={"channel": "email", "audience": {"segments": SEGMENTS}, "sample": 3},
    )
    assert preview.status_code == 200, preview.text
    found = preview.json()["segments"]
    copy = client.post(
        "/v1/copy",
        json={
            "brief": {"goal": "coffee for the weekend", "categories": ["coffee_tea"]},
            "channel": "email",
            "audience": {"segments": SEGMENTS},
            "variants": 1,
        },
    )
    assert copy.status_code == 200, copy.text
    written = {s["name"]: s for s in copy.json()["segments"]}
    assert [s["name"] for s in found] == [s["name"] for s in SEGMENTS]
    for segment in found:
        assert segment["size"] == written[segment["name"]]["size"]
        assert segment["excluded"] == written[segment["name"]]["excluded"]
        assert segment["sample"] == sorted(segment["sample"])
        assert len(segment["sample"]) == min(3, segment["size"])
    everyone = found[0]
    assert everyone["size"] > found[1]["size"] > 0
    assert everyone["excluded"], "email copy leaves out people without email consent"


def test_a_sample_never_names_someone_the_channel_leaves_out(client: TestClient) -> None:
    """Everyone in the sample of a rule-less segment may get email copy; nobody else is shown."""
    preview = client.post(
        "/v1/copy/audience",
        json={"channel": "email", "audience": {"segments": SEGMENTS[:1]}, "sample": 20},
    ).json()["segments"][0]
    for user_id in preview["sample"]:
        consent = client.get(f"/v1/users/{user_id}").json()["consent"]
        assert consent["email"] and consent["personalization"], user_id


@pytest.mark.parametrize(
    "body, field",
    [
        ({"channel": "fax", "audience": {"segments": SEGMENTS}}, "channel"),
        ({"channel": "push", "audience": {"segments": SEGMENTS}, "sample": 21}, "sample"),
        (
            {"channel": "push", "audience": {"segments": [{"name": "x", "rule": {"mood": 1}}]}},
            "mood",
        ),
    ],
)
def test_a_bad_preview_names_the_field(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/v1/copy/audience", json=body)
    assert response.status_code == 422
    assert any(field in e["field"] for e in response.json()["errors"]), response.text


def test_recipients_give_every_member_one_passed_variant_of_their_first_segment(
    client: TestClient,
) -> None:
    # The narrow segments first: "everyone" holds them all, and a person is sent one message,
    # in the first segment of the request they belong to.
    segments = [SEGMENTS[1], SEGMENTS[2], SEGMENTS[0]]
    copy = client.post(
        "/v1/copy",
        json={
            "brief": {"goal": "a treat for coffee lovers", "categories": ["coffee_tea"]},
            "channel": "push",
            "audience": {"segments": segments},
            "variants": 2,
        },
    ).json()
    campaign = copy["campaign_id"]
    answer = client.get(f"/v1/jobs/{campaign}/recipients")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in answer.text.splitlines()]
    passed = {
        s["name"]: {v["variant_id"] for v in s["variants"] if v["checks_passed"]}
        for s in copy["segments"]
    }
    sizes = {s["name"]: s["size"] for s in copy["segments"]}
    assert all(passed.values()), passed
    per_segment = Counter(r["segment"] for r in rows)
    assert per_segment["lapsing"] == sizes["lapsing"] > 0  # the first segment keeps everyone
    assert 0 < per_segment["coffee"] <= sizes["coffee"]
    people = [r["user_id"] for r in rows]
    assert len(people) == len(set(people)) == sizes["everyone"]  # once each, nobody left out
    assert all(r["variant_id"] in passed[r["segment"]] for r in rows)
    # Both variants of the big segment get people, and the same person the same variant again.
    assert len({r["variant_id"] for r in rows if r["segment"] == "everyone"}) == 2
    again = client.get(f"/v1/jobs/{campaign}/recipients", params={"format": "csv"})
    assert list(csv.DictReader(io.StringIO(again.text))) == [
        {k: "" if v is None else str(v) for k, v in row.items()} for row in rows
    ]
    assert client.get("/v1/jobs/nojob/recipients").status_code == 404


def test_eval_reports_are_listed_newest_first_and_read_whole(
    client: TestClient, demo_services: Services
) -> None:
    root = demo_services.settings.home / "evals"
    write_eval_report(root / "console-toy-1", "console toy one")
    write_eval_report(root / "console-toy-2", "console toy two")
    (root / "not-a-report").mkdir()
    listed = client.get("/v1/evals/reports")
    assert listed.status_code == 200
    reports = [r for r in listed.json() if r["report_id"].startswith(("console-toy", "not-a"))]
    assert [r["report_id"] for r in reports] == ["console-toy-2", "console-toy-1"]
    assert reports[0]["name"] == "console toy two"
    assert reports[0]["passed"] is True and reports[0]["summary"].startswith("PASSED")
    one = client.get("/v1/evals/reports/console-toy-1").json()
    assert one == json.loads((root / "console-toy-1" / "metrics.json").read_text())
    assert {(r["system"], r["metrics"]["score"]) for r in one["rows"]} == {
        ("baseline", 0.25),
        ("attune", 0.5),
    }
    assert client.get("/v1/evals/reports/not-a-report").status_code == 404
    assert client.get("/v1/evals/reports/..").status_code in (404, 422)
    assert client.get("/v1/evals/reports/.hidden").status_code == 422


def test_eval_reports_need_the_eval_or_admin_scope(demo_services: Services) -> None:
    secured = replace(
        demo_services,
        settings=demo_services.settings.model_copy(update={"auth": "keys"}),
    )
    with demo_services.db.session() as session:
        decide, _ = create_key(session, name="console-decide", scopes=["decide"])
        evals, _ = create_key(session, name="console-eval", scopes=["eval"])
    with TestClient(create_app(services=lambda: secured)) as secured_client:
        for key, status in ((None, 401), (decide, 403), (evals, 200)):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            assert secured_client.get("/v1/evals/reports", headers=headers).status_code == status


def test_the_console_is_served_with_a_strict_content_security_policy(client: TestClient) -> None:
    moved = client.get("/console", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="console.js"' in page.text
    for name, media in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = client.get(f"/console/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
    assert client.get("/console/secrets.txt").status_code == 404
    assert client.get("/console/__init__.py").status_code == 404
    assert "/console" not in json.dumps(client.get("/openapi.json").json()["paths"])


def test_the_console_never_writes_api_data_as_html() -> None:
    """The script builds the page from text nodes only: no innerHTML, outerHTML,
    insertAdjacentHTML, document.write or eval anywhere in it."""
    script = (Path(__file__).parent.parent / "api" / "console" / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
