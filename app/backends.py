"""The configured policy and answerer backends, built from settings. Building is the composition root's
part (the service, the CLI, the trainer and benches call these): the backends themselves take their
configuration as arguments and never read settings."""

from __future__ import annotations

from app.contracts.policy import PolicyServing, format_max_calls
from app.memory import MemoryLimits, TokenCounter
from app.policy import ExtractivePolicy, OpenAIPolicy, OpenAIPolicyConfig, PolicyBackend, prompt_sha256
from app.qa import Answerer, ExtractiveAnswerer, OpenAIAnswerer
from app.settings import Settings
from app.tokens import make_token_counter


def openai_policy_config(settings: Settings) -> OpenAIPolicyConfig:
    if not settings.policy_url:
        raise ValueError("the openai policy backend needs MEMALPHA_POLICY_URL")
    return OpenAIPolicyConfig(
        base_url=settings.policy_url,
        model=settings.policy_model,
        api_key=settings.policy_api_key.get_secret_value(),
        tool_format=settings.policy_tool_format,
        timeout_s=settings.policy_timeout_s,
        max_retries=settings.policy_max_retries,
        retry_backoff_s=settings.policy_retry_backoff_s,
        max_tokens=settings.policy_max_tokens,
        temperature=settings.policy_temperature,
        prompt_budget_tokens=settings.policy_prompt_budget_tokens,
        max_calls=settings.policy_max_calls,
        frequency_penalty=settings.policy_frequency_penalty,
        repeat_stop_chars=settings.policy_repeat_stop_chars,
        core_tokens=settings.core_token_limit,
        # `dns+` names are resolved when the backend is built and again every refresh interval while it
        # runs (app/policy/replica_pool.py); adapter syncs (PUT /policy, rollback) resolve for themselves.
        replica_urls=tuple(settings.policy_replicas),
        replicas_refresh_s=settings.policy_replicas_refresh_s,
        adapters_dir=settings.policy_adapters_dir,
        connections=settings.policy_concurrency,
    )


def memory_limits(settings: Settings) -> MemoryLimits:
    return MemoryLimits(
        core_tokens=settings.core_token_limit,
        max_item_tokens=settings.max_item_tokens,
        max_items_per_kind=settings.max_items_per_kind,
    )


def make_policy(settings: Settings) -> PolicyBackend:
    counter = make_token_counter(settings.tokenizer_file)
    if settings.policy_backend == "openai":
        return OpenAIPolicy(openai_policy_config(settings), counter)
    return ExtractivePolicy(counter, memory_limits(settings))


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


def policy_serving(settings: Settings, counter: TokenCounter) -> PolicyServing:
    return PolicyServing(
        tool_format=settings.policy_tool_format,
        max_new_tokens=settings.policy_max_tokens,
        prompt_budget_tokens=settings.policy_prompt_budget_tokens,
        token_counter=counter.name,
        max_calls=format_max_calls(settings.policy_tool_format, settings.policy_max_calls),
        frequency_penalty=settings.policy_frequency_penalty,
        repeat_stop_chars=settings.policy_repeat_stop_chars,
        prompt_sha256=prompt_sha256(settings.policy_tool_format, settings.core_token_limit),
    )
