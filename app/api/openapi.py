"""The OpenAPI description, completed with what only the settings know: the session-id syntax and
length that the service enforces (so generated clients and fuzzers send valid ids)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.contracts.bounds import SESSION_ID_PATTERN


def install_openapi(app: FastAPI, max_session_id_length: int) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema["paths"].values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "path" and parameter["name"] == "session_id":
                            parameter["schema"] |= {
                                "pattern": f"^{SESSION_ID_PATTERN}$",
                                "minLength": 1,
                                "maxLength": max_session_id_length,
                            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
