"""The r4 judge (SPEC §6): is a written memory content valid for its memory type?

Core must be real context, not a placeholder or text about the memory itself; semantic must be a fact or
piece of knowledge; episodic must be an event with its time and context. The judge is any
OpenAI-compatible chat endpoint (temperature 0, thinking off) answering `yes` or `no`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from openai import AsyncOpenAI

_RUBRIC = {
    "core": "core memory: a paragraph of lasting context about the people, topic or task. Invalid: a "
    "placeholder (e.g. 'empty', 'N/A', 'to be filled'), instructions, or text about the memory itself.",
    "semantic": "semantic memory: a self-contained fact, piece of knowledge, preference, rule or labelled "
    "example. Invalid: an event narrated with a time, a placeholder, or meta-text about the memory.",
    "episodic": "episodic memory: an event that happened, saying when (a time or date) and in what context "
    "or who was involved. Invalid: a timeless fact, a placeholder, or meta-text about the memory.",
}

_SYSTEM = (
    "You check entries that a memory manager wrote. Answer with exactly one word: yes if the entry is valid "
    "for its memory type, no otherwise."
)


class ContentJudge(Protocol):
    async def judge(self, writes: Sequence[tuple[str, str]]) -> list[bool]:
        """One verdict per (memory_type, content), in order."""
        ...

    async def aclose(self) -> None: ...


class OneWordJudge:
    """A judge LLM behind any OpenAI-compatible endpoint that answers with one word (temperature 0,
    thinking off); shared by the r4 content judge and the evaluator's answer judge."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2)
        self.model = model
        self._slots = asyncio.Semaphore(concurrency)

    async def _ask(self, system: str, user: str) -> str:
        async with self._slots:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                temperature=0.0,
                max_tokens=4,
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
        text = (response.choices[0].message.content or "") if response.choices else ""
        return text.strip().lower()

    async def aclose(self) -> None:
        await self._client.close()


class OpenAIContentJudge(OneWordJudge):
    async def judge(self, writes: Sequence[tuple[str, str]]) -> list[bool]:
        return list(await asyncio.gather(*(self._one(kind, content) for kind, content in writes)))

    async def _one(self, kind: str, content: str) -> bool:
        rubric = _RUBRIC.get(kind)
        if rubric is None:  # not a memory type: nothing valid was written
            return False
        user = f"Memory type — {rubric}\n\nEntry:\n{content}\n\nIs this entry valid for its memory type?"
        return (await self._ask(_SYSTEM, user)).startswith("yes")
