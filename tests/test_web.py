"""What a browser meets: the landing page, the docs served with no internet, and CORS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from agents.services import Services
from agents.settings import Settings
from api.app import create_app

PAGES = ("/", "/docs", "/redoc")


class _References(HTMLParser):
    """Every URL a page loads or links to: src and href attributes, and the spec ReDoc reads."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append((tag, value))


def references(html: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(html)
    # Swagger UI reads its schema from the `url` given in the page's script.
    parser.urls += [("script", url) for url in re.findall(r"url: '([^']+)'", html)]
    return parser.urls


@pytest.fixture(scope="module")
def client(demo_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: demo_services)) as test_client:
        yield test_client


def test_the_landing_page_links_docs_health_metrics_and_the_console(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = {url for tag, url in references(page.text) if tag == "a"}
    assert links >= {"/docs", "/redoc", "/healthz", "/metrics", "/console"}
    for link in links - {"/console", "/metrics"}:  # the console is another area's; metrics: a key
        assert client.get(link).status_code == 200, link


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_every_asset_from_the_service_itself(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200, html.text
    urls = references(html.text)
    scripts = [url for tag, url in urls if tag == "script"]
    assert any(url.endswith(".js") for url in scripts), urls  # the viewer itself
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}
    for _, url in urls:
        assert not urlsplit(url).netloc, f"{page} loads {url} from another host"
        response = client.get(url)
        assert response.status_code == 200, url
        kind = next(kind for suffix, kind in expected.items() if url.endswith(suffix))
        assert kind in response.headers["content-type"], (url, response.headers["content-type"])
    bundle = client.get(next(url for url in scripts if url.endswith(".js"))).text
    name = "SwaggerUIBundle" if page == "/docs" else "Redoc"
    assert len(bundle) > 100_000 and name in bundle  # the real viewer, not a stub


@pytest.mark.parametrize("page", PAGES)
def test_no_page_names_a_cdn_or_any_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    html = response.text
    # ReDoc's bundle itself asks for Redocly's logo from their CDN: the page's policy forbids
    # the browser any host but this one.
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'" and policy["img-src"] == "'self' data:"
    assert all("http" not in sources and "*" not in sources for sources in policy.values())
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), html
    assert "validatorUrl" not in html or '"validatorUrl": null' in html


# -- CORS -----------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str, method: str = "POST") -> dict[str, str]:
    response = client.options(
        "/v1/decide",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    return {"status": str(response.status_code), **response.headers}


@pytest.mark.parametrize(
    "origin", ["http://localhost:5173", "http://127.0.0.1:3000", "http://localhost"]
)
def test_a_page_on_localhost_passes_the_preflight_by_default(
    client: TestClient, origin: str
) -> None:
    answer = preflight(client, origin)
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == origin
    allowed = answer["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in answer["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in answer  # keys travel in headers only


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "http://127.0.0.2"]
)
def test_any_other_origin_is_refused_by_default(client: TestClient, origin: str) -> None:
    answer = preflight(client, origin)
    assert answer["status"] == "400"
    assert "access-control-allow-origin" not in answer
    # A simple request from that origin is answered, without the header a browser needs to
    # let the page read it.
    health = client.get("/healthz", headers={"Origin": origin})
    assert "access-control-allow-origin" not in health.headers


def test_an_allowed_origin_can_read_an_error_too(client: TestClient) -> None:
    origin = "http://localhost:5173"
    bad = client.post("/v1/decide", json={"channel": "web"}, headers={"Origin": origin})
    assert bad.status_code == 422
    assert bad.headers["access-control-allow-origin"] == origin


def test_configured_origins_replace_the_localhost_default(demo_services: Services) -> None:
    settings = demo_services.settings.model_copy(
        update={"cors_origins": ["https://shop.example.com"]}
    )
    services = replace(demo_services, settings=settings)
    with TestClient(create_app(services=lambda: services)) as client:
        shop = preflight(client, "https://shop.example.com", "PUT")
        assert shop["status"] == "200"
        assert shop["access-control-allow-origin"] == "https://shop.example.com"
        assert preflight(client, "http://localhost:5173")["status"] == "400"
        assert preflight(client, "https://other.example.com")["status"] == "400"


def test_the_origins_setting_reads_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATTUNE_CORS_ORIGINS", "https://a.example.com, https://b.example.com:8443/")
    assert Settings().cors_origins == ["https://a.example.com", "https://b.example.com:8443"]
    monkeypatch.setenv("ATTUNE_CORS_ORIGINS", "shop.example.com")
    with pytest.raises(ValidationError, match="not a web origin: write scheme://host"):
        Settings()
