"""An LLM judge of answers ("J" in LoCoMo peers' reports): is the prediction correct given the gold
answer? Any OpenAI-compatible endpoint, temperature 0, thinking off, one word back."""

from __future__ import annotations

from trainer.judge import OneWordJudge

_SYSTEM = (
    "You grade answers to questions about a long conversation or document. The gold answer is correct. "
    "Be generous with wording and format (a date written differently, a shorter or longer phrase with the "
    "same meaning) but strict about substance. Reply with exactly one word: CORRECT or WRONG."
)


class AnswerJudge(OneWordJudge):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 120.0,
        concurrency: int = 4,
    ) -> None:
        super().__init__(base_url, model, api_key=api_key, timeout_s=timeout_s, concurrency=concurrency)

    async def judge(self, question: str, gold: str, prediction: str) -> float:
        user = (
            f"Question: {question}\nGold answer: {gold}\nGenerated answer: {prediction}\n\nCORRECT or WRONG?"
        )
        return 1.0 if (await self._ask(_SYSTEM, user)).startswith("correct") else 0.0
