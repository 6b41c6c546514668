"""Session routes: ingestion, status, chunk and operation logs, retry, export/import, deletion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response, status

from app.api.deps import Caller, Service
from app.api.json_body import FastJSONRoute
from app.contracts.bounds import ID_MAX
from app.contracts.exchange import SessionImport
from app.contracts.schemas import (
    ChunkBody,
    ChunkList,
    ChunkResult,
    ChunkStatus,
    ErrorOut,
    ExportOut,
    ImportResult,
    IngestRequest,
    IngestResponse,
    OperationList,
    SessionList,
    SessionOut,
)
from app.service import ChunkIn

router = APIRouter(tags=["sessions"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422)
}
_UNFINISHED = {"pending", "processing"}


def chunk_in(chunk: str | ChunkBody) -> ChunkIn:
    """A request's chunk as the service takes it (also used by the MCP tools)."""
    if isinstance(chunk, str):
        return ChunkIn(content=chunk)
    return ChunkIn(
        content=chunk.content,
        timestamp=chunk.timestamp,
        idempotency_key=chunk.idempotency_key,
        metadata=chunk.metadata,
    )


@router.post(
    "/sessions/{session_id}/ingest",
    response_model=IngestResponse,
    responses={202: {"model": IngestResponse, "description": "accepted, not (yet) processed"}, **_ERRORS},
    summary="Append chunks to a session's log (creates the session on first use)",
)
async def ingest(
    session_id: str, body: IngestRequest, service: Service, caller: Caller, response: Response
) -> IngestResponse:
    outcome = await service.ingestion.ingest(
        caller.tenant_id, session_id, [chunk_in(c) for c in body.chunks], wait=body.wait
    )
    response.status_code = status.HTTP_200_OK if outcome.complete else status.HTTP_202_ACCEPTED
    return outcome


@router.get("/sessions", response_model=SessionList, responses=_ERRORS, summary="List the caller's sessions")
async def list_sessions(
    service: Service,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=ID_MAX)] = 0,
) -> SessionList:
    sessions = await service.sessions.list_sessions(caller.tenant_id, limit=limit, offset=offset)
    return SessionList(sessions=sessions, limit=limit, offset=offset)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionOut,
    responses=_ERRORS,
    summary="Session status: chunk counts by status, memory version and sizes",
)
async def get_session(session_id: str, service: Service, caller: Caller) -> SessionOut:
    return await service.sessions.get_session(caller.tenant_id, session_id)


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_ERRORS,
    summary="Erase everything of a session: memory, chunk log, operation log",
)
async def delete_session(session_id: str, service: Service, caller: Caller) -> Response:
    await service.sessions.delete_session(caller.tenant_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/sessions/{session_id}/chunks",
    response_model=ChunkList,
    responses=_ERRORS,
    summary="The chunk log with statuses and errors",
)
async def list_chunks(
    session_id: str,
    service: Service,
    caller: Caller,
    status_filter: Annotated[ChunkStatus | None, Query(alias="status")] = None,
    after_seq: Annotated[int, Query(ge=0, le=ID_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChunkList:
    chunks = await service.sessions.list_chunks(
        caller.tenant_id, session_id, status=status_filter, after_seq=after_seq, limit=limit
    )
    return ChunkList(chunks=chunks)


@router.post(
    "/sessions/{session_id}/chunks/{seq}/retry",
    response_model=ChunkResult,
    responses={202: {"model": ChunkResult, "description": "queued again, not (yet) processed"}, **_ERRORS},
    summary="Queue a failed chunk again",
)
async def retry_chunk(
    session_id: str,
    seq: Annotated[int, Path(ge=1, le=ID_MAX)],
    service: Service,
    caller: Caller,
    response: Response,
) -> ChunkResult:
    outcome = await service.ingestion.retry_chunk(caller.tenant_id, session_id, seq)
    response.status_code = status.HTTP_202_ACCEPTED if outcome.status in _UNFINISHED else status.HTTP_200_OK
    return outcome


@router.get(
    "/sessions/{session_id}/operations",
    response_model=OperationList,
    responses=_ERRORS,
    summary="Audit log of every memory change: actor, policy version, before/after",
)
async def list_operations(
    session_id: str,
    service: Service,
    caller: Caller,
    after_id: Annotated[int, Query(ge=0, le=ID_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OperationList:
    operations = await service.sessions.list_operations(
        caller.tenant_id, session_id, after_id=after_id, limit=limit
    )
    return OperationList(operations=operations)


@router.get(
    "/sessions/{session_id}/export",
    response_model=ExportOut,
    responses=_ERRORS,
    summary="Portable JSON of the memory (and optionally the chunk log and the audit log)",
)
async def export_session(
    session_id: str,
    service: Service,
    caller: Caller,
    include_chunks: bool = False,
    include_operations: Annotated[bool, Query(description="also the audit log")] = False,
) -> ExportOut:
    return await service.exchange.export_session(
        caller.tenant_id, session_id, include_chunks=include_chunks, include_operations=include_operations
    )


@router.post(
    "/sessions/{session_id}/import",
    response_model=ImportResult,
    responses=_ERRORS,
    summary="Load an export into a new or empty session",
)
async def import_session(
    session_id: str,
    payload: Annotated[SessionImport, Body(description="a payload of GET /sessions/{session_id}/export")],
    service: Service,
    caller: Caller,
) -> ImportResult:
    return await service.exchange.import_session(
        caller.tenant_id, session_id, payload.model_dump(mode="json")
    )
