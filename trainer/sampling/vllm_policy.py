"""`VLLMSamplingPolicy`: rollouts on an OpenAI-compatible vLLM server (the GPU path), with log-probs.

The prompt is built exactly as the service builds it and rendered to token ids locally with the base
model's chat template; the ids go to `/v1/completions` (a token-id prompt), so the trainer knows the
exact prompt tokens. vLLM returns each sampled token as `token_id:N` (`return_tokens_as_token_ids`) with
its log-prob. Sampling is plain: top-k/top-p/min-p/repetition penalty are set to their neutral values
explicitly, because vLLM otherwise applies the model's generation_config defaults. The `json` format is
decoded under the service's schema constraint by vLLM itself (`response_format`, as the service sends it),
and the mask is replayed here for the update. A frequency penalty goes as the request's own
`frequency_penalty` (the service sends the same), which vLLM applies to the completion's tokens only; its
log-probs include it under `--logprobs-mode processed_logprobs`, as the training servers run. With the repeat
stop the server's reply is cut after it returns, at the token a stopping sampler would have ended on. The adapter being
trained is loaded on the server under a name of its own and passed as `model`; when the server answers
404 for it (restarted, adapter gone) `reload` loads it again and the request is retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import torch
from transformers import PreTrainedTokenizerBase

from app.memory import MemoryState, TokenCounter
from app.memory.render import POLICY_VISIBLE_ITEMS
from app.policy.backend import PolicyError
from app.policy.parser import STOP_MARKERS
from app.policy.prompt import build_messages
from app.policy.repeats import repeat_window
from app.policy.tools import json_response_format
from app.policy.vllm_admin import VLLMAdminError
from app.settings import ToolFormat
from trainer.sampling.constraint import ConstraintError, JsonCallsConstraint
from trainer.sampling.record import SampledReply, TokenSample, chat_prompt_ids
from trainer.sampling.repeat_stop import repeat_stop_length

_TOKEN_ID_PREFIX = "token_id:"


class VLLMSamplingPolicy:
    name = "vllm"
    view_items: int | None = POLICY_VISIBLE_ITEMS  # the prompt's recent items (PolicyBackend)

    def __init__(
        self,
        base_url: str,
        model_name: str,
        tokenizer: PreTrainedTokenizerBase,
        *,
        tool_format: ToolFormat,
        counter: TokenCounter,
        prompt_budget_tokens: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        api_key: str = "EMPTY",
        timeout_s: float = 900.0,
        reload: Callable[[str], Awaitable[None]] | None = None,
        constraint: JsonCallsConstraint | None = None,
        frequency_penalty: float = 0.0,
        repeat_stop_chars: int = 0,
        max_in_flight: int = 0,
    ) -> None:
        if constraint is not None and tool_format != "json":
            raise ValueError(f"the schema constraint is the json format's, not {tool_format!r}'s")
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2
        )
        self.base_url = base_url
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.tool_format = tool_format
        self.counter = counter
        self.prompt_budget_tokens = prompt_budget_tokens
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.reload = reload
        self.constraint = constraint
        self.frequency_penalty = frequency_penalty
        self.repeat_window = repeat_window(tool_format, repeat_stop_chars)
        self._in_flight = asyncio.Semaphore(max_in_flight) if max_in_flight else contextlib.nullcontext()

    def request(self, prompt_ids: list[int], model: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "prompt": prompt_ids,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "logprobs": 1,
            "frequency_penalty": self.frequency_penalty,
            "stop": list(STOP_MARKERS) if self.tool_format == "alpha" else None,
            "extra_body": {
                "top_k": -1,
                "top_p": 1.0,
                "min_p": 0.0,
                "repetition_penalty": 1.0,
                "return_tokens_as_token_ids": True,
                "include_stop_str_in_output": True,
            },
        }
        if self.constraint is not None:  # the service's constraint, applied by the same engine
            request["extra_body"]["response_format"] = json_response_format(self.constraint.max_calls)
        return request

    async def _create(self, prompt_ids: list[int], name: str) -> Any:
        try:
            return await self._client.completions.create(**self.request(prompt_ids, name))
        except openai.NotFoundError:
            if self.reload is None or name == self.model_name:
                raise
            try:
                await self.reload(name)
            except (VLLMAdminError, httpx.HTTPError) as error:  # dropped and counted as infrastructure
                raise PolicyError(f"reloading adapter {name!r} after a 404: {error}") from error
            return await self._client.completions.create(**self.request(prompt_ids, name))

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> SampledReply:
        started = time.perf_counter()
        build = build_messages(
            state, chunk, self.tool_format, self.counter, self.prompt_budget_tokens, self.max_new_tokens
        )
        prompt_ids = chat_prompt_ids(self.tokenizer, build.messages, self.tool_format)
        name = model or self.model_name
        try:
            async with self._in_flight:
                response = await self._create(prompt_ids, name)
        except openai.OpenAIError as error:
            raise PolicyError(f"rollout endpoint {self.base_url}: {error}") from error
        choice = response.choices[0]
        if choice.logprobs is None or choice.logprobs.tokens is None:
            raise PolicyError("the rollout endpoint returned no log-probs", retryable=False)
        completion_ids = [_token_id(token) for token in choice.logprobs.tokens]
        logprobs = [float(value) for value in choice.logprobs.token_logprobs or []]
        # The server ran past the repeat stop: keep the tokens a stopping sampler would have generated.
        stop = repeat_stop_length(self.tokenizer, completion_ids, self.repeat_window)
        if stop is not None:
            completion_ids, logprobs = completion_ids[:stop], logprobs[:stop]
        sample = TokenSample(
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
            logprobs=logprobs,
            temperature=self.temperature if self.temperature > 0 else 1.0,
            truncated=stop is None and choice.finish_reason == "length",
            # vLLM returns no mask, so it is replayed from the tokens (the update needs it). Its log-probs
            # are already of the masked distribution (the grammar bitmask is applied to the logits before
            # vLLM's sampler, whose "raw" log-probs come after it) but before temperature unless the server
            # runs with --logprobs-mode processed_logprobs, as the training servers do.
            allowed=_replayed(self.constraint, completion_ids, self.base_url) if self.constraint else None,
            frequency_penalty=self.frequency_penalty,
            repeat_stopped=stop is not None,
        )
        return SampledReply.of(
            choice.text,
            sample,
            model=name,
            visible_items=build.visible_items,
            started=started,
            repeat_stop_chars=self.repeat_window,
        )

    async def health(self) -> bool:
        try:
            await self._client.models.list()
        except openai.OpenAIError:
            return False
        return True

    async def aclose(self) -> None:
        await self._client.close()


def _replayed(constraint: JsonCallsConstraint, completion_ids: list[int], base_url: str) -> torch.Tensor:
    try:
        return constraint.allowed(completion_ids)
    except ConstraintError as error:  # the server's grammar differs: its log-probs are of another mask too
        raise ConstraintError(
            f"{base_url} sampled outside the trainer's json constraint ({error}); the server must run with "
            """--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}'"""
        ) from error


def _token_id(token: str) -> int:
    if not token.startswith(_TOKEN_ID_PREFIX):
        raise PolicyError(
            f"expected tokens as {_TOKEN_ID_PREFIX}N (return_tokens_as_token_ids), got {token!r}",
            retryable=False,
        )
    return int(token[len(_TOKEN_ID_PREFIX) :])
