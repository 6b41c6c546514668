"""The GRPO update's shared-prompt pass is exact: the samples of one prompt group (the G rollouts of a
step) run their prompt once, and give the same log-probs and the same LoRA gradients as running every
sample on its own, full sequence by full sequence."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from trainer.config import GRPOConfig, LoraConfig, ModelConfig
from trainer.grpo import (
    TrainSample,
    mini_batches,
    optimizer_step,
    prompt_groups,
    shared_prompt_logprobs,
    token_losses,
)
from trainer.models import LoadedPolicy, load_policy
from trainer.tiny_model import create_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    base = Path(tmp_path_factory.mktemp("tiny")) / "base"
    create_tiny_model(base, ["Paris is the capital of France. Berlin is the capital of Germany."], seed=3)
    loaded = load_policy(ModelConfig(source="tiny", name="tiny-qwen2", path=str(base), device="cpu"),
                         LoraConfig(r=4, alpha=8), tiny_dir=base)
    torch.manual_seed(0)
    for name, parameter in loaded.model.named_parameters():
        if "lora_B" in name:  # a fresh adapter is zero: give it weights so its gradients are not trivial
            torch.nn.init.normal_(parameter, std=0.05)
    return loaded


def _samples(vocab: int, *, prompts: int = 2, group: int = 3) -> list[TrainSample]:
    rng = random.Random(5)
    samples = []
    for _ in range(prompts):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(20, 30))]
        for index in range(group):
            length = [1, 4, 9][index % 3]  # a one-token completion too: it needs no completion pass
            completion = [rng.randrange(vocab) for _ in range(length)]
            samples.append(TrainSample(prompt, completion, old_logprobs=[-2.0] * length,
                                       advantage=rng.uniform(-1.5, 1.5), temperature=0.7))
    return samples


def _one_by_one(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    count = len(sample.completion_ids)
    logits = model(input_ids=ids).logits[0, -count - 1:-1].float() / sample.temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, -count:].unsqueeze(-1)).squeeze(-1)


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_groups_are_formed_by_prompt_and_temperature() -> None:
    a, b = [1, 2, 3], [1, 2, 4]
    samples = [TrainSample(a, [5], [0.0], 1.0, 1.0), TrainSample(b, [5], [0.0], 1.0, 1.0),
               TrainSample(a, [6], [0.0], 1.0, 1.0), TrainSample(a, [7], [0.0], 1.0, 0.5)]
    groups = prompt_groups(samples)
    assert [[samples.index(s) for s in group] for group in groups] == [[0, 2], [1], [3]]
    batches = list(mini_batches(samples, 2, random.Random(0)))
    assert sorted(id(s) for batch in batches for s in batch) == sorted(id(s) for s in samples)
    assert [len(batch) for batch in batches] == [2, 2]


def test_shared_prompt_log_probs_equal_separate_passes(tiny: LoadedPolicy) -> None:
    model = tiny.model
    samples = _samples(model.config.vocab_size)
    with torch.no_grad():
        for group in prompt_groups(samples):
            assert len(group) == 3
            for sample, shared in zip(group, shared_prompt_logprobs(model, group), strict=True):
                assert shared.shape == (len(sample.completion_ids),)
                assert torch.allclose(shared, _one_by_one(model, sample), atol=1e-5)


def test_update_gradients_equal_separate_passes(tiny: LoadedPolicy) -> None:
    model = tiny.model
    samples = _samples(model.config.vocab_size)
    config = GRPOConfig(kl_coef=0.0, max_grad_norm=1e9)
    tokens = sum(len(s.completion_ids) for s in samples)

    model.zero_grad(set_to_none=True)
    for sample in samples:  # the reference: each sample's full sequence on its own
        losses, _ = token_losses(_one_by_one(model, sample), sample, config)
        (losses.sum() / tokens).backward()
    expected = _gradients(model)

    # optimizer_step with a zero learning rate leaves the weights alone and its gradients in place
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    stats = optimizer_step(model, optimizer, scheduler, samples, config)
    got = _gradients(model)
    assert stats.tokens == tokens
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-7), name


def test_shared_prefill_sampling_equals_plain_batches(tiny: LoadedPolicy) -> None:
    from app.tokens import make_token_counter
    from trainer.sampling.transformers_policy import TransformersPolicy

    policy = TransformersPolicy(tiny.model, tiny.tokenizer, model_name="tiny", tool_format="json",
                                counter=make_token_counter(None), prompt_budget_tokens=4096, max_new_tokens=8,
                                temperature=0.0)
    vocab = tiny.model.config.vocab_size
    rng = random.Random(9)
    p, q = ([rng.randrange(3, vocab) for _ in range(n)] for n in (25, 18))
    shared = policy.sample_batch([p, q, p, p])  # p is repeated: prefilled once, decoded from cache copies
    plain = policy.sample_batch([p, q]) + policy.sample_batch([p])  # distinct prompts: one padded batch each
    for got, want in zip(shared, [plain[0], plain[1], plain[2], plain[2]], strict=True):
        assert got.prompt_ids == want.prompt_ids and got.completion_ids == want.completion_ids
        assert len(got.completion_ids) > 0
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-4)
