"""Answerers: turn an assembled context into an answer.

- `openai`: any OpenAI-compatible chat endpoint (vLLM in production), temperature 0, thinking off.
- `extractive`: no LLM. Returns the retrieved sentence that best supports the question: the sentence
  whose distinct question words carry the most weight (smoothed idf within its kind's memory). Ties go
  to the semantic kind first, then the item ranked higher by BM25, then the earlier sentence, so the
  answer is deterministic. Sentences that are themselves questions are passed over: they echo the
  question's words without answering it. With no support at all it says memory has nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from openai import APIError, AsyncOpenAI

from app.errors import Unavailable
from app.memory import LIST_KINDS
from app.qa.context import AnswerContext
from app.retrieval import bm25_tokens
from app.settings import Settings

NO_INFORMATION = "The memory does not contain this information."

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
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
        return Answer(best_sentence(context) or NO_INFORMATION, self.model)

    async def aclose(self) -> None:
        return None


def best_sentence(context: AnswerContext) -> str | None:
    best: tuple[float, str] | None = None
    for kind in LIST_KINDS:  # semantic first: it wins ties
        weights = context.word_weights.get(kind, {})
        for scored in context.items(kind):  # BM25 order: higher-ranked items win ties
            for sentence in _SENTENCE_END.split(scored.item.content):
                if sentence.rstrip().endswith("?"):
                    continue
                support = sum(weights.get(word, 0.0) for word in set(bm25_tokens(sentence)))
                if support > 0 and (best is None or support > best[0]):
                    best = (support, sentence.strip())
    return best[1] if best else None


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
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
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
            {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens} if usage else {},
        )

    async def aclose(self) -> None:
        await self._client.close()


def make_answerer(settings: Settings) -> Answerer:
    if settings.answerer_backend == "extractive":
        return ExtractiveAnswerer()
    base_url = settings.answerer_url or settings.policy_url
    if not base_url:
        raise ValueError("the openai answerer needs MEMALPHA_ANSWERER_URL (or MEMALPHA_POLICY_URL)")
    return OpenAIAnswerer(
        base_url=base_url,
        model=settings.answerer_model,
        api_key=settings.answerer_api_key.get_secret_value(),
        timeout_s=settings.answerer_timeout_s,
        max_retries=settings.answerer_max_retries,
        max_tokens=settings.answerer_max_tokens,
    )
