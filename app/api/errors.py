"""Every error leaves the API in one shape: `{"error": {"code", "message", "details"?}}` (ARCHITECTURE §6)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ServiceError

# Pydantic error types raised by our own validators (schemas.py) that are malformed input (400), not a
# well-formed request with invalid values (422).
TEXT_ERROR = "invalid_text"
_BAD_REQUEST_TYPES = {"json_invalid": "malformed_json", TEXT_ERROR: TEXT_ERROR}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def error_response(status: int, code: str, message: str, details: Any | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    response = error_response(exc.status_code, exc.code, exc.message, jsonable_encoder(exc.details))
    if exc.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
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


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(_: Request, __: Exception) -> JSONResponse:
    # Only the shape: Starlette re-raises the exception after this response, and the server logs it.
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
