"""Memory routes: read, manual edits (same apply and audit log as the policy, actor `user`), answer, search."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from app.api.deps import Caller, Service
from app.api.json_body import FastJSONRoute
from app.contracts.schemas import (
    VISIBLE,
    AnswerOut,
    CoreEdit,
    ErrorOut,
    ItemEdit,
    ItemKind,
    MemoryOut,
    OperationOut,
    Question,
    SearchOut,
    SearchQuery,
)

router = APIRouter(tags=["memory"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 422)}


@router.get(
    "/sessions/{session_id}/memory",
    response_model=MemoryOut,
    responses=_ERRORS,
    summary="The full memory: core, semantic and episodic items, version, tokens",
)
async def get_memory(session_id: str, service: Service, caller: Caller) -> MemoryOut:
    return await service.memory.get_memory(caller.tenant_id, session_id)


@router.put(
    "/sessions/{session_id}/memory/core",
    response_model=OperationOut,
    responses=_ERRORS,
    summary="Replace the core paragraph",
)
async def replace_core(session_id: str, body: CoreEdit, service: Service, caller: Caller) -> OperationOut:
    return await service.memory.replace_core(caller.tenant_id, session_id, body.content)


@router.delete(
    "/sessions/{session_id}/memory/core",
    response_model=OperationOut,
    responses=_ERRORS,
    summary="Clear the core paragraph",
)
async def clear_core(session_id: str, service: Service, caller: Caller) -> OperationOut:
    return await service.memory.clear_core(caller.tenant_id, session_id)


@router.post("/sessions/{session_id}/memory/core", include_in_schema=False)
async def no_core_insert() -> None:
    """Not a method of this path: without this route, `/memory/{memory_type}` would take it (422)."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED)


@router.post(
    "/sessions/{session_id}/memory/{memory_type}",
    response_model=OperationOut,
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
    summary="Insert a semantic or episodic item (the id is assigned)",
)
async def insert_item(
    session_id: str, memory_type: ItemKind, body: ItemEdit, service: Service, caller: Caller
) -> OperationOut:
    return await service.memory.insert_item(caller.tenant_id, session_id, memory_type, body.content)


@router.patch(
    "/sessions/{session_id}/memory/{memory_type}/{memory_id}",
    response_model=OperationOut,
    responses=_ERRORS,
    summary="Replace an item's content",
)
async def update_item(
    session_id: str, memory_type: ItemKind, memory_id: str, body: ItemEdit, service: Service, caller: Caller
) -> OperationOut:
    return await service.memory.update_item(
        caller.tenant_id, session_id, memory_type, memory_id, body.content
    )


@router.delete(
    "/sessions/{session_id}/memory/{memory_type}/{memory_id}",
    response_model=OperationOut,
    responses=_ERRORS,
    summary="Delete an item",
)
async def delete_item(
    session_id: str, memory_type: ItemKind, memory_id: str, service: Service, caller: Caller
) -> OperationOut:
    return await service.memory.delete_item(caller.tenant_id, session_id, memory_type, memory_id)


@router.get(
    "/sessions/{session_id}/answer",
    response_model=AnswerOut,
    responses=_ERRORS,
    summary="Answer a question from memory (BM25 evidence + the answering model)",
)
async def answer(
    session_id: str,
    service: Service,
    caller: Caller,
    q: Annotated[
        str, Query(min_length=1, examples=["Where does Alice live?"], json_schema_extra={"pattern": VISIBLE})
    ],
    k: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> AnswerOut:
    return await service.answers.answer(caller.tenant_id, session_id, q, k=k)


@router.post(
    "/sessions/{session_id}/answer",
    response_model=AnswerOut,
    responses=_ERRORS,
    summary="Answer a question given in the body (for questions too long for a URL)",
)
async def answer_posted(session_id: str, body: Question, service: Service, caller: Caller) -> AnswerOut:
    return await service.answers.answer(caller.tenant_id, session_id, body.q, k=body.k)


@router.get(
    "/sessions/{session_id}/search",
    response_model=SearchOut,
    responses=_ERRORS,
    summary="BM25-ranked memory items with scores (no LLM)",
)
async def search(
    session_id: str,
    service: Service,
    caller: Caller,
    q: Annotated[str, Query(min_length=1, json_schema_extra={"pattern": VISIBLE})],
    k: Annotated[int | None, Query(ge=1, le=1000)] = None,
    memory_type: ItemKind | None = None,
) -> SearchOut:
    return await service.answers.search(caller.tenant_id, session_id, q, k=k, memory_type=memory_type)


@router.post(
    "/sessions/{session_id}/search",
    response_model=SearchOut,
    responses=_ERRORS,
    summary="BM25 search with the query in the body (for queries too long for a URL)",
)
async def search_posted(session_id: str, body: SearchQuery, service: Service, caller: Caller) -> SearchOut:
    return await service.answers.search(
        caller.tenant_id, session_id, body.q, k=body.k, memory_type=body.memory_type
    )
