"""The memory inspector: one static page (no frontend build) over the JSON API, read-only except the
admin's retry of a failed chunk; and `GET /me`, which tells the page who the key belongs to."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.api.deps import Caller
from app.api.json_body import FastJSONRoute
from app.contracts.schemas import ErrorOut, Me

STATIC = Path(__file__).parent / "static"

router = APIRouter(tags=["operations"], route_class=FastJSONRoute)


@router.get(
    "/me",
    response_model=Me,
    responses={401: {"model": ErrorOut}},
    summary="The tenant and role of the caller's API key",
)
async def me(caller: Caller) -> Me:
    return Me(tenant_id=caller.tenant_id, admin=caller.admin)


def install_inspector(app: FastAPI) -> None:
    """`/inspector`: the page asks for the API key (kept in the tab's sessionStorage) and calls the API
    with it, so it sees exactly what the key may see."""
    app.mount("/inspector/static", StaticFiles(directory=STATIC), name="inspector-static")

    @app.get("/inspector", include_in_schema=False)
    async def inspector() -> FileResponse:
        return FileResponse(STATIC / "inspector.html", media_type="text/html")
