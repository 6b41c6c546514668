"""Answering a question from a session's memory and searching it (BM25)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.contracts.schemas import AnswerOut, Evidence, SearchOut
from app.errors import BadRequest
from app.memory import LIST_KINDS, MemoryKind, is_blank
from app.metrics import ANSWER_LATENCY
from app.qa import answer_question
from app.service.results import scored

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Answers:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def answer(self, tenant: str, session_id: str, question: str, *, k: int | None) -> AnswerOut:
        if is_blank(question):
            raise BadRequest("the question is empty")
        key = self.service.key(tenant, session_id)
        state = await self.service.state(key)
        result = await answer_question(
            state,
            question,
            retriever=self.service.retriever,
            answerer=self.service.answerer,
            k=self.service.top_k(k)
            if self.service.settings.answer_context == "top-k" or k is not None
            else None,
            budget_tokens=self.service.settings.answer_context_tokens,
            counter=self.service.counter,
            key=key,
            mode=self.service.settings.answer_context,
        )
        ANSWER_LATENCY.observe(result.latency_s)
        return AnswerOut(
            question=result.question,
            answer=result.answer,
            evidence=Evidence.model_validate(result, from_attributes=True),  # core, semantic, episodic
            memory_version=state.version,
            model=result.model,
            usage=result.usage,
            k=result.k,
            latency_s=result.latency_s,
        )

    async def search(
        self, tenant: str, session_id: str, query: str, *, k: int | None, memory_type: str | None
    ) -> SearchOut:
        if is_blank(query):
            raise BadRequest("the query is empty")
        kinds: tuple[MemoryKind, ...] = LIST_KINDS
        if memory_type is not None:
            kind = MemoryKind.parse(memory_type)
            if kind is None or kind is MemoryKind.CORE:
                raise BadRequest(f"memory_type must be semantic or episodic, not {memory_type!r}")
            kinds = (kind,)
        key = self.service.key(tenant, session_id)
        state = await self.service.state(key)
        found = self.service.retriever.search(state, query, self.service.top_k(k), kinds, key=key)
        # Only the kinds searched are set (the others default to empty: `model_fields_set` tells them apart).
        return SearchOut.model_validate(
            {
                "query": query,
                "memory_version": state.version,
                **{kind.value: scored(hits) for kind, hits in found.items()},
            }
        )
