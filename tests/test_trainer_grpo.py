"""The GRPO update's shared-prompt pass is exact: the samples of one prompt group (the G rollouts of a
step) run their prompt once, and give the same log-probs and the same LoRA gradients as running every
sample on its own, full sequence by full sequence."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from tiny_lora import tiny_lora_policy

from trainer.config import GRPOConfig, LoraConfig, ModelConfig, TrainConfig
from trainer.grpo import (
    TrainSample,
    completion_logprobs,
    grpo_update,
    mini_batches,
    optimizer_step,
    prompt_groups,
    recompute_old_logprobs,
    shared_prompt_logprobs,
    token_budget_batches,
    token_losses,
)
from trainer.models import LoadedPolicy, load_policy

# The cache goes in as `cache=` (transformers removes `past_key_values=` in 5.40): a deprecated call fails.
pytestmark = pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    return tiny_lora_policy(tmp_path_factory)


def _samples(vocab: int, *, prompts: int = 2, group: int = 3) -> list[TrainSample]:
    rng = random.Random(5)
    samples = []
    for _ in range(prompts):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(20, 30))]
        for index in range(group):
            length = [1, 4, 9][index % 3]  # a one-token completion too: it needs no completion pass
            completion = [rng.randrange(vocab) for _ in range(length)]
            samples.append(
                TrainSample(
                    prompt,
                    completion,
                    old_logprobs=[-2.0] * length,
                    advantage=rng.uniform(-1.5, 1.5),
                    temperature=0.7,
                )
            )
    return samples


def _one_by_one(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    count = len(sample.completion_ids)
    logits = model(input_ids=ids).logits[0, -count - 1 : -1].float() / sample.temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, -count:].unsqueeze(-1)).squeeze(-1)


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None
    }


def test_groups_are_formed_by_prompt_and_temperature() -> None:
    a, b = [1, 2, 3], [1, 2, 4]
    samples = [
        TrainSample(a, [5], [0.0], 1.0, 1.0),
        TrainSample(b, [5], [0.0], 1.0, 1.0),
        TrainSample(a, [6], [0.0], 1.0, 1.0),
        TrainSample(a, [7], [0.0], 1.0, 0.5),
    ]
    groups = prompt_groups(samples)
    assert [[samples.index(s) for s in group] for group in groups] == [[0, 2], [1], [3]]
    batches = list(mini_batches(samples, 2, random.Random(0)))
    assert sorted(id(s) for batch in batches for s in batch) == sorted(id(s) for s in samples)
    assert [len(batch) for batch in batches] == [2, 2]


def test_token_budget_packs_longest_first() -> None:
    # positions per completion: n - 1 (its last token predicts nothing)
    assert token_budget_batches([3, 9, 5, 2, 9], None) == [[1, 4, 2, 0, 3]]
    assert token_budget_batches([3, 9, 5, 2, 9], 16) == [[1, 4], [2, 0, 3]]  # 2 x 8; then 3 x 4 = 12
    assert token_budget_batches([3, 9, 5, 2, 9], 8) == [[1], [4], [2, 0], [3]]  # 2 x 4; a 3rd row: 12
    assert token_budget_batches([30, 2], 4) == [[0], [1]]  # longer than the budget: alone
    assert token_budget_batches([1, 1, 1], 1) == [[0, 1, 2]]  # one-token completions take no positions


@pytest.mark.parametrize(("chunk", "budget"), [(None, None), (2, None), (None, 8)])
def test_shared_prompt_log_probs_equal_separate_passes(
    tiny: LoadedPolicy, chunk: int | None, budget: int | None
) -> None:
    model = tiny.model
    samples = _samples(model.config.vocab_size)
    with torch.no_grad():
        for group in prompt_groups(samples):
            assert len(group) == 3
            shared_of = shared_prompt_logprobs(model, group, chunk_tokens=chunk, micro_batch_tokens=budget)
            for sample, shared in zip(group, shared_of, strict=True):
                assert shared.shape == (len(sample.completion_ids),)
                assert torch.allclose(shared, _one_by_one(model, sample), atol=1e-5)


# chunk 2: the chunked, recomputed vocabulary projection; budget 8: completions in micro-batches of at
# most 8 positions (the 9-token one alone, the others together); checkpointing: every decoder layer
# recomputed in backward, the shared prompt's keys and values included.
LAYOUTS = {
    "one batch": {},
    "chunked projection": {"logprob_chunk_tokens": 2},
    "micro-batches": {"micro_batch_tokens": 8},
    "checkpointing": {"gradient_checkpointing": True},
    "all": {"logprob_chunk_tokens": 2, "micro_batch_tokens": 8, "gradient_checkpointing": True},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_update_gradients_equal_separate_passes(tiny: LoadedPolicy, mode: str, layout: str) -> None:
    model = tiny.model
    samples = _samples(model.config.vocab_size)
    config = GRPOConfig(
        kl_coef=0.0,
        max_grad_norm=1e9,
        loss_agg_mode=mode,  # type: ignore[arg-type]
        loss_norm_tokens=16,
        **LAYOUTS[layout],  # type: ignore[arg-type]
    )
    tokens = sum(len(s.completion_ids) for s in samples)
    # What each sequence's token-loss sum is divided by, written out per mode.
    divisor = {
        "token-mean": lambda s: tokens,
        "seq-mean-token-mean": lambda s: len(samples) * len(s.completion_ids),
        "seq-mean-token-sum-norm": lambda s: len(samples) * 16,
    }[mode]

    model.zero_grad(set_to_none=True)
    for sample in samples:  # the reference: each sample's full sequence on its own
        losses, _ = token_losses(_one_by_one(model, sample), sample, config)
        (losses.sum() / divisor(sample)).backward()
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


@pytest.mark.parametrize("checkpointing", [False, True])
def test_checkpointing_replays_each_layer_in_backward(tiny: LoadedPolicy, checkpointing: bool) -> None:
    """The gradient test above passes with checkpointing off too: this one shows it is on. A checkpointed
    layer runs its MLP again in backward; micro-batches run the completions once each, the prompt once."""
    model = tiny.model
    samples = _samples(model.config.vocab_size)
    calls = [0]
    mlp = next(m for name, m in model.named_modules() if name.endswith("layers.0.mlp"))
    # a pre-hook: the replay stops early once the last saved tensor is back, before the MLP returns
    hook = mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    config = GRPOConfig(kl_coef=0.0, micro_batch_tokens=8, gradient_checkpointing=checkpointing)
    try:
        optimizer_step(model, optimizer, scheduler, samples, config)
    finally:
        hook.remove()
    passes = 2 * (1 + 2)  # per prompt group: the prompt, then 2 completion micro-batches (9 | 4 and 1)
    assert calls[0] == (2 * passes if checkpointing else passes)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # off again


def test_checkpointing_leaves_the_update_bit_identical(tiny: LoadedPolicy) -> None:
    """Not just close: a layer replayed in backward computes what it computed in forward, so the gradient
    is the same to the bit, and a run may turn checkpointing on when it resumes (`TrainConfig.fingerprint`
    hashes it as its default). Checked on the real 0.5B as well (grpo-squad's run log, 2 Dec)."""
    model = tiny.model
    samples = _samples(model.config.vocab_size)

    def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        config = GRPOConfig(kl_coef=0.0, gradient_checkpointing=checkpointing)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        optimizer_step(model, optimizer, scheduler, samples, config)
        return _gradients(model), torch.get_rng_state()

    (plain, plain_rng), (checkpointed, checkpointed_rng) = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], checkpointed[name]), name
    # the replay restores the random state it saved: the next rollouts draw the same samples
    assert torch.equal(plain_rng, checkpointed_rng)


def test_the_fingerprint_ignores_compute_only_settings() -> None:
    config = TrainConfig(model=ModelConfig(path="m", name="base"))
    fingerprint = config.fingerprint()

    def changed(**grpo: object) -> str:
        return config.model_copy(update={"grpo": config.grpo.model_copy(update=grpo)}).fingerprint()

    assert changed(gradient_checkpointing=True) == fingerprint
    # not bit-identical (another summation order) or not compute-only: a resumed run must not change them
    assert changed(logprob_chunk_tokens=64) != fingerprint
    assert changed(micro_batch_tokens=64) != fingerprint
    assert changed(learning_rate=1e-4) != fingerprint
    # when vLLM's replies arrive is not a training setting either: an evaluation may bound it
    rollout = config.rollout.model_copy(update={"max_in_flight": 8, "request_timeout_s": 7200.0})
    assert config.model_copy(update={"rollout": rollout}).fingerprint() == fingerprint


def test_the_committed_runs_keep_their_fingerprints() -> None:
    """T and S resume from committed checkpoints only while their config hashes as when they started: a
    setting added since must hash only when set (T's and S's values are in PREREGISTRATION.md)."""
    from trainer.config import load_config

    config = "trainer/configs/cpu-squad-experiment.toml"
    assert load_config(config).fingerprint() == "0a78fd00e8b06511"
    shuffled = {
        "grpo.shuffle_advantages": True,
        "run.out_dir": "docs/results/grpo-squad/runs/squad-grpo-shuffled",
    }
    assert load_config(config, shuffled).fingerprint() == "bb68533e5acd032d"
    budgeted = load_config(config, {"reward.answer_context": "budget"}).fingerprint()
    assert budgeted != "0a78fd00e8b06511"


def test_shared_prefill_sampling_equals_plain_batches(tiny: LoadedPolicy) -> None:
    from app.tokens import make_token_counter
    from trainer.sampling.transformers_policy import TransformersPolicy

    policy = TransformersPolicy(
        tiny.model,
        tiny.tokenizer,
        model_name="tiny",
        tool_format="json",
        counter=make_token_counter(None),
        prompt_budget_tokens=4096,
        max_new_tokens=8,
        temperature=0.0,
    )
    vocab = tiny.model.config.vocab_size
    rng = random.Random(9)
    p, q = ([rng.randrange(3, vocab) for _ in range(n)] for n in (25, 18))
    shared = policy.sample_batch([p, q, p, p])  # p is repeated: prefilled once, decoded from cache copies
    plain = policy.sample_batch([p, q]) + policy.sample_batch([p])  # distinct prompts: one padded batch each
    for got, want in zip(shared, [plain[0], plain[1], plain[2], plain[2]], strict=True):
        assert got.prompt_ids == want.prompt_ids and got.completion_ids == want.completion_ids
        assert len(got.completion_ids) > 0
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-4)
    stops = set(policy._stops)
    for sample in shared + plain:  # truncated exactly when the budget ran out before any stop token
        ended = any(token in stops for token in sample.completion_ids)
        assert sample.truncated == (not ended and len(sample.completion_ids) == 8)


def test_recompute_keeps_the_sampler_log_probs_and_measures_the_gap(tiny: LoadedPolicy) -> None:
    samples = _samples(tiny.model.config.vocab_size)
    with torch.no_grad():
        trainer = [completion_logprobs(tiny.model, s).tolist() for s in samples]
    for sample, ours in zip(samples, trainer, strict=True):  # a sampler 0.1 nats more confident everywhere
        sample.old_logprobs = [lp + 0.1 for lp in ours]
    gap = recompute_old_logprobs(tiny.model, samples)
    assert gap is not None and gap.tokens == sum(len(s.completion_ids) for s in samples)
    assert gap.abs_dlogp == pytest.approx(0.1, abs=1e-4) and gap.max_abs_dlogp == pytest.approx(0.1, abs=1e-4)
    assert gap.kl == pytest.approx(math.exp(-0.1) + 0.1 - 1, rel=1e-3)
    for sample, ours in zip(samples, trainer, strict=True):
        assert sample.old_logprobs == pytest.approx(ours, abs=1e-5)
        assert sample.sampler_logprobs == pytest.approx([lp + 0.1 for lp in ours])


def test_masked_truncated_completions_are_not_trained_on(tiny: LoadedPolicy) -> None:
    samples = _samples(tiny.model.config.vocab_size)
    for sample in samples:
        sample.truncated = True
    optimizer = torch.optim.SGD([p for p in tiny.model.parameters() if p.requires_grad], lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    masked = GRPOConfig(kl_coef=0.0, mask_truncated=True)
    assert grpo_update(tiny.model, optimizer, scheduler, samples, masked, random.Random(0)) == ([], None)
    stats, _ = grpo_update(
        tiny.model, optimizer, scheduler, samples, GRPOConfig(kl_coef=0.0), random.Random(0)
    )
    assert sum(s.tokens for s in stats) == sum(len(s.completion_ids) for s in samples)


def test_bfloat16_update_matches_float32(tiny: LoadedPolicy, tmp_path: Path) -> None:
    """`model.dtype = "bfloat16"`: the frozen base in bf16 (half the memory), the LoRA weights, their
    gradients and the optimizer state in fp32 (PEFT keeps adapters in fp32), log-softmax in fp32. The
    update's gradient is the fp32 one up to bf16 rounding, through the whole GPU layout."""
    base = Path(tiny.base_path)
    loaded = load_policy(
        ModelConfig(source="tiny", name="tiny-qwen2", path=str(base), device="cpu", dtype="bfloat16"),
        LoraConfig(r=4, alpha=8),
        tiny_dir=base,
    )
    loaded.model.load_state_dict(tiny.model.state_dict(), strict=False)  # the same (non-zero) adapter
    frozen = {p.dtype for p in loaded.model.parameters() if not p.requires_grad}
    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    assert frozen == {torch.bfloat16} and {p.dtype for p in trainable} == {torch.float32}
    samples = _samples(tiny.model.config.vocab_size)
    config = GRPOConfig(
        kl_coef=0.0,
        max_grad_norm=1e9,
        micro_batch_tokens=8,
        gradient_checkpointing=True,
        logprob_chunk_tokens=2,
    )
    grads = []
    for model in (tiny.model, loaded.model):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        optimizer_step(model, optimizer, scheduler, samples, config)
        grads.append(torch.cat([g.flatten() for g in _gradients(model).values()]))
    assert grads[1].dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99, float(cosine)
    assert torch.allclose(grads[1].norm(), grads[0].norm(), rtol=0.05)
    with torch.no_grad():
        for sample in samples:
            lp16, lp32 = completion_logprobs(loaded.model, sample), completion_logprobs(tiny.model, sample)
            assert lp16.dtype == torch.float32 and torch.allclose(lp16, lp32, atol=0.05)
