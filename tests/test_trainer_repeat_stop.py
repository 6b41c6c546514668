"""The repeat stop on the trainer's side (rollout.repeat_stop_chars = MEMALPHA_POLICY_REPEAT_STOP_CHARS): the
transformers sampler stops a row at the first token after which its text repeats itself, which is where the
vLLM rollouts cut a reply after it returns (`repeat_stop_length`), the tokens before are the unstopped
sampler's, with the same log-probs, and the text applied is the one the service applies to the longer reply."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_lora import tiny_lora_policy, tiny_sampler

from app.policy.repeats import applied_text
from trainer.grpo import TrainSample, shared_prompt_logprobs
from trainer.models import LoadedPolicy
from trainer.sampling.record import TokenSample
from trainer.sampling.repeat_stop import repeat_stop_length

WINDOW = 12  # characters: the tiny model's greedy replies loop within a few dozen tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    return tiny_lora_policy(tmp_path_factory)


def _sample(
    tiny: LoadedPolicy, window: int, temperature: float, prompts: list[list[int]]
) -> list[TokenSample]:
    policy = tiny_sampler(tiny, max_new_tokens=48, temperature=temperature, repeat_stop_chars=window)
    torch.manual_seed(5)
    return policy.sample_batch(prompts)


def _prompts(tiny: LoadedPolicy, count: int) -> list[list[int]]:
    rng = random.Random(6)
    return [[rng.randrange(3, tiny.model.config.vocab_size) for _ in range(14)] for _ in range(count)]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_sampler_stops_where_the_post_hoc_cut_does_and_keeps_the_tokens_before(
    tiny: LoadedPolicy, temperature: float
) -> None:
    prompts = _prompts(tiny, 6)
    plain = _sample(tiny, 0, temperature, prompts)
    stopped = _sample(tiny, WINDOW, temperature, prompts)
    tokenizer = tiny.tokenizer
    cut = 0
    for full, short in zip(plain, stopped, strict=True):
        length = repeat_stop_length(tokenizer, full.completion_ids, WINDOW)
        if length is None:
            assert short.completion_ids == full.completion_ids and not short.repeat_stopped
            continue
        cut += 1
        # the same seed and the same tokens before the stop: a stop changes no earlier token's distribution
        assert short.completion_ids == full.completion_ids[:length]
        assert torch.allclose(torch.tensor(short.logprobs), torch.tensor(full.logprobs[:length]), atol=1e-5)
        assert short.repeat_stopped and not short.truncated  # an ended action, never masked as truncated
        # the reward's text: the service cuts the longer reply it received at the same place
        text, longer = (tokenizer.decode(s.completion_ids, skip_special_tokens=True) for s in (short, full))
        assert applied_text(text, WINDOW) == applied_text(longer, WINDOW)
        assert applied_text(text, WINDOW)[1] is not None
    assert cut >= 2  # the stop is exercised


def test_the_update_recomputes_the_stopped_samples_logprobs(tiny: LoadedPolicy) -> None:
    # one prompt, several samples: the update's group shares its prompt
    stopped = [s for s in _sample(tiny, WINDOW, 1.0, _prompts(tiny, 1) * 6) if s.repeat_stopped]
    assert stopped
    samples = [TrainSample(s.prompt_ids, s.completion_ids, s.logprobs, 1.0, s.temperature) for s in stopped]
    with torch.no_grad():
        recomputed = shared_prompt_logprobs(tiny.model, samples)
    for sample, mine in zip(stopped, recomputed, strict=True):
        assert torch.allclose(mine, torch.tensor(sample.logprobs), atol=1e-4)


def test_a_window_of_zero_never_stops(tiny: LoadedPolicy) -> None:
    prompt = _prompts(tiny, 1)[0]
    (sample,) = _sample(tiny, 0, 0.0, [prompt])
    assert repeat_stop_length(tiny.tokenizer, sample.completion_ids, 0) is None
    assert not sample.repeat_stopped
