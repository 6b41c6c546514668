"""Every error leaves the API in one shape: `{"error": {"code", "message", "details"?}}` (ARCHITECTURE §6)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from app.context import request_id
from app.contracts.schemas import TEXT_ERROR
from app.errors import ServiceError

# Pydantic error types raised by our own validators (app/contracts/schemas.py) that are malformed input (400), not a
# well-formed request with invalid values (422).
_BAD_REQUEST_TYPES = {"json_invalid": "malformed_json", TEXT_ERROR: TEXT_ERROR}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def error_body(code: str, message: str, details: Any | None = None, rid: str | None = None) -> dict[str, Any]:
    """`{"error": {"code", "message", "details"?, "request_id"?}}`: the request id (also the
    `X-Request-ID` header) of the request being answered, so that a logged error body finds its logs."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    rid = rid if rid is not None else request_id.get()
    if rid is not None:
        body["request_id"] = rid
    return {"error": body}


def error_response(status: int, code: str, message: str, details: Any | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    response = error_response(exc.status_code, exc.code, exc.message, jsonable_encoder(exc.details))
    if exc.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _public(error: dict[str, Any]) -> dict[str, Any]:
    # Drop the offending input: it may be megabytes (an oversized id) and is the caller's own data anyway.
    out = {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": error.get("msg")}
    if error.get("ctx"):
        out["ctx"] = {key: str(value) for key, value in error["ctx"].items()}
    return out


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_public(error) for error in exc.errors()]
    for error in errors:
        code = _BAD_REQUEST_TYPES.get(str(error["type"]))
        if code is not None:
            return error_response(400, code, str(error["msg"]), [error])
    return error_response(422, "invalid_request", "request validation failed", errors)


def _http_error(routes: Sequence[BaseRoute]) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed(routes, request))
        return response

    return handle


# Seconds a client should wait before retrying while the database is away.
RETRY_AFTER_S = 5


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Logged once per outage by the database's outage log, not once per request.
    request.app.state.service.db.outage.failed(exc)
    response = error_response(
        503,
        "database_unavailable",
        "the database is unavailable; retry later",
        {"retry_after_s": RETRY_AFTER_S},
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unexpected(_: Request, __: Exception) -> JSONResponse:
    # Only the shape: Starlette re-raises the exception after this response, and the server logs it.
    # This runs outside the request-id middleware, so the id is added here.
    response = error_response(500, "internal_error", "internal server error")
    rid = request_id.get()
    if rid is not None:
        response.headers["X-Request-ID"] = rid
    return response


def _allowed(routes: Sequence[BaseRoute], request: Request) -> list[str]:
    """Every method of the path (Starlette names only the first route that matched): those of its most
    specific templates, so `/memory/core` lists its own methods, not `/memory/{memory_type}`'s."""
    matching = [
        route
        for route in routes
        if isinstance(route, Route)
        and route.include_in_schema  # a hidden route only refuses a method
        and route.matches(request.scope)[0] is not Match.NONE
    ]
    fewest = min((len(route.param_convertors) for route in matching), default=0)
    return sorted(
        {m for route in matching if len(route.param_convertors) == fewest for m in route.methods or ()}
    )


def install_error_handlers(
    app: FastAPI, routes: Sequence[BaseRoute], unavailable_errors: Sequence[type[Exception]]
) -> None:
    """`routes`: every route of the API (to list a path's methods in a 405's Allow header);
    `unavailable_errors`: the database's outage exception types (503), given by the composition root."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error(routes))
    for unavailable in unavailable_errors:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
