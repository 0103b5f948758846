"""The station page: server-rendered Jinja2 views, hand-written ES-module scripts, SVG charts, no npm build.

Everything the browser loads is served by the station (no CDN): templates in ``templates/``, scripts,
styles and images in ``static/`` (mounted at ``/static/page``), message catalogues in ``i18n/``, and
Swagger UI for ``/docs`` from the ``swagger-ui-bundle`` package (see ``docs.py``). ``install(app, station, access)``
wires it all (called once from ``edge.api.app.create_app``). Live changes: ``hub.py`` (a store listener,
attached in ``Station.start``) and ``events.py`` (``GET /api/v1/events``, server-sent events).

Conventions for adding a view (the operator view ``/`` in ``views.py`` is the example):

* **Route**: add a ``@router.get("/<path>", response_class=HTMLResponse, include_in_schema=False)`` in a module
  of its own (e.g. ``workbench.py`` with ``build_router(station, access) -> APIRouter``) and include it in
  ``install`` below. An HTML route renders only the shell and the catalogue, never data: data comes from the
  API (``/api/v1/...``), whose routes declare their scopes. So page routes are unscoped reads, kept out of
  OpenAPI; never add a state-changing page route (actions go to the API).
* **Template**: ``templates/<view>.html`` extending ``base.html`` (blocks ``title``, ``main``, ``scripts``);
  render with ``render(request, "<view>.html", station, view="<view>")`` from ``views.py``. Write text only
  as ``{{ t("key") }}``; never a literal.
* **Script**: ``static/js/<view>.js``, an ES module loaded by the template with
  ``<script type="module" src="{{ static('js/<view>.js') }}">``. Shared modules: ``i18n.js`` (``t(key, vars)``,
  ``fmtInt``, ``fmtNumber``, ``fmtPercent``, ``fmtTime``, ``fmtStamp`` via ``Intl``, ``wireLanguageButtons``,
  ``restoreLanguage``), ``api.js`` (``get(path)``; ``act(method, path, body)`` for every change: asks for a
  login first, adds the CSRF header; both turn the API's error shape into a translated ``ApiProblem``
  (``status``, ``code``, ``message``) and ask for the login again on 401; ``ensureLogin()``, ``session()``,
  ``onSession(fn)``), ``live.js`` (``connectEvents({onVerdict, onRecord, onReady, onState, onError})``: the
  SSE stream of ``/api/v1/events`` with reconnect and replay from the last verdict id), ``charts.js``
  (``drawPareto``, ``drawControl``: SVG), ``ui.js`` (``$``, ``el``, ``toast``, ``openForm(dialog, submit)``).
  User-visible text in scripts only through ``t("key")``.
* **Catalogue keys**: add every key to both ``i18n/en.json`` and ``i18n/zh.json`` (flat ``"area.name"``
  keys, ``{name}`` placeholders). ``tests/test_page_i18n.py`` fails on a key missing from one of them or on
  a literal string in a template or script.
* **Tests**: ``tests/test_page_operator.py`` shows how a test starts a real ``edge-inspect run``
  (``support.LiveService``) and a headless Debian Chromium through Playwright (its ``browser`` fixture:
  ``executable_path="/usr/bin/chromium"``, skipped when absent), creates users with ``edge-inspect users
  add`` (``add_user``), logs in through the page (``login``) and saves screenshots under
  ``test-artifacts/page/`` (``shot``). ``tests/test_page_views.py`` checks a view's HTML without a browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:  # edge.station imports edge.page.hub: no import of the station at run time here
    from edge.access import AccessControl
    from edge.station import Station


def install(app: FastAPI, station: Station, access: AccessControl) -> None:
    """The page's views, its static files, the live event stream and the offline /docs."""
    from edge.page import docs, events, views, workbench  # here: edge.station imports edge.page.hub at start-up

    app.include_router(events.build_router(station, access))
    app.include_router(views.build_router(station))
    app.include_router(workbench.build_router(station))
    docs.install(app)
    views.mount_static(app)
