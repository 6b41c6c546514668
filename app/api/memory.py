"""Memory routes: read, manual edits (same apply and audit log as the policy, actor `user`), answer, search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from app.api.deps import Caller, Service
from app.api.schemas import AnswerOut, CoreEdit, ErrorOut, ItemEdit, MemoryOut, OperationOut, SearchOut
from app.memory import MemoryKind, Operation, Tool

router = APIRouter(tags=["memory"])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 422)}
_CORE = MemoryKind.CORE.value


@router.get("/sessions/{session_id}/memory", response_model=MemoryOut, responses=_ERRORS,
            summary="The full memory: core, semantic and episodic items, version, tokens")
async def get_memory(session_id: str, service: Service, caller: Caller) -> dict[str, Any]:
    return await service.get_memory(caller.tenant_id, session_id)


async def _edit(service: Service, caller: Caller, session_id: str, op: Operation) -> OperationOut:
    result = await service.edit_memory(caller.tenant_id, session_id, op)
    return OperationOut.model_validate(result, from_attributes=True)


@router.put("/sessions/{session_id}/memory/core", response_model=OperationOut, responses=_ERRORS,
            summary="Replace the core paragraph")
async def replace_core(session_id: str, body: CoreEdit, service: Service, caller: Caller) -> OperationOut:
    return await _edit(service, caller, session_id, Operation(Tool.UPDATE, _CORE, content=body.content))


@router.delete("/sessions/{session_id}/memory/core", response_model=OperationOut, responses=_ERRORS,
               summary="Clear the core paragraph")
async def clear_core(session_id: str, service: Service, caller: Caller) -> OperationOut:
    return await _edit(service, caller, session_id, Operation(Tool.DELETE, _CORE))


@router.post("/sessions/{session_id}/memory/{memory_type}", response_model=OperationOut,
             status_code=status.HTTP_201_CREATED, responses=_ERRORS,
             summary="Insert a semantic or episodic item (the id is assigned)")
async def insert_item(session_id: str, memory_type: str, body: ItemEdit, service: Service,
                      caller: Caller) -> OperationOut:
    return await _edit(service, caller, session_id, Operation(Tool.INSERT, memory_type, content=body.content))


@router.patch("/sessions/{session_id}/memory/{memory_type}/{memory_id}", response_model=OperationOut,
              responses=_ERRORS, summary="Replace an item's content")
async def update_item(session_id: str, memory_type: str, memory_id: str, body: ItemEdit, service: Service,
                      caller: Caller) -> OperationOut:
    op = Operation(Tool.UPDATE, memory_type, content=body.content, memory_id=memory_id)
    return await _edit(service, caller, session_id, op)


@router.delete("/sessions/{session_id}/memory/{memory_type}/{memory_id}", response_model=OperationOut,
               responses=_ERRORS, summary="Delete an item")
async def delete_item(session_id: str, memory_type: str, memory_id: str, service: Service,
                      caller: Caller) -> OperationOut:
    return await _edit(service, caller, session_id, Operation(Tool.DELETE, memory_type, memory_id=memory_id))


@router.get("/sessions/{session_id}/answer", response_model=AnswerOut, responses=_ERRORS,
            summary="Answer a question from memory (BM25 evidence + the answering model)")
async def answer(session_id: str, service: Service, caller: Caller, q: Annotated[str, Query(min_length=1)],
                 k: Annotated[int | None, Query(ge=1, le=1000)] = None) -> dict[str, Any]:
    return await service.answer(caller.tenant_id, session_id, q, k=k)


@router.get("/sessions/{session_id}/search", response_model=SearchOut, responses=_ERRORS,
            summary="BM25-ranked memory items with scores (no LLM)")
async def search(session_id: str, service: Service, caller: Caller, q: Annotated[str, Query(min_length=1)],
                 k: Annotated[int | None, Query(ge=1, le=1000)] = None,
                 memory_type: str | None = None) -> dict[str, Any]:
    return await service.search(caller.tenant_id, session_id, q, k=k, memory_type=memory_type)
