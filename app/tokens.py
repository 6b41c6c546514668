"""Token counters available offline: the policy model's own `tokenizer.json` (HF `tokenizers`) when
configured, the deterministic word estimate otherwise. Reports name the counter they used."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer

from app.memory.tokens import TokenCounter, WordTokenCounter


class HFTokenCounter:
    def __init__(self, path: str) -> None:
        self._tokenizer = Tokenizer.from_file(path)
        self.name = f"tokenizer:{path}"

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def prefix_end(self, text: str, max_tokens: int) -> int:
        if max_tokens <= 0:
            return 0
        offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return offsets[max_tokens - 1][1] if max_tokens <= len(offsets) else len(text)


@lru_cache(maxsize=8)
def make_token_counter(tokenizer_file: str | None = None) -> TokenCounter:
    return HFTokenCounter(tokenizer_file) if tokenizer_file else WordTokenCounter()
