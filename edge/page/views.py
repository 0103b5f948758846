"""HTML views: each renders a shell in the chosen language with its catalogue; data comes from the API."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from edge.page.i18n import LANGUAGE_COOKIE, LANGUAGES, catalogue, choose_language, translate
from edge.station import Station

STATIC_PATH = "/static/page"
_ENV = Environment(loader=PackageLoader("edge.page", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
_VERSION = "1"  # bump to make kiosks fetch changed scripts (they are cached a short while only)


def static_url(path: str) -> str:
    return f"{STATIC_PATH}/{path}?v={_VERSION}"


def render(request: Request, template: str, station: Station, view: str, **context: Any) -> HTMLResponse:
    """A view's page in the request's language, with its catalogue inlined for the scripts."""
    lang = choose_language(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))
    messages = catalogue(lang)
    page = _ENV.get_template(template).render(
        lang=lang, languages=LANGUAGES, view=view, station_id=station.id,
        t=lambda key, **values: translate(lang, key, **values), static=static_url,
        catalogue=Markup(json.dumps(messages, ensure_ascii=False).replace("</", "<\\/")), **context)
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Language": lang})


def build_router(station: Station) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def operator_view(request: Request) -> HTMLResponse:
        return render(request, "operator.html", station, view="operator")

    return router


def static_folder() -> Path:
    return Path(str(resources.files("edge.page").joinpath("static")))


def mount_static(app: FastAPI) -> None:
    app.mount(STATIC_PATH, StaticFiles(directory=static_folder()), name="page-static")
