"""Operational routes: liveness, readiness, Prometheus metrics, the active policy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import Admin, Caller, Service
from app.api.errors import error_response
from app.api.json_body import FastJSONRoute
from app.contracts.schemas import (
    ErrorOut,
    Health,
    PolicyActivations,
    PolicyOut,
    PolicyRegistration,
    PolicySwitch,
    Readiness,
)

router = APIRouter(tags=["operations"], route_class=FastJSONRoute)


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers (no database)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorOut}},
    summary="Readiness: the database is reachable (full=1: also reports the policy server)",
)
async def readyz(
    service: Service,
    full: Annotated[bool, Query(description="also check the policy server (reported, not required)")] = False,
) -> Readiness | JSONResponse:
    # Only the database decides: ingestion is durable and answers need no policy, so a policy-server
    # restart must not take every API pod out of the load balancer.
    checks = await service.ready(full=full)
    if not checks["database"]:
        return error_response(503, "unavailable", "not ready", checks)
    return Readiness(status="ready", database=True, policy=checks.get("policy"))


# Out of the OpenAPI document: Prometheus scrapes it, no API client calls it.
@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


_POLICY_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422)
}


@router.get(
    "/policy", response_model=PolicyOut, responses=_POLICY_ERRORS, summary="The active policy version"
)
async def get_policy(service: Service, _: Caller) -> PolicyOut:
    return await service.policies.get_policy()


@router.put(
    "/policy",
    response_model=PolicyOut,
    responses=_POLICY_ERRORS,
    summary="Switch to a registered policy version (admin; no restart)",
)
async def set_policy(body: PolicySwitch, service: Service, admin: Admin) -> PolicyOut:
    return await service.policies.set_policy(body.name, actor=admin.tenant_id, canary=body.canary)


@router.post(
    "/policy/rollback",
    response_model=PolicyOut,
    responses=_POLICY_ERRORS,
    summary="Switch back to the policy active before the latest switch to the current one (admin)",
)
async def rollback_policy(service: Service, admin: Admin) -> PolicyOut:
    return await service.policies.rollback_policy(actor=admin.tenant_id)


@router.get(
    "/policy/activations",
    response_model=PolicyActivations,
    responses=_POLICY_ERRORS,
    summary="The latest switches of the active policy, newest first (admin)",
)
async def policy_activations(service: Service, _: Admin) -> PolicyActivations:
    return PolicyActivations(activations=await service.policies.policy_activations())


@router.post(
    "/policies",
    response_model=PolicyOut,
    status_code=status.HTTP_201_CREATED,
    responses=_POLICY_ERRORS,
    summary="Register a policy version (admin; inactive until PUT /policy)",
)
async def register_policy(body: PolicyRegistration, service: Service, _: Admin) -> PolicyOut:
    return await service.policies.register_policy(
        body.name, body.base_model, body.adapter_path, body.metrics, body.manifest
    )
