"""`/docs` that works offline: Swagger UI's assets come from the `fastapi-offline` package's static folder
and are served by the app itself, instead of FastAPI's default CDN links."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

_ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs-assets"


def operation_id(route: APIRoute) -> str:
    """`tag-name` (`sessions-ingest`, `memory-get_memory`): what a generated client names its methods."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def install_docs(app: FastAPI) -> None:
    """Needs `FastAPI(docs_url=None, redoc_url=None)`: this serves `/docs` in their place."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
