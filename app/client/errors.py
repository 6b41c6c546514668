"""Typed exceptions for the API's error shape `{"error": {"code", "message", "details"?}}`, one class per
HTTP status the API answers with; the code, message and details travel on every instance."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from app.contracts.schemas import ErrorOut


class MemalphaError(Exception):
    """Any failure of a call: `status` is 0 when no HTTP answer came (connection refused, timeout)."""

    status = 0

    def __init__(self, message: str, *, code: str = "transport_error", details: Any | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class APIError(MemalphaError):
    """The service answered with an error status."""

    def __init__(self, status: int, code: str, message: str, details: Any | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}", code=code, details=details)
        self.status, self.message = status, message


class BadRequestError(APIError):
    """400: malformed input (bad JSON, empty text, invalid session id)."""


class AuthenticationError(APIError):
    """401: missing, invalid or revoked API key."""


class PermissionDeniedError(APIError):
    """403: the call needs an admin key."""


class NotFoundError(APIError):
    """404: no such session, item, chunk or policy for this tenant."""


class ConflictError(APIError):
    """409: the state forbids it (retrying a chunk that has not failed, importing into a used session)."""


class PayloadTooLargeError(APIError):
    """413: a chunk or the request body is over the service's limit."""


class UnprocessableError(APIError):
    """422: a well-formed request with invalid values."""


class RateLimitedError(APIError):
    """429, after the client's retries ran out."""


class UnavailableError(APIError):
    """503 (not ready, overloaded), after the client's retries ran out."""


class ServerError(APIError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: BadRequestError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed error of an error response; a body not in the error shape (a proxy's page) keeps its text."""
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    try:
        body = ErrorOut.model_validate_json(response.content).error
    except ValidationError:
        return cls(status, "http_error", response.text[:1000] or response.reason_phrase)
    return cls(status, body.code, body.message, body.details)
