"""What a sampling backend records for one chunk step, beside the ordinary `PolicyReply`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from app.policy.backend import PolicyReply, Usage
from app.policy.parser import parse_reply
from app.policy.repeats import applied_text
from app.policy.tools import openai_tools
from app.settings import ToolFormat

Message = dict[str, str]


@dataclass(frozen=True)
class TokenSample:
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # the sampling policy's log-prob of each completion token
    temperature: float  # the distribution the log-probs belong to: softmax(logits / temperature)
    truncated: bool = False  # generation hit max_new_tokens before a stop token or marker
    # Constrained decoding (`json`): the packed mask of the tokens allowed at each completion step
    # (`constraint.py`); the log-probs are of the masked distribution. None: unconstrained.
    allowed: torch.Tensor | None = None
    # The frequency penalty the sampler applied to the completion's own tokens (`penalty.py`); the log-probs
    # are of the penalised distribution, and the update replays it from the tokens.
    frequency_penalty: float = 0.0
    # Ended by the repeat stop (`repeat_stop.py`): an ended action, not a truncated one.
    repeat_stopped: bool = False

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.logprobs):
            raise ValueError(
                f"{len(self.completion_ids)} completion tokens but {len(self.logprobs)} log-probs"
            )
        if self.allowed is not None and len(self.allowed) != len(self.completion_ids):
            raise ValueError(f"{len(self.completion_ids)} completion tokens but {len(self.allowed)} masks")

    def as_extras(self) -> dict[str, Any]:
        return {
            "prompt_ids": self.prompt_ids,
            "completion_ids": self.completion_ids,
            "logprobs": self.logprobs,
            "temperature": self.temperature,
            "truncated": self.truncated,
            "allowed": self.allowed,
            "frequency_penalty": self.frequency_penalty,
            "repeat_stopped": self.repeat_stopped,
        }

    @classmethod
    def from_extras(cls, extras: dict[str, Any]) -> TokenSample:
        return cls(
            prompt_ids=list(extras["prompt_ids"]),
            completion_ids=list(extras["completion_ids"]),
            logprobs=[float(x) for x in extras["logprobs"]],
            temperature=float(extras["temperature"]),
            truncated=bool(extras["truncated"]),
            allowed=extras.get("allowed"),
            frequency_penalty=float(extras.get("frequency_penalty", 0.0)),
            repeat_stopped=bool(extras.get("repeat_stopped", False)),
        )


@dataclass
class SampledReply(PolicyReply):
    """A `PolicyReply` whose `extras` carry the `TokenSample` (see `TokenSample.as_extras`)."""

    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        text: str,
        sample: TokenSample,
        *,
        model: str,
        visible_items: int,
        started: float,
        repeat_stop_chars: int = 0,
    ) -> SampledReply:
        """Parse the sampled text exactly as the service does (its repeat stop included) and keep the
        sample for the update."""
        applied, repeat = applied_text(text, repeat_stop_chars)
        parsed = parse_reply(applied)
        return cls(
            calls=parsed.calls,
            raw_text=text,
            usage=Usage(prompt_tokens=len(sample.prompt_ids), completion_tokens=len(sample.completion_ids)),
            model=model,
            latency_s=time.perf_counter() - started,
            parse_errors=parsed.errors + ([repeat] if repeat else []),
            visible_items=visible_items,
            extras=sample.as_extras(),
        )


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], fmt: ToolFormat
) -> list[int]:
    """The prompt token ids exactly as an OpenAI-compatible server renders the service's chat request: the
    tokenizer's chat template, generation prompt on, thinking off, native tools passed as `tools` in the
    strict form the service sends (the template prints them into the prompt)."""
    ids = tokenizer.apply_chat_template(
        messages,
        tools=openai_tools(strict=True) if fmt == "native" else None,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
        enable_thinking=False,
    )
    return [int(token) for token in ids]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None) -> list[int]:
    """End-of-turn tokens: the tokenizer's eos, the model's generation eos list, and ChatML's `<|im_end|>`."""
    found: list[int] = []
    extra = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for token in (tokenizer.eos_token_id, *extra, im_end):
        if isinstance(token, int) and token != tokenizer.unk_token_id and token not in found:
            found.append(token)
    return found
