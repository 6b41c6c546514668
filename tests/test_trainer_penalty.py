"""The frequency penalty (MEMALPHA_POLICY_FREQUENCY_PENALTY = rollout.frequency_penalty) is one transform on
both sides: the service asks the server for OpenAI's `frequency_penalty` (vLLM: each logit lowered by f ×
the times its token already occurs in the completion, before the temperature), the trainer's sampler
applies exactly that inside `generate`, records the log-probs of the penalised distribution, and the update
recomputes the same log-probs by replaying the penalty from the tokens."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from scripted_llm import ScriptedLLM, Text
from tiny_lora import tiny_lora_policy, tiny_sampler

from app.backends import make_policy
from app.memory import MemoryState
from app.settings import Settings
from trainer.grpo import TrainSample, shared_prompt_logprobs
from trainer.models import LoadedPolicy
from trainer.sampling.penalty import CompletionPenalty, penalised
from trainer.sampling.record import TokenSample
from trainer.sampling.transformers_policy import TransformersPolicy

F = 0.25


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    return tiny_lora_policy(tmp_path_factory)


def _policy(
    tiny: LoadedPolicy, penalty: float, temperature: float, max_new_tokens: int
) -> TransformersPolicy:
    return tiny_sampler(
        tiny, max_new_tokens=max_new_tokens, temperature=temperature, frequency_penalty=penalty
    )


def test_a_repeated_token_is_lowered_by_f_per_earlier_occurrence() -> None:
    logits = torch.randn(5, 10)
    completion = torch.tensor([5, 7, 5, 5, 2])
    out = penalised(logits, completion, F)
    shift = out - logits
    # step 3 follows 5, 7, 5: token 5 twice, token 7 once; step 4 follows three 5s; nothing else moves
    assert shift[3, 5] == pytest.approx(-2 * F) and shift[3, 7] == pytest.approx(-F)
    assert shift[4, 5] == pytest.approx(-3 * F) and shift[4, 7] == pytest.approx(-F)
    assert torch.all(shift[0] == 0)  # the first step: no completion token yet
    for step in range(5):
        counts = Counter(completion[:step].tolist())
        expected = torch.tensor([-F * counts[token] for token in range(10)])
        assert torch.allclose(shift[step], expected)
    # a slice of steps (the update's chunked projection) is the same slice of the whole
    assert torch.equal(penalised(logits[2:4], completion, F, start=2), out[2:4])
    assert penalised(logits, completion, 0.0) is logits


def test_the_samplers_processor_equals_the_replay_step_by_step() -> None:
    """In `generate` the rows are left-padded prompts of one width followed by the generated tokens."""
    rng = random.Random(4)
    width, steps, vocab = 6, 9, 12
    rows = [[rng.randrange(vocab) for _ in range(width + steps)] for _ in range(3)]
    input_ids = torch.tensor(rows)
    scores = torch.randn(3, steps, vocab)
    processor = CompletionPenalty(F, width)
    for row in range(3):
        completion = input_ids[row, width:]
        replayed = penalised(scores[row], completion, F)
        for step in range(steps):
            live = processor(input_ids[:, : width + step], scores[:, step].clone())  # type: ignore[arg-type]
            assert torch.allclose(live[row], replayed[step], atol=1e-6)


def _explicit_logprobs(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    """log softmax((z − f·n) / T) of each completion token, the penalty counted in plain Python."""
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    count = len(sample.completion_ids)
    logits = model(input_ids=ids).logits[0, -count - 1 : -1].float()
    for step in range(count):
        for token, times in Counter(sample.completion_ids[:step]).items():
            logits[step, token] -= sample.frequency_penalty * times
    logprobs = torch.log_softmax(logits / sample.temperature, dim=-1)
    return logprobs.gather(-1, ids[0, -count:].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_update_recomputes_the_samplers_penalised_logprobs(
    tiny: LoadedPolicy, temperature: float
) -> None:
    vocab = tiny.model.config.vocab_size
    rng = random.Random(9)
    prompt = [rng.randrange(3, vocab) for _ in range(20)]
    torch.manual_seed(1)
    sampled = _policy(tiny, F, temperature, 24).sample_batch([prompt] * 4)
    repeats = 0
    for s in sampled:
        assert s.frequency_penalty == F
        repeats += len(s.completion_ids) - len(set(s.completion_ids))
    assert repeats > 0  # some completion repeats a token: the penalty is exercised
    samples = [
        TrainSample(
            s.prompt_ids,
            s.completion_ids,
            s.logprobs,
            0.0,
            s.temperature,
            frequency_penalty=s.frequency_penalty,
        )
        for s in sampled
    ]
    with torch.no_grad():
        recomputed = shared_prompt_logprobs(tiny.model, samples, chunk_tokens=5)  # chunks: offsets matter
        explicit = [_explicit_logprobs(tiny.model, sample) for sample in samples]
        for sample in samples:
            sample.frequency_penalty = 0.0
        unpenalised = shared_prompt_logprobs(tiny.model, samples)
    differs = 0
    for s, mine, plain, free in zip(sampled, recomputed, explicit, unpenalised, strict=True):
        assert torch.allclose(mine, torch.tensor(s.logprobs), atol=1e-4)
        assert torch.allclose(mine, plain, atol=1e-4)
        differs += int((free - mine).abs().max() > 1e-3)
    assert differs > 0  # without the penalty the update would compute another distribution's log-probs


def test_greedy_decoding_with_the_penalty_repeats_less(tiny: LoadedPolicy) -> None:
    vocab = tiny.model.config.vocab_size
    rng = random.Random(2)
    prompts = [[rng.randrange(3, vocab) for _ in range(16)] for _ in range(4)]
    plain = _policy(tiny, 0.0, 0.0, 32).sample_batch(prompts)
    damped = _policy(tiny, 2.0, 0.0, 32).sample_batch(prompts)

    def most_repeated(samples: list[TokenSample]) -> int:
        return sum(max(Counter(s.completion_ids).values()) for s in samples)

    assert most_repeated(damped) < most_repeated(plain)
    for a, b in zip(plain, damped, strict=True):  # the first token is never penalised
        assert a.completion_ids[0] == b.completion_ids[0]


async def test_the_service_sends_the_penalty_only_when_set() -> None:
    """Default 0: the request is today's (no `frequency_penalty` key), so a served Memalpha-4B decodes as
    before; a value is sent as OpenAI's `frequency_penalty`, which vLLM applies as the trainer does."""
    with ScriptedLLM(Text("[]")) as llm:
        for penalty in (0.0, 0.2):
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                policy_backend="openai",
                policy_url=llm.url,
                policy_model=llm.model,
                policy_tool_format="json",
                policy_frequency_penalty=penalty,
            )
            policy = make_policy(settings)
            await policy.propose(MemoryState(), "Alice adopted a beagle.")
            await policy.aclose()
            body = llm.requests[-1].body
            if penalty:
                assert body["frequency_penalty"] == penalty
            else:
                assert "frequency_penalty" not in body
    with pytest.raises(ValueError):
        Settings(_env_file=None, policy_frequency_penalty=2.5)  # type: ignore[call-arg]
