"""The console in a real browser: Playwright (from PyPI) driving the Chromium from apt against the
app served by uvicorn on 127.0.0.1, over a small world with API keys on.

Playwright's own browser download cannot work here, so the apt Chromium is launched by path. Without
it the module is skipped with the reason, unless ATTUNE_TEST_BROWSER=required (as `.ci/run` sets),
where that is a failure. One server and one browser serve the whole module.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from local_servers import free_port, unavailable
from PIL import Image
from small_world import write_small_world

from agents.factory import build_services
from agents.seed import seed
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.access import SCOPES, create_key

XSS_TITLE = "Mug <img src=x onerror=window.__xss=1> deluxe"
XSS_ITEM = {
    "item_id": "console_xss_1",
    "title": XSS_TITLE,
    "category": "coffee_tea",
    "price": 12.5,
    "stock": 5,
}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("Chromium", "ATTUNE_TEST_BROWSER", "no chromium on PATH (apt-get install chromium)")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    services: Services


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app over a small world with ATTUNE_AUTH=keys, served by uvicorn on 127.0.0.1."""
    root = tmp_path_factory.mktemp("console")
    services = build_services(
        Settings(home=root / "home", seed=7, auth="keys", rate_limit_per_minute=10**6)
    )
    seed(services, write_small_world(root / "world", items=80))
    with services.db.session() as session:
        plain, _ = create_key(session, name="console", scopes=SCOPES)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services=lambda: services),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield Served(url=f"http://127.0.0.1:{port}", key=plain, services=services)
    server.should_exit = True
    thread.join(timeout=10)
    services.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        unavailable("Chromium", "ATTUNE_TEST_BROWSER", f"playwright is not installed: {error}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"{served.url}/console/")
    opened.fill("#api-key", served.key)
    opened.click("#key-form button[type=submit]")
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


def request(served: Served, method: str, path: str, body: Any = None) -> Any:
    import httpx

    response = httpx.request(
        method,
        f"{served.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {served.key}"},
    )
    assert response.status_code < 300, response.text
    return response.json()


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page screenshot, checked not blank: a page of text has many colours, a blank one
    has one or two."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert image.height > 400
    assert colours is not None and len(colours) > 50, f"{path} looks blank"
    return path


def test_the_copy_studio_writes_variants_for_three_segments_and_exports_recipients(
    page: Any, served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect

    request(served, "POST", "/v1/catalog/items", {"items": [XSS_ITEM]})
    shots = tmp_path_factory.mktemp("console-shots")
    # The live counts of the three default segments, as the preview endpoint counts them.
    expected = request(
        served,
        "POST",
        "/v1/copy/audience",
        {
            "channel": "web_banner",
            "audience": {
                "segments": [
                    {"name": "lapsed", "rule": {"lifecycle": ["lapsed"]}},
                    {"name": "lapsing", "rule": {"lifecycle": ["lapsing"]}},
                    {"name": "everyone", "rule": {}},
                ]
            },
        },
    )["segments"]
    assert all(s["size"] > 0 for s in expected), expected
    rules = page.locator("#segments .segment-rule")
    names = page.locator("#segments .segment-name")
    expect(rules).to_have_count(3)
    # The narrow segments first: a person is sent one message, in the first segment they are in.
    names.nth(0).fill("lapsed")
    rules.nth(0).fill('{"lifecycle": ["lapsed"]}')
    names.nth(1).fill("lapsing")
    rules.nth(1).fill('{"lifecycle": ["lapsing"]}')
    names.nth(2).fill("everyone")
    rules.nth(2).fill("{}")
    counts = page.locator("#segments .segment-count")
    for i, segment in enumerate(expected):
        expect(counts.nth(i)).to_contain_text(f"{segment['size']} members")
        sample = page.locator("#segments .segment-sample").nth(i)
        expect(sample).to_contain_text(", ".join(segment["sample"]))
    page.fill("#item-ids", XSS_ITEM["item_id"])
    page.click("#write-copy")
    expect(page.locator("#copy-status")).to_contain_text("variants for 3 segments", timeout=120_000)
    articles = page.locator("article.segment-result")
    expect(articles).to_have_count(3)
    for i, segment in enumerate(expected):
        article = articles.nth(i)
        expect(article).to_contain_text(f"Segment {segment['name']}")
        expect(article.locator(".variant")).to_have_count(2)
        expect(article.locator(".badge.pass")).to_have_count(2)
        expect(article.locator("details.explanation").first).to_contain_text("Why")
    # The product's title is text on the page, never markup: no <img> was made, nothing ran.
    expect(page.locator(".copy-text").first).to_contain_text(XSS_TITLE)
    assert page.locator("#copy-result img").count() == 0
    assert page.evaluate("window.__xss") is None
    studio = screenshot(page, shots, "copy-studio")

    page.click("#show-recipients")
    total = expected[2]["size"]  # "everyone" holds the other two: each person once
    expect(page.locator(".recipients-total")).to_have_text(f"{total} recipients")
    table = page.locator("#recipients table").first
    for segment in expected:
        expect(table).to_contain_text(segment["name"])
    rows = page.locator("#recipients table").nth(1).locator("tbody tr")
    expect(rows).to_have_count(min(total, 100))
    exported = screenshot(page, shots, "copy-export")
    print(f"screenshots: {studio} {exported}")


def test_a_background_job_is_followed_until_its_variants_are_shown(
    page: Any, served: Served
) -> None:
    from playwright.sync_api import expect

    for _ in range(2):
        page.locator("#segments .remove").last.click()
    expect(page.locator("#segments .segment")).to_have_count(1)
    page.check("#run-async")
    with page.expect_response(
        lambda r: r.url.endswith("/v1/copy") and r.request.method == "POST"
    ) as posted:
        page.click("#write-copy")
    assert posted.value.status == 202  # accepted as a job, which the page then follows
    expect(page.locator("#copy-status")).to_contain_text(
        "2 variants for 1 segment", timeout=180_000
    )
    campaign = page.locator("#copy-status").inner_text().split()[1].rstrip(":")
    job = request(served, "GET", f"/v1/jobs/{campaign}")
    assert job["status"] == "done" and job["summary"] is not None
    article = page.locator("article.segment-result")
    expect(article).to_have_count(1)
    expect(article.locator(".variant")).to_have_count(2)


def test_the_decision_inspector_shows_a_decisions_trace(
    page: Any, served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect

    decision = request(
        served, "POST", "/v1/decide", {"user_id": "u_0001", "channel": "web", "k": 5}
    )
    record = request(served, "GET", f"/v1/decisions/{decision['decision_id']}")["record"]
    page.click("#tabs button[data-view=decision]")
    page.fill("#decision-id", decision["decision_id"])
    page.click("#decision-form button[type=submit]")
    expect(page.locator("#decision-status")).to_contain_text(decision["decision_id"])
    stages = page.locator("ol.trace > li.stage")
    expect(stages).to_have_count(5)
    trace = record["trace"]
    for offer_id in trace["candidates"]:
        expect(stages.nth(0)).to_contain_text(offer_id)
    chosen = trace["chosen"]
    expect(stages.nth(4)).to_contain_text(chosen if chosen else "none")
    for rule in record["explanation"]["rules_fired"][:3]:
        expect(page.locator("#decision-result")).to_contain_text(rule["rule_id"])
    first_item = record["retrieval"]["candidates"][0]["item_id"]
    expect(page.locator("#decision-result table").nth(1)).to_contain_text(first_item)
    expect(page.locator("#decision-result .copy-text")).to_have_text(record["content"]["text"])
    expect(page.locator("#decision-result .guard")).to_be_visible()
    shot = screenshot(page, tmp_path_factory.mktemp("console-shots"), "decision-inspector")
    print(f"screenshot: {shot}")


def test_experiment_drift_and_eval_views_render_what_the_server_has(
    page: Any, served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The experiment report and the drift monitors render as tables of what the API answers."""
    import httpx
    from playwright.sync_api import expect
    from test_console import write_eval_report

    headers = {"Authorization": f"Bearer {served.key}"}
    for view, path in (("experiments", "/v1/experiments/report"), ("drift", "/v1/drift")):
        answer = httpx.get(f"{served.url}{path}", headers=headers)
        page.click(f"#tabs button[data-view={view}]")
        shown = page.locator(f"#{view}-result")
        assert answer.status_code == 200, answer.text
        expect(shown).not_to_contain_text("Not available")
        keys = list(answer.json())
        assert keys, answer.text
        for key in keys[:3]:
            expect(shown).to_contain_text(key)
    page.click("#tabs button[data-view=evals]")
    expect(page.locator("#evals-list")).to_contain_text("No eval reports")
    write_eval_report(served.services.settings.home / "evals" / "console-gate", "console gate")
    page.click("#view-evals button.reload")
    listed = page.locator("#evals-list tbody tr")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("console gate")
    expect(listed).to_contain_text("passed")
    listed.locator("button").click()
    report = page.locator("#eval-report")
    expect(report).to_contain_text("console gate (console-toy)")
    expect(report.locator("table").nth(1)).to_contain_text("attune")
    shot = screenshot(page, tmp_path_factory.mktemp("console-shots"), "eval-report")
    print(f"screenshot: {shot}")
