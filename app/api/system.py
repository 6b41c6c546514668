"""Operational routes: liveness, readiness, Prometheus metrics, the active policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import Admin, Caller, Service
from app.api.errors import error_response
from app.api.schemas import ErrorOut, Health, PolicyOut, PolicySwitch, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers (no database)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorOut}},
            summary="Readiness: database and policy backend reachable")
async def readyz(service: Service) -> Readiness | JSONResponse:
    checks = await service.ready()
    if not all(checks.values()):
        return error_response(503, "unavailable", "not ready", checks)
    return Readiness(status="ready", database=checks["database"], policy=checks["policy"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


_POLICY_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


@router.get("/policy", response_model=PolicyOut, responses=_POLICY_ERRORS, summary="The active policy version")
async def get_policy(service: Service, _: Caller) -> dict[str, Any]:
    return await service.get_policy()


@router.put("/policy", response_model=PolicyOut, responses=_POLICY_ERRORS,
            summary="Switch to a registered policy version (admin; no restart)")
async def set_policy(body: PolicySwitch, service: Service, _: Admin) -> dict[str, Any]:
    return await service.set_policy(body.name)
