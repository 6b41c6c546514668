"""An LLM judge of answers ("J" in LoCoMo peers' reports): is the prediction correct given the gold
answer? Any OpenAI-compatible endpoint, temperature 0, thinking off, one word back."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI

_SYSTEM = (
    "You grade answers to questions about a long conversation or document. The gold answer is correct. "
    "Be generous with wording and format (a date written differently, a shorter or longer phrase with the "
    "same meaning) but strict about substance. Reply with exactly one word: CORRECT or WRONG."
)


class AnswerJudge:
    def __init__(self, base_url: str, model: str, *, api_key: str = "EMPTY", timeout_s: float = 120.0,
                 concurrency: int = 4) -> None:
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2)
        self.model = model
        self._slots = asyncio.Semaphore(concurrency)

    async def judge(self, question: str, gold: str, prediction: str) -> float:
        user = f"Question: {question}\nGold answer: {gold}\nGenerated answer: {prediction}\n\nCORRECT or WRONG?"
        async with self._slots:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
                temperature=0.0,
                max_tokens=4,
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
            )
        text = (response.choices[0].message.content or "") if response.choices else ""
        return 1.0 if text.strip().upper().startswith("CORRECT") else 0.0

    async def aclose(self) -> None:
        await self._client.close()
