"""Answerers: turn an assembled context into an answer.

- `openai`: any OpenAI-compatible chat endpoint (vLLM in production), temperature 0, thinking off.
- `extractive`: no LLM (`app.qa.extract`): the shortest best-supported sentence of the context, cut to
  the span the question asks for (a date for "when"); `\\boxed{label}` from the best-matching labelled
  item when the question asks for it; "memory does not contain this" when nothing matches enough of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from openai import APIError, AsyncOpenAI

from app.errors import Unavailable
from app.qa.context import AnswerContext
from app.qa.extract import NO_INFORMATION, extract_answer

# Qwen3 may still open an empty think block with thinking off; the answer is what follows it.
_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)


class Answerer(Protocol):
    async def answer(self, context: AnswerContext) -> Answer: ...

    async def aclose(self) -> None: ...


class ExtractiveAnswerer:
    model = "extractive"

    async def answer(self, context: AnswerContext) -> Answer:
        return Answer(extract_answer(context) or NO_INFORMATION, self.model)

    async def aclose(self) -> None:
        return None


class OpenAIAnswerer:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        max_tokens: int = 512,
    ) -> None:
        # The SDK retries connection errors, 408/409/429 and 5xx with exponential backoff.
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self.model = model
        self.max_tokens = max_tokens

    async def answer(self, context: AnswerContext) -> Answer:
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=context.messages(),  # type: ignore[arg-type]
                temperature=0.0,
                max_tokens=self.max_tokens,
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
        except APIError as error:
            raise Unavailable(f"answering model {self.model!r} failed: {error}") from error
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        return Answer(
            _THINK_BLOCK.sub("", text).strip(),
            response.model or self.model,
            {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
            if usage
            else {},
        )

    async def aclose(self) -> None:
        await self._client.close()
