"""`TransformersPolicy`: the policy as a local transformers model (CPU or GPU), with an optional LoRA adapter.

Same prompt (`app.policy.prompt.build_messages`), same parser and same operations as the service; the
reply's `extras` carry the prompt ids, the completion ids and the sampling policy's log-probs of every
completion token. Sampling is plain ancestral sampling from softmax(logits / temperature): no top-k,
top-p or repetition penalty (a model's generation_config often sets them, and they would make the
recorded log-probs differ from the distribution that was sampled), so the model's generation_config is
replaced by a clean one: transformers fills every setting left unset in a call from it. Temperature 0 is
greedy decoding. Like the service's `alpha` requests, generation stops at ✿RESULT✿ / ✿RETURN✿ (the model
would go on to invent tool results); the completion keeps the marker's tokens, so the stop is learnt too.
`json` is sampled under the service's schema constraint (`constraint.py`: the mask vLLM applies; the
trainer always passes it, bare token-level tests leave it out), and the recorded log-probs are those of
the masked distribution, the one the service samples. A frequency penalty (the service's
MEMALPHA_POLICY_FREQUENCY_PENALTY, `penalty.py`) is applied inside `generate` as vLLM applies it, and the
recorded log-probs are of the penalised distribution too. The repeat stop (MEMALPHA_POLICY_REPEAT_STOP_CHARS,
`repeat_stop.py`) ends a row where its text begins repeating itself. Difference from serving, by design: `native` is
sampled without `tool_choice="required"`.

Concurrent `propose` calls (the G rollouts of a group, several groups) are gathered into one batch:
decoding reads the weights once per token for the whole batch, and a prompt that several rollouts share is
prefilled once.
"""

from __future__ import annotations

import asyncio
import time

import torch
from torch.nn import functional
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from app.memory import MemoryState, TokenCounter
from app.memory.render import POLICY_VISIBLE_ITEMS
from app.policy.parser import STOP_MARKERS
from app.policy.prompt import build_messages
from app.policy.repeats import repeat_window
from app.settings import ToolFormat
from trainer.sampling.constraint import ConstrainedRows, JsonCallsConstraint
from trainer.sampling.mask import masked
from trainer.sampling.penalty import CompletionPenalty, penalised
from trainer.sampling.record import SampledReply, TokenSample, chat_prompt_ids, stop_token_ids
from trainer.sampling.repeat_stop import RepeatStopCriteria

_GATHER_S = 0.02  # how long a batch waits for more concurrent requests before it runs


class TransformersPolicy:
    name = "transformers"
    view_items: int | None = POLICY_VISIBLE_ITEMS  # the prompt's recent items (PolicyBackend)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_name: str,
        tool_format: ToolFormat,
        counter: TokenCounter,
        prompt_budget_tokens: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        max_batch: int = 8,
        constraint: JsonCallsConstraint | None = None,
        frequency_penalty: float = 0.0,
        repeat_stop_chars: int = 0,
    ) -> None:
        if constraint is not None and tool_format != "json":
            raise ValueError(f"the schema constraint is the json format's, not {tool_format!r}'s")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.tool_format = tool_format
        self.counter = counter
        self.prompt_budget_tokens = prompt_budget_tokens
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_batch = max_batch
        self.constraint = constraint
        self.frequency_penalty = frequency_penalty
        self.repeat_window = repeat_window(tool_format, repeat_stop_chars)
        self._stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.generation_config = GenerationConfig(
            eos_token_id=self._stops, pad_token_id=tokenizer.pad_token_id
        )
        self._waiting: list[tuple[list[int], asyncio.Future[TokenSample]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> SampledReply:
        started = time.perf_counter()
        build = build_messages(
            state, chunk, self.tool_format, self.counter, self.prompt_budget_tokens, self.max_new_tokens
        )
        prompt_ids = chat_prompt_ids(self.tokenizer, build.messages, self.tool_format)
        sample = await self._submit(prompt_ids)
        text = self.tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        return SampledReply.of(
            text,
            sample,
            model=model or self.model_name,
            visible_items=build.visible_items,
            started=started,
            repeat_stop_chars=self.repeat_window,
        )

    async def _submit(self, prompt_ids: list[int]) -> TokenSample:
        future: asyncio.Future[TokenSample] = asyncio.get_running_loop().create_future()
        self._waiting.append((prompt_ids, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run the waiting requests in batches, one batch at a time (the model and torch's RNG are shared)."""
        while self._waiting:
            await asyncio.sleep(_GATHER_S)
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                samples = await asyncio.to_thread(self.sample_batch, [prompt for prompt, _ in batch])
            except Exception as error:  # noqa: BLE001 -- any failure is handed to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            # A caller cancelled while its batch ran has no use for the sample; the others still wait for theirs.
            for (_, future), sample in zip(batch, samples, strict=True):
                if not future.done():
                    future.set_result(sample)

    def sample(self, prompt_ids: list[int]) -> TokenSample:
        return self.sample_batch([prompt_ids])[0]

    @torch.no_grad()
    def sample_batch(self, prompts: list[list[int]]) -> list[TokenSample]:
        """One left-padded batch. When prompts repeat (the G rollouts of a step), each distinct prompt is
        prefilled once and the batch decodes from copies of its cache: on a CPU the prefill of a long
        prompt costs more than its whole decode, so G rollouts then cost about one prompt."""
        distinct = {tuple(prompt) for prompt in prompts}
        if len(distinct) == len(prompts):
            return self._generate(prompts)
        prefilled = {prompt: self._prefill(list(prompt)) for prompt in distinct}
        width = max(len(prompt) for prompt in prompts)
        return self._generate(
            prompts, _left_padded([prefilled[tuple(p)] for p in prompts], width - 1, self.model.config)
        )

    def _prefill(self, prompt: list[int]) -> DynamicCache:
        """The cache of all but the last prompt token: generate feeds the tokens a cache lacks, at least one."""
        cache = DynamicCache(config=self.model.config)
        device = next(self.model.parameters()).device
        self.model(
            input_ids=torch.tensor([prompt[:-1]], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return cache

    def _generate(self, prompts: list[list[int]], cache: DynamicCache | None = None) -> list[TokenSample]:
        device = next(self.model.parameters()).device
        width = max(len(prompt) for prompt in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        greedy = self.temperature <= 0
        settings = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else self.temperature,
            eos_token_id=self._stops,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        markers = _StopAtMarkers(self.tokenizer, width, len(prompts)) if self.tool_format == "alpha" else None
        repeats = (
            RepeatStopCriteria(self.tokenizer, self.repeat_window, width, len(prompts))
            if self.repeat_window
            else None
        )
        rows = (
            ConstrainedRows(self.constraint, width, len(prompts), repeats.done_at if repeats else None)
            if self.constraint
            else None
        )
        penalty = CompletionPenalty(self.frequency_penalty, width) if self.frequency_penalty else None
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            generation_config=settings,
            cache=cache,
            stopping_criteria=StoppingCriteriaList([c for c in (markers, repeats) if c is not None]),
            # Before the temperature warper, which generate appends after every given processor.
            logits_processor=LogitsProcessorList([p for p in (rows, penalty) if p is not None]),
        )
        # Raw logits (before the constraint's mask and the penalty), penalised and tempered as the sampler
        # did (greedy: the untempered distribution); the mask is applied per row below.
        scale = 1.0 if greedy else self.temperature
        samples = []
        for row, prompt in enumerate(prompts):
            generated = out.sequences[row, width:]
            stopped = [c.done_at[row] for c in (markers, repeats) if c is not None]
            length, truncated = self._length(generated.tolist(), [at for at in stopped if at is not None])
            completion = generated[:length]
            allowed = rows.allowed(row, length) if rows else None
            # One row's [steps, vocab] at a time: stacking the whole batch (and tempering it) would hold two
            # more copies of generate's logits, 1.2 GB each for 5 rows × 384 steps of a 152k vocabulary. Stacked,
            # penalised and tempered in one expression: no name keeps an intermediate copy alive.
            row_logits = (
                penalised(
                    torch.stack([step[row] for step in out.logits[:length]]).float(),
                    completion,
                    self.frequency_penalty,
                )
                / scale
            )
            row_logits = masked(row_logits, allowed)
            logprobs = torch.log_softmax(row_logits, dim=-1).gather(-1, completion.unsqueeze(-1))
            samples.append(
                TokenSample(
                    prompt_ids=list(prompt),
                    completion_ids=completion.tolist(),
                    logprobs=logprobs.squeeze(-1).tolist(),
                    temperature=scale,
                    truncated=truncated,
                    allowed=allowed,
                    frequency_penalty=self.frequency_penalty,
                    repeat_stopped=repeats is not None and repeats.done_at[row] == length,
                )
            )
        return samples

    def _length(self, generated: list[int], stopped_at: list[int]) -> tuple[int, bool]:
        """Where a row's own completion ends: its first stop token (kept) or the step a stopping criterion
        (stop marker, repeat stop) ended it; everything after is the padding of a finished row in a batch. A
        row without any ran to max_new_tokens: truncated."""
        ends = [index + 1 for index, token in enumerate(generated) if token in self._stops][:1] + stopped_at
        return (min(ends), False) if ends else (len(generated), True)

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def _left_padded(caches: list[DynamicCache], width: int, config: PretrainedConfig) -> DynamicCache:
    """One batch cache from single-row caches, each left-padded with zeros to `width` positions, as the
    left-padded prompts are; the attention mask hides the padded slots (RoPE is already in the keys)."""
    batch = DynamicCache(config=config)
    for index in range(len(caches[0].layers)):
        keys, values = (
            torch.cat(
                [
                    functional.pad(getattr(c.layers[index], name), (0, 0, width - c.get_seq_length(), 0))
                    for c in caches
                ]
            )
            for name in ("keys", "values")
        )
        batch.update(keys, values, index)
    return batch


class _StopAtMarkers(StoppingCriteria):
    """Stop a row once its completion's text contains a ✿RESULT✿ / ✿RETURN✿ marker, and remember after how
    many generated tokens. (transformers' own `stop_strings` assumes a subword vocabulary; this works
    with any tokenizer.)"""

    _TAIL_TOKENS = 16  # a marker spans a few tokens; only the newest ones can complete one

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_width: int, rows: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.done_at: list[int | None] = [None] * rows

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_width
        start = max(self.prompt_width, input_ids.shape[1] - self._TAIL_TOKENS)
        for row in range(input_ids.shape[0]):
            if self.done_at[row] is None:
                text = self.tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
                if any(marker in text for marker in STOP_MARKERS):
                    self.done_at[row] = generated
        done = [at is not None for at in self.done_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
