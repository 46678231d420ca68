"""The dev console (PROTOCOL.md §1): `GET /` serves a small static page that drives `/ws`, and
`GET /console/<file>` its script and stylesheet. Dev mode only; otherwise both answer 404.

The assets are a fixed allow-list read from the package (`gateway/console/`), so a request can
never name any other file: there is no path handling to get wrong. They are read on each request,
so an edit shows on the next reload. The page has no inline script, as the Content-Security-Policy
of `app.py` (`default-src 'self'`) requires.
"""

from __future__ import annotations

from importlib import resources

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw
from sanic_ext import openapi

bp = Blueprint("console")

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def _not_found() -> HTTPResponse:
    return json({"error": {"code": "NOT_FOUND", "message": "Not found"}}, status=404)


def _asset(request: Request, name: str) -> HTTPResponse:
    content_type = ASSETS.get(name)
    if content_type is None or not request.app.ctx.settings.dev_mode:
        return _not_found()
    body = resources.files(__package__).joinpath("console", name).read_bytes()
    return raw(body, content_type=content_type, headers={"Cache-Control": "no-store"})


@bp.get("/")
@openapi.exclude()
async def index(request: Request) -> HTTPResponse:
    return _asset(request, "index.html")


@bp.get("/console/<name:str>")
@openapi.exclude()
async def asset(request: Request, name: str) -> HTTPResponse:
    return _asset(request, name)
