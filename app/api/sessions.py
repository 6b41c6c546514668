"""Session routes: ingestion, status, chunk and operation logs, retry, export/import, deletion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from app.api.deps import Caller, Service
from app.api.schemas import (
    ChunkBody,
    ChunkList,
    ChunkResult,
    ChunkStatus,
    ErrorOut,
    ExportOut,
    ImportResult,
    IngestRequest,
    IngestResponse,
    JsonObject,
    OperationList,
    SessionList,
    SessionOut,
)
from app.service import ChunkIn

router = APIRouter(tags=["sessions"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422)
}
_UNFINISHED = {"pending", "processing"}


def _chunk_in(chunk: str | ChunkBody) -> ChunkIn:
    if isinstance(chunk, str):
        return ChunkIn(content=chunk)
    return ChunkIn(
        content=chunk.content, timestamp=chunk.timestamp, idempotency_key=chunk.idempotency_key,
        metadata=chunk.metadata,
    )


@router.post(
    "/sessions/{session_id}/ingest",
    response_model=IngestResponse,
    responses={202: {"model": IngestResponse, "description": "accepted, not (yet) processed"}, **_ERRORS},
    summary="Append chunks to a session's log (creates the session on first use)",
)
async def ingest(session_id: str, body: IngestRequest, service: Service, caller: Caller,
                 response: Response) -> IngestResponse:
    outcome = await service.ingest(caller.tenant_id, session_id, [_chunk_in(c) for c in body.chunks], wait=body.wait)
    response.status_code = status.HTTP_200_OK if outcome.complete else status.HTTP_202_ACCEPTED
    return IngestResponse.model_validate(outcome, from_attributes=True)


@router.get("/sessions", response_model=SessionList, responses=_ERRORS, summary="List the caller's sessions")
async def list_sessions(service: Service, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> SessionList:
    sessions = await service.list_sessions(caller.tenant_id, limit=limit, offset=offset)
    return SessionList.model_validate({"sessions": sessions, "limit": limit, "offset": offset})


@router.get("/sessions/{session_id}", response_model=SessionOut, responses=_ERRORS,
            summary="Session status: chunk counts by status, memory version and sizes")
async def get_session(session_id: str, service: Service, caller: Caller) -> dict[str, Any]:
    return await service.get_session(caller.tenant_id, session_id)


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS,
               summary="Erase everything of a session: memory, chunk log, operation log")
async def delete_session(session_id: str, service: Service, caller: Caller) -> Response:
    await service.delete_session(caller.tenant_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions/{session_id}/chunks", response_model=ChunkList, responses=_ERRORS,
            summary="The chunk log with statuses and errors")
async def list_chunks(
    session_id: str, service: Service, caller: Caller, status_filter: Annotated[
        ChunkStatus | None, Query(alias="status")] = None,
    after_seq: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChunkList:
    chunks = await service.list_chunks(caller.tenant_id, session_id, status=status_filter, after_seq=after_seq,
                                       limit=limit)
    return ChunkList.model_validate({"chunks": chunks})


@router.post(
    "/sessions/{session_id}/chunks/{seq}/retry",
    response_model=ChunkResult,
    responses={202: {"model": ChunkResult, "description": "queued again, not (yet) processed"}, **_ERRORS},
    summary="Queue a failed chunk again",
)
async def retry_chunk(session_id: str, seq: int, service: Service, caller: Caller,
                      response: Response) -> ChunkResult:
    outcome = await service.retry_chunk(caller.tenant_id, session_id, seq)
    response.status_code = status.HTTP_202_ACCEPTED if outcome.status in _UNFINISHED else status.HTTP_200_OK
    return ChunkResult.model_validate(outcome, from_attributes=True)


@router.get("/sessions/{session_id}/operations", response_model=OperationList, responses=_ERRORS,
            summary="Audit log of every memory change: actor, policy version, before/after")
async def list_operations(session_id: str, service: Service, caller: Caller,
                          after_id: Annotated[int, Query(ge=0)] = 0,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> OperationList:
    operations = await service.list_operations(caller.tenant_id, session_id, after_id=after_id, limit=limit)
    return OperationList.model_validate({"operations": operations})


@router.get("/sessions/{session_id}/export", response_model=ExportOut, responses=_ERRORS,
            summary="Portable JSON of the memory (and optionally the chunk log)")
async def export_session(session_id: str, service: Service, caller: Caller,
                         include_chunks: bool = False) -> dict[str, Any]:
    return await service.export_session(caller.tenant_id, session_id, include_chunks=include_chunks)


@router.post("/sessions/{session_id}/import", response_model=ImportResult, responses=_ERRORS,
             summary="Load an export into a new or empty session")
async def import_session(session_id: str, payload: Annotated[JsonObject, Body(
                             description="a payload of GET /sessions/{session_id}/export")], service: Service,
                         caller: Caller) -> dict[str, Any]:
    return await service.import_session(caller.tenant_id, session_id, payload)
