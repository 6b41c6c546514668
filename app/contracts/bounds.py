"""What the columns can hold, as pydantic types for every edge that takes numbers or times from outside
(HTTP bodies, query and path parameters, imports): out of range is a 4xx naming the field, never a
database error after the fact. The store's columns and the API's schemas both take their sizes from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

# BigInteger columns (seqs, ids, versions, counters) hold up to 2**63 - 1; the bound is the largest integer
# every JSON implementation holds exactly (doubles: 2**53 - 1), so clients, the OpenAPI maximum and the
# database all agree on it.
ID_MAX = 2**53 - 1
INT_MAX = 2**31 - 1  # Integer columns (part, attempts)
ID_LENGTH = 255  # session ids, tenant ids, policy names; the service enforces its own, shorter limit
# The characters of a session id (its length is the `max_session_id_length` setting).
SESSION_ID_PATTERN = r"[A-Za-z0-9._:-]+"


def not_text(value: object) -> object:
    """Integers as JSON has them: 3 and 3.0 (both JSON Schema integers), never "3" or true. (Bounds go
    in the `Field` before this validator, or they vanish from the JSON schema.)"""
    if isinstance(value, str | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


BigCount = Annotated[int, Field(strict=False, ge=0, le=ID_MAX), BeforeValidator(not_text)]
BigId = Annotated[int, Field(strict=False, ge=1, le=ID_MAX), BeforeValidator(not_text)]
SmallCount = Annotated[int, Field(strict=False, ge=0, le=INT_MAX), BeforeValidator(not_text)]


def _utc(value: datetime) -> datetime:
    """Aware UTC (a time without a zone is UTC); a time whose UTC equivalent falls outside years
    1–9999 (e.g. 9999-12-31T23:59:59-05:00) cannot be stored or compared."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise PydanticCustomError(
            "datetime_out_of_range", "time is out of range once converted to UTC (years 1 to 9999)"
        ) from exc


def _iso_text(value: object) -> object:
    # A time is an ISO 8601 string in JSON (lax parsing would also take a number as Unix time).
    if not isinstance(value, str | datetime):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time string")
    return value


Timestamp = Annotated[datetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_utc)]
