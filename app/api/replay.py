"""Replay routes: re-run a session's chunk log under another registered policy (admin), then read the
shadow-diff report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status

from app.api.deps import Admin, Caller
from app.api.json_body import FastJSONRoute
from app.contracts.schemas import ErrorOut
from app.replay.jobs import Replays
from app.replay.models import ReplayList, ReplayRequest, ReplayStatus

router = APIRouter(tags=["replay"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 422, 429)
}


def get_replays(request: Request) -> Replays:
    replays: Replays = request.app.state.replays
    return replays


ReplayJobs = Annotated[Replays, Depends(get_replays)]


@router.post(
    "/sessions/{session_id}/replay",
    response_model=ReplayStatus,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ERRORS,
    summary="Replay the session's chunk log under a registered policy into a scratch memory (admin)",
)
async def start_replay(
    session_id: str, body: ReplayRequest, replays: ReplayJobs, admin: Admin
) -> ReplayStatus:
    return await replays.start(admin.tenant_id, session_id, body)


@router.get(
    "/sessions/{session_id}/replays",
    response_model=ReplayList,
    responses=_ERRORS,
    summary="The session's replays in this process, newest first",
)
async def list_replays(session_id: str, replays: ReplayJobs, caller: Caller) -> ReplayList:
    return ReplayList(replays=replays.list(caller.tenant_id, session_id))


@router.get(
    "/sessions/{session_id}/replays/{replay_id}",
    response_model=ReplayStatus,
    responses=_ERRORS,
    summary="A replay's status and, when done, its report: diff, tokens, operations, answers side by side",
)
async def get_replay(session_id: str, replay_id: str, replays: ReplayJobs, caller: Caller) -> ReplayStatus:
    return replays.get(caller.tenant_id, session_id, replay_id)
