"""Errors the service raises; the API maps each to its HTTP status and the error shape
`{"error": {"code", "message", "details"?}}` (ARCHITECTURE §6)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 400
    code = "bad_request"
    retry_after_s: int | None = None  # sent as Retry-After: the request did nothing and may be repeated

    def __init__(self, message: str, details: Any | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    status_code, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


class NotFound(ServiceError):
    status_code, code = 404, "not_found"


class Conflict(ServiceError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


class Unprocessable(ServiceError):
    status_code, code = 422, "invalid_request"


class Unavailable(ServiceError):
    status_code, code = 503, "unavailable"


class Busy(ServiceError):
    """The work this request would start is at its bound: nothing was started; the client retries later."""

    status_code, code = 429, "busy"

    def __init__(self, message: str, *, retry_after_s: int, details: Any | None = None) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s


class Backlogged(Busy):
    """Too many chunks wait for the workers: nothing was written; the client retries later."""

    code = "backlog_full"
