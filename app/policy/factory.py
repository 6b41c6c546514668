"""Build the configured policy backend."""

from __future__ import annotations

from app.memory.limits import MemoryLimits
from app.policy.backend import PolicyBackend
from app.policy.extractive import ExtractivePolicy
from app.policy.openai_backend import OpenAIPolicy, OpenAIPolicyConfig
from app.settings import Settings
from app.tokens import make_token_counter


def make_policy(settings: Settings) -> PolicyBackend:
    counter = make_token_counter(settings.tokenizer_file)
    if settings.policy_backend == "openai":
        return OpenAIPolicy(OpenAIPolicyConfig.from_settings(settings), counter)
    limits = MemoryLimits(
        core_tokens=settings.core_token_limit,
        max_item_tokens=settings.max_item_tokens,
        max_items_per_kind=settings.max_items_per_kind,
    )
    return ExtractivePolicy(counter, limits)
