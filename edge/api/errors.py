"""One JSON error shape for every failure, {"error": {"code", "message", "details"}}, and one place that
maps each kind of failure to its HTTP status: routes raise domain errors, never pick status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge.access.errors import AccessError, AccessRecordError
from edge.audio import AudioError
from edge.inspection import WrongModelKindError
from edge.store import ConflictError, NotFoundError, StoreError, StoreUnavailableError
from models.manifest import ManifestError
from models.registry import UnknownModelError
from vision.images import ImageError

log = logging.getLogger("edge.api")


class ApiError(Exception):
    """A refusal decided in the HTTP layer itself (a malformed field, a missing file part)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status,
                        headers=headers)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", "invalid_input"))


# Domain error -> (status, code). The first matching class wins, so subclasses come before their bases.
ERROR_MAP: list[tuple[type[Exception], Callable[[Exception], tuple[int, str]]]] = [
    (NotFoundError, lambda _: (404, "not_found")),
    (ConflictError, lambda _: (409, "conflict")),
    (StoreUnavailableError, lambda _: (503, "store_unavailable")),
    (StoreError, lambda _: (422, "invalid_request")),
    (UnknownModelError, lambda _: (404, "unknown_model")),
    (WrongModelKindError, lambda _: (422, "wrong_model_kind")),
    (ManifestError, lambda _: (503, "model_unavailable")),
    (ImageError, lambda e: (415 if _reason(e) == "unsupported_format" else 400, _reason(e))),
    (AudioError, lambda e: (400, _reason(e))),
    (AccessRecordError, lambda e: (int(getattr(e, "status", 400)), "invalid_access_change")),
]


def status_of(exc: Exception) -> tuple[int, str] | None:
    for kind, mapping in ERROR_MAP:
        if isinstance(exc, kind):
            return mapping(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(AccessError)
    async def _access_error(_: Request, exc: AccessError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
        status, code = status_of(exc) or (500, "internal_error")
        return error_response(status, code, str(exc))

    for kind, _mapping in ERROR_MAP:
        app.add_exception_handler(kind, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        return error_response(422, "invalid_request", f"the request is malformed: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never a refusal: still the documented shape, and the stack trace in the log.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "the station hit an unexpected error; it is logged")
