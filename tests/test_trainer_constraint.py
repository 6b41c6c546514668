"""The `json` format is trained under the service's schema constraint: the trainer's sampler only emits
replies that are valid (prefixes of) `tool_calls_json_schema`, records the log-probs of the masked
distribution, and the update recomputes exactly those log-probs under the same mask. And it is trained on
the service's prompt: the experiment's sampler decodes from the messages the service sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import torch
from scripted_llm import ScriptedLLM, Text
from shared_data import SQUAD, require
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from app.backends import make_policy, policy_serving
from app.memory import MemoryState
from app.memory.state import Item
from app.policy.tools import json_response_format, tool_calls_json_schema
from app.settings import Settings
from trainer.checkpoint import rng_state
from trainer.config import LoraConfig, ModelConfig, load_config
from trainer.grpo import TrainSample, shared_prompt_logprobs
from trainer.loop import Trainer
from trainer.manifest import serving_differences, trained_serving
from trainer.models import LoadedPolicy, load_policy
from trainer.pending_rollouts import PendingRollouts, Rollouts
from trainer.sampling.constraint import ConstraintError, JsonCallsConstraint
from trainer.sampling.mask import masked, unpack_allowed
from trainer.sampling.record import TokenSample, chat_prompt_ids, stop_token_ids
from trainer.sampling.transformers_policy import TransformersPolicy
from trainer.sampling.vllm_policy import VLLMSamplingPolicy
from trainer.tiny_model import CHAT_TEMPLATE, END_OF_TEXT, IM_END, IM_START, build_model

MAX_CALLS = 3
# Text the tiny byte-level BPE learns its merges from: calls of every schema branch, so that keys and
# enum values are a few tokens each and a random model finishes some replies within the budget.
_CALLS = [
    {"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "Paris is big"}},
    {"name": "new_memory_insert", "arguments": {"memory_type": "episodic_memory", "content": "We met"}},
    {"name": "memory_update", "arguments": {"memory_type": "core_memory", "new_content": "User: Ann"}},
    {
        "name": "memory_update",
        "arguments": {"memory_type": "semantic_memory", "new_content": "x", "memory_id": "s1"},
    },
    {"name": "memory_delete", "arguments": {"memory_type": "core_memory"}},
    {"name": "memory_delete", "arguments": {"memory_type": "episodic_memory", "memory_id": "e2"}},
]


def _tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [json.dumps(_CALLS), json.dumps(_CALLS, indent=1), "Remember what the user said today."] * 20
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END, pad_token=END_OF_TEXT)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A tiny model's steps are all overhead: more threads only contend with the other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers model directory: a tiny random Qwen2 with a lossless (byte-level) tokenizer."""
    base = Path(tmp_path_factory.mktemp("tiny-bpe")) / "base"
    tokenizer = _tokenizer()
    model = build_model(
        len(tokenizer), 7, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


@pytest.fixture(scope="module")
def tiny_bpe(tiny_bpe_dir: Path) -> LoadedPolicy:
    loaded = load_policy(
        ModelConfig(source="hf", name="tiny-bpe", path=str(tiny_bpe_dir), device="cpu"),
        LoraConfig(r=4, alpha=8),
    )
    for name, parameter in loaded.model.named_parameters():
        if "lora_B" in name:  # a non-zero adapter: the update's model is not the bare base
            torch.nn.init.normal_(parameter, std=0.05)
    return loaded


@pytest.fixture(scope="module")
def constraint(tiny_bpe: LoadedPolicy) -> JsonCallsConstraint:
    stops = stop_token_ids(tiny_bpe.tokenizer, tiny_bpe.model.generation_config.eos_token_id)
    return JsonCallsConstraint(tiny_bpe.tokenizer, tiny_bpe.model.config.vocab_size, MAX_CALLS, stops)


def _constrained_sampler(
    tiny_bpe: LoadedPolicy, constraint: JsonCallsConstraint, max_new_tokens: int, repeat_stop_chars: int = 0
) -> TransformersPolicy:
    return TransformersPolicy(
        tiny_bpe.model,
        tiny_bpe.tokenizer,
        model_name="tiny-bpe",
        tool_format="json",
        counter=lambda text: len(text.split()),  # type: ignore[arg-type]
        prompt_budget_tokens=512,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        max_batch=16,
        constraint=constraint,
        repeat_stop_chars=repeat_stop_chars,
    )


@pytest.fixture(scope="module")
def sampled(tiny_bpe: LoadedPolicy, constraint: JsonCallsConstraint) -> list[TokenSample]:
    policy = _constrained_sampler(tiny_bpe, constraint, 400)
    prompt = tiny_bpe.tokenizer.encode("Remember what the user said")
    other = tiny_bpe.tokenizer.encode("today")
    torch.manual_seed(0)
    # Repeated prompts take the shared-prefill path, distinct ones the plain batch: both are constrained.
    return policy.sample_batch([prompt] * 12) + policy.sample_batch([prompt, other] * 6)


def test_rows_the_repeat_stop_ends_mid_json_are_padded_not_fed_to_their_matcher(
    tiny_bpe: LoadedPolicy, constraint: JsonCallsConstraint
) -> None:
    """In a batch, a row the repeat stop ended inside its JSON gets generate's padding while the others go
    on: the padding is not the row's token, so its matcher must not be fed it (it is outside the mask)."""
    policy = _constrained_sampler(tiny_bpe, constraint, 200, repeat_stop_chars=12)
    torch.manual_seed(0)
    samples = policy.sample_batch([tiny_bpe.tokenizer.encode("Remember what the user said")] * 12)
    stopped = [sample for sample in samples if sample.repeat_stopped]
    longest = max(len(sample.completion_ids) for sample in samples)
    assert any(len(sample.completion_ids) < longest for sample in stopped)  # padded while others ran on
    for sample in samples:
        assert sample.allowed is not None and not (sample.repeat_stopped and sample.truncated)
        assert torch.equal(sample.allowed, constraint.allowed(sample.completion_ids))


def test_unpack_allowed_reads_xgrammars_bit_layout() -> None:
    packed = torch.zeros((1, 4), dtype=torch.int32)
    for token in (0, 31, 32, 100):
        packed[0, token // 32] |= torch.tensor(1 << (token % 32)).to(torch.int32)  # bit 31 wraps to the sign
    allowed = unpack_allowed(packed, 110)
    assert allowed.shape == (1, 110)
    assert allowed[0].nonzero().flatten().tolist() == [0, 31, 32, 100]
    logits = masked(torch.zeros(1, 110), packed)
    assert torch.isfinite(logits).sum() == 4


def test_constrained_replies_parse_and_validate(
    sampled: list[TokenSample], constraint: JsonCallsConstraint, tiny_bpe: LoadedPolicy
) -> None:
    schema = tool_calls_json_schema(MAX_CALLS)
    finished = [sample for sample in sampled if not sample.truncated]
    assert len(finished) >= 8, f"only {len(finished)} of {len(sampled)} replies ended within the budget"
    for sample in sampled:
        assert sample.allowed is not None
        # The mask recorded while sampling is the mask replayed from the tokens alone.
        assert torch.equal(sample.allowed, constraint.allowed(sample.completion_ids))
    for sample in finished:
        assert sample.completion_ids[-1] == tiny_bpe.tokenizer.eos_token_id
        text = tiny_bpe.tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        jsonschema.validate(json.loads(text), schema)


def test_a_token_outside_the_schema_is_refused(
    constraint: JsonCallsConstraint, tiny_bpe: LoadedPolicy
) -> None:
    with pytest.raises(ConstraintError):
        constraint.allowed(tiny_bpe.tokenizer.encode('{"name"'))  # the reply must be a list


def test_the_constraint_is_the_servers_compact_json(
    constraint: JsonCallsConstraint, tiny_bpe: LoadedPolicy
) -> None:
    """The vLLM servers decode `json` with `disable_any_whitespace` (scripts/local_llm.py, the compose
    files, deploy/): whitespace between JSON tokens is outside their mask, so it is outside the trainer's."""
    calls, end = _CALLS[:MAX_CALLS], [tiny_bpe.tokenizer.eos_token_id]
    compact = tiny_bpe.tokenizer.encode(json.dumps(calls, separators=(",", ":"))) + end
    assert constraint.allowed(compact).shape[0] == len(compact)
    for spaced in (json.dumps(calls), json.dumps(calls, indent=1)):
        with pytest.raises(ConstraintError):
            constraint.allowed(tiny_bpe.tokenizer.encode(spaced) + end)


def test_kept_rollouts_leave_the_masks_out_and_replay_them(
    sampled: list[TokenSample], constraint: JsonCallsConstraint, tmp_path: Path
) -> None:
    """An iteration's rollouts kept on disk (trainer/pending_rollouts.py) without their masks: loading
    replays them from the token ids, equal to what the sampler applied."""
    samples = [
        TrainSample(s.prompt_ids, s.completion_ids, s.logprobs, 0.5, s.temperature, allowed=s.allowed)
        for s in sampled
    ]
    pending = PendingRollouts(tmp_path)
    pending.save(4, Rollouts(samples, {"r1": 0.5}, 12.0, rng_state(), "digest"))
    path = tmp_path / "checkpoints" / "rollouts-000004.pt"
    masks = sum(s.allowed.numel() * 4 for s in samples if s.allowed is not None)
    assert path.stat().st_size < masks / 2, "the masks were written"
    assert pending.load(4, "other weights", constraint.allowed) is None
    with pytest.raises(ValueError, match="no constraint to replay"):
        pending.load(4, "digest", None)
    kept = pending.load(4, "digest", constraint.allowed)
    assert kept is not None and kept.rewards == {"r1": 0.5} and kept.rollout_s == 12.0
    for got, want in zip(kept.samples, samples, strict=True):
        assert got.allowed is not None and want.allowed is not None
        assert torch.equal(got.allowed, want.allowed)
        assert (got.completion_ids, got.old_logprobs, got.advantage) == (
            want.completion_ids,
            want.old_logprobs,
            want.advantage,
        )
    pending.clear(up_to=4)
    assert not path.exists()


def test_update_recomputes_the_samplers_masked_logprobs(
    sampled: list[TokenSample], tiny_bpe: LoadedPolicy
) -> None:
    group = [s for s in sampled[:12]]  # one shared prompt
    samples = [
        TrainSample(s.prompt_ids, s.completion_ids, s.logprobs, 0.0, s.temperature, allowed=s.allowed)
        for s in group
    ]
    with torch.no_grad():
        recomputed = shared_prompt_logprobs(tiny_bpe.model, samples, chunk_tokens=16)
        for sample in samples:
            sample.allowed = None
        unmasked = shared_prompt_logprobs(tiny_bpe.model, samples)
    forced = 0
    for s, mine, free in zip(group, recomputed, unmasked, strict=True):
        assert torch.allclose(mine, torch.tensor(s.logprobs), atol=1e-4)
        assert s.allowed is not None
        single = unpack_allowed(s.allowed, tiny_bpe.model.config.vocab_size).sum(-1) == 1
        # A token the schema forced has probability 1 under the mask: no gradient, whatever the model.
        assert torch.all(mine[single] == 0)
        forced += int(single.sum())
        # Without the mask the same tokens are less likely: the mask is what the served policy samples.
        assert torch.all(free <= mine + 1e-5)
    assert forced > 0


def test_vllm_rollouts_send_the_services_response_format(
    tiny_bpe: LoadedPolicy, constraint: JsonCallsConstraint
) -> None:
    """The GPU path samples on vLLM under the very `response_format` the service sends, and replays the
    mask for the update (vLLM returns the tokens and their log-probs, not the mask)."""
    policy = VLLMSamplingPolicy(
        "http://127.0.0.1:9/v1",
        "tiny-bpe",
        tiny_bpe.tokenizer,
        tool_format="json",
        counter=lambda text: len(text.split()),  # type: ignore[arg-type]
        prompt_budget_tokens=512,
        max_new_tokens=64,
        constraint=constraint,
    )
    request = policy.request([1, 2, 3], "tiny-bpe")
    assert request["extra_body"]["response_format"] == json_response_format(MAX_CALLS)
    with pytest.raises(ValueError, match="json format"):
        VLLMSamplingPolicy(
            "http://127.0.0.1:9/v1",
            "tiny-bpe",
            tiny_bpe.tokenizer,
            tool_format="alpha",
            counter=lambda text: len(text.split()),  # type: ignore[arg-type]
            prompt_budget_tokens=512,
            max_new_tokens=64,
            constraint=constraint,
        )


def _registered_serving() -> dict[str, str]:
    """The service settings `run.sh` exports for the experiment's serving-path evaluations."""
    script = Path(__file__).parents[1] / "docs/results/grpo-squad/run.sh"
    exports = [
        line.split()[1:] for line in script.read_text().splitlines() if line.startswith("export MEMALPHA_")
    ]
    return dict(pair.split("=", 1) for line in exports for pair in line)


async def test_the_experiment_samples_from_the_prompt_the_service_sends(
    tiny_bpe_dir: Path, tmp_path: Path
) -> None:
    """Train = serve for the prompt (grpo-squad pre-registration, revisions 3, 5 and 6): the experiment's
    trainer, with the tiny model in place of the 0.5B, decodes from exactly the chat template of the messages
    the service sends for the same memory and chunk under the serving settings `run.sh` exports (the stated
    response budget included), and the serving settings its adapters record (the prompt's digest and the
    frequency penalty of revision 6 and the repeat stop of revision 9 included) are the service's, so a setting changed on one side only fails
    here."""
    config = load_config(
        Path(__file__).parents[1] / "trainer/configs/cpu-squad-experiment.toml",
        {
            "model.path": str(tiny_bpe_dir),
            "model.name": "tiny-bpe",
            "data.data_dir": str(require(SQUAD).parents[1]),
            "run.out_dir": str(tmp_path / "run"),
        },
    )
    trainer = Trainer(config, Settings(_env_file=None), progress=False)  # type: ignore[call-arg]
    first, chunk = trainer.split.held_out[0].chunks[:2]
    when = datetime(2024, 3, 2, tzinfo=UTC)
    state = MemoryState(core=first[:80], semantic=[Item("s1", first, when, when, source_seq=0)], next_item=1)
    registered = _registered_serving()
    with ScriptedLLM(Text("[]")) as llm:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            policy_backend="openai",
            policy_url=llm.url,
            policy_model=llm.model,
            policy_tool_format=registered["MEMALPHA_POLICY_TOOL_FORMAT"],
            policy_max_tokens=int(registered["MEMALPHA_POLICY_MAX_TOKENS"]),
            policy_max_calls=int(registered["MEMALPHA_POLICY_MAX_CALLS"]),
            policy_frequency_penalty=float(registered["MEMALPHA_POLICY_FREQUENCY_PENALTY"]),
            policy_repeat_stop_chars=int(registered["MEMALPHA_POLICY_REPEAT_STOP_CHARS"]),
        )
        service = make_policy(settings)
        await service.propose(state, chunk)
        await service.aclose()
        sent = llm.requests[-1].body["messages"]
        assert llm.requests[-1].body["frequency_penalty"] == config.rollout.frequency_penalty > 0
    sampler = trainer._sampler(0.0, [])
    assert isinstance(sampler, TransformersPolicy)
    assert sampler.frequency_penalty == config.rollout.frequency_penalty
    assert sampler.repeat_window == config.rollout.repeat_stop_chars > 0
    reply = await sampler.propose(state, chunk)
    await trainer.aclose()
    assert reply.extras["prompt_ids"] == chat_prompt_ids(trainer.loaded.tokenizer, sent, "json")
    served = policy_serving(settings, trainer.counter).model_dump()
    trained = trained_serving(config, trainer.counter.name).model_dump()
    assert serving_differences({"serving": trained}, served) == []
