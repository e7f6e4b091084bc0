"""GET /: a landing page for people, linking the docs, health, metrics and the console.

Everything it and the docs pages load is served by the app itself (`fastapi-offline` ships
Swagger UI and ReDoc), so they work on a machine with no internet.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["home"])

PAGES = ("/", "/docs", "/redoc")
# The pages load nothing from another host. ReDoc's bundle shows Redocly's logo from their CDN
# whatever its options; this policy keeps the browser from asking for it (ReDoc then hides it).
# Swagger UI starts from an inline script, ReDoc runs its search in a worker from a blob.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

LINKS = (
    ("/console", "Console", "copy studio, decision inspector, experiments, drift and evals"),
    ("/docs", "API docs", "every route, tried from the browser (Swagger UI)"),
    ("/redoc", "API reference", "the same routes as a readable reference (ReDoc)"),
    ("/openapi.json", "OpenAPI", "the schema, for client generators"),
    ("/healthz", "Health", "which parts answer and which fallbacks are in use"),
    ("/metrics", "Metrics", "Prometheus exposition (with keys: the metrics or admin scope)"),
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Attune</title>
<link rel="icon" href="/static/docs/favicon.png">
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto;
         padding: 0 1rem; color: #1d2430; }}
  h1 {{ margin-bottom: 0; }}
  p.lead {{ color: #556; margin-top: .25rem; }}
  ul {{ list-style: none; padding: 0; }}
  li {{ padding: .6rem 0; border-bottom: 1px solid #e3e6ea; }}
  a {{ color: #1f5fbf; font-weight: 600; text-decoration: none; }}
  a:hover {{ text-decoration: underline; }}
  span {{ color: #556; }}
</style>
</head>
<body>
<h1>Attune</h1>
<p class="lead">Personalized, policy-safe, explained decisions: items, an offer and copy.</p>
<ul>
{links}
</ul>
</body>
</html>
"""


class PagePolicy:
    """Adds the Content-Security-Policy above to the landing page and the docs pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            await send(message)

        await self.app(scope, receive, with_policy)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def home() -> HTMLResponse:
    """The landing page."""
    links = "\n".join(
        f'<li><a href="{href}">{name}</a> <span>— {what}</span></li>' for href, name, what in LINKS
    )
    return HTMLResponse(PAGE.format(links=links))
