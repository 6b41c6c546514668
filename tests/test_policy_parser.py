"""The reply parser on realistic outputs of every tool format, and on garbage."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from openai.types.chat import ChatCompletionMessageToolCall

from app.memory import Applier, MemoryLimits, MemoryState, Operation, WordTokenCounter
from app.policy.parser import ToolCall, calls_as_json, parse_reply

INSERT_SEMANTIC = ToolCall(
    "new_memory_insert", {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}
)


def _apply(calls: list[ToolCall], state: MemoryState | None = None) -> list[str]:
    state = state if state is not None else MemoryState()
    applier = Applier(MemoryLimits(), WordTokenCounter())
    ops = [Operation.from_call(call.name, call.arguments) for call in calls]
    return [result.status for result in applier.apply_all(state, ops, now=datetime.now(UTC))]


# --- alpha (✿ markers, what Memalpha-4B emits) ---


def test_alpha_several_calls_in_order_with_prose_and_a_fence() -> None:
    reply = (
        "The chunk says Caroline went to a support group, so I will store it.\n\n"
        "✿FUNCTION✿: new_memory_insert\n"
        '✿ARGS✿: {"memory_type": "episodic_memory", "content": "On 7 May 2023 Caroline went to an LGBTQ support group."}\n'
        "✿FUNCTION✿: memory_update\n"
        '✿ARGS✿: ```json\n{"memory_type": "core_memory", "new_content": "Caroline: transgender woman."}\n```\n'
        "✿FUNCTION✿: memory_delete\n"
        '✿ARGS✿: {"memory_type": "semantic_memory", "memory_id": "k3x9"}\n'
    )
    result = parse_reply(reply)
    assert result.errors == []
    assert [call.name for call in result.calls] == ["new_memory_insert", "memory_update", "memory_delete"]
    assert result.calls[1].arguments == {
        "memory_type": "core_memory",
        "new_content": "Caroline: transgender woman.",
    }
    assert result.calls[2].arguments["memory_id"] == "k3x9"


def test_alpha_cut_at_hallucinated_result() -> None:
    reply = (
        "✿FUNCTION✿: new_memory_insert\n"
        '✿ARGS✿: {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}\n'
        "✿RESULT✿: Inserted with id 1a2b.\n"
        "✿FUNCTION✿: memory_delete\n"
        '✿ARGS✿: {"memory_type": "semantic_memory", "memory_id": "1a2b"}\n'
        "✿RETURN✿: Done."
    )
    result = parse_reply(reply)
    assert result.calls == [INSERT_SEMANTIC]
    assert result.errors == []


def test_alpha_return_marker_also_ends_the_calls() -> None:
    reply = (
        '✿FUNCTION✿: new_memory_insert\n✿ARGS✿: {"memory_type": "semantic", "content": "Caroline is a counselor."}\n'
        '✿RETURN✿: ✿FUNCTION✿: memory_delete\n✿ARGS✿: {"memory_type": "core_memory"}'
    )
    assert parse_reply(reply).calls == [INSERT_SEMANTIC]


def test_alpha_missing_suffix_broken_json_and_missing_args() -> None:
    reply = (
        "✿FUNCTION✿: new_memory_insert\n"
        "✿ARGS✿: {'memory_type': 'semantic', 'content': 'Melanie paints sunsets.',}\n"
        "✿FUNCTION✿: memory_update\n"
        "✿FUNCTION✿: new_memory_insert\n"
        '✿ARGS✿: {"memory_type": "Episodic", "content": "On 8 May 2023, Melanie swam with her kids.'
    )
    result = parse_reply(reply)
    assert result.calls == [
        ToolCall(
            "new_memory_insert", {"memory_type": "semantic_memory", "content": "Melanie paints sunsets."}
        ),
        ToolCall(
            "new_memory_insert",
            {"memory_type": "episodic_memory", "content": "On 8 May 2023, Melanie swam with her kids."},
        ),
    ]
    assert len(result.errors) == 1 and "memory_update" in result.errors[0] and "✿ARGS✿" in result.errors[0]


def test_alpha_call_on_one_line_and_trailing_prose_after_args() -> None:
    reply = (
        '✿FUNCTION✿: new_memory_insert ✿ARGS✿: {"memory_type": "semantic_memory", "content": '
        '"Caroline is a counselor."}\nThat is all I need to store.'
    )
    result = parse_reply(reply)
    assert result.calls == [INSERT_SEMANTIC] and result.errors == []


def test_fifty_calls_in_one_reply_keep_their_order() -> None:
    lines = []
    for number in range(50):
        lines.append("✿FUNCTION✿: new_memory_insert")
        lines.append(
            "✿ARGS✿: " + json.dumps({"memory_type": "semantic_memory", "content": f"Fact number {number}."})
        )
    alpha = parse_reply("\n".join(lines))
    as_json = parse_reply(json.dumps([{"name": c.name, "arguments": c.arguments} for c in alpha.calls]))
    assert alpha.errors == [] and as_json.errors == []
    assert [call.arguments["content"] for call in alpha.calls] == [f"Fact number {n}." for n in range(50)]
    assert as_json.calls == alpha.calls
    assert _apply(alpha.calls) == ["ok"] * 50


# --- hermes ---


def test_hermes_blocks_with_prose_and_a_missing_closing_tag() -> None:
    reply = (
        "Sure, here are the memory operations.\n"
        "<tool_call>\n"
        '{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}\n'
        "</tool_call>\n"
        "<tool_call>\n"
        '{"name": "memory_update", "arguments": {"memory_type": "core", "new_content": "Caroline and Melanie are friends."}}'
    )
    result = parse_reply(reply)
    assert result.errors == []
    assert result.calls == [
        INSERT_SEMANTIC,
        ToolCall(
            "memory_update",
            {"memory_type": "core_memory", "new_content": "Caroline and Melanie are friends."},
        ),
    ]


def test_hermes_double_braces_parameters_key_and_an_empty_block() -> None:
    # Qwen2.5-Coder-1.5B's shipped template teaches `{{...}}`; some models say "parameters".
    reply = (
        '<tool_call>\n{{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", '
        '"content": "Caroline is a counselor."}}}\n</tool_call>\n'
        '<tool_call>{"name": "memory_delete", "parameters": {"memory_type": "episodic_memory", "memory_id": "0a1b"}}'
        "</tool_call>\n<tool_call>\n</tool_call>"
    )
    result = parse_reply(reply)
    assert result.calls == [
        INSERT_SEMANTIC,
        ToolCall("memory_delete", {"memory_type": "episodic_memory", "memory_id": "0a1b"}),
    ]
    assert len(result.errors) == 1 and "<tool_call> 3" in result.errors[0]


# --- native tool_calls ---


def test_native_sdk_objects_and_dicts() -> None:
    sdk_call = ChatCompletionMessageToolCall.model_validate(
        {
            "id": "call_1",
            "type": "function",
            "function": {
                "name": "new_memory_insert",
                "arguments": '{"memory_type": "semantic_memory", "content": "Caroline is a counselor."}',
            },
        }
    )
    dict_call = {
        "id": "call_2",
        "type": "function",
        "function": {
            "name": "memory_update",
            "arguments": {"memory_type": "semantic", "memory_id": "k3x9", "new_content": "x"},
        },
    }
    flat_call = {
        "name": "memory_delete",
        "arguments": '{"memory_type": "episodic_memory", "memory_id": "0a1b"',
    }
    result = parse_reply(None, [sdk_call, dict_call, flat_call])
    assert result.errors == []
    assert result.calls == [
        INSERT_SEMANTIC,
        ToolCall(
            "memory_update", {"memory_type": "semantic_memory", "memory_id": "k3x9", "new_content": "x"}
        ),
        ToolCall("memory_delete", {"memory_type": "episodic_memory", "memory_id": "0a1b"}),
    ]


def test_native_calls_take_precedence_over_text_and_bad_arguments_are_errors() -> None:
    native = [
        {"function": {"name": "new_memory_insert", "arguments": '["not", "an", "object"]'}},
        {"function": {"name": "", "arguments": "{}"}},
    ]
    result = parse_reply('<tool_call>{"name": "memory_delete", "arguments": {}}</tool_call>', native)
    assert result.calls == []
    assert len(result.errors) == 2
    assert "not a JSON object" in result.errors[0] and "without a tool name" in result.errors[1]


def test_text_is_parsed_when_the_server_left_native_calls_empty() -> None:
    # vLLM's hermes parser leaves content as text when it cannot parse a call itself.
    result = parse_reply(
        '<tool_call>\n{"name": "new_memory_insert", "arguments": '
        '{"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}',
        [],
    )
    assert result.calls == [INSERT_SEMANTIC]


# --- json format ---


@pytest.mark.parametrize(
    "reply",
    [
        '[{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}]',
        '{"calls": [{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}]}',
        (
            '{"tool_calls": [{"name": "new_memory_insert", "arguments": "{\\"memory_type\\": \\"semantic_memory\\", '
            '\\"content\\": \\"Caroline is a counselor.\\"}"}]}'
        ),
        '{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}',
        (
            'Here is the JSON:\n```json\n[\n  {"name": "new_memory_insert", "arguments": {"memory_type": "semantic", '
            '"content": "Caroline is a counselor."}}\n]\n```\nLet me know if you need more.'
        ),
        (
            '<think>\nThe user wants facts.\n</think>\n[{"name": "new_memory_insert", "arguments": '
            '{"memory_type": "semantic_memory", "content": "Caroline is a counselor."}}]'
        ),
        (
            "I stored it: {'name': 'new_memory_insert', 'arguments': {'memory_type': 'semantic_memory', "
            "'content': 'Caroline is a counselor.'}}"
        ),
    ],
    ids=[
        "list",
        "calls-key",
        "tool_calls-key-string-args",
        "single-object",
        "fenced-with-prose",
        "think-block",
        "python-quotes-after-prose",
    ],
)
def test_json_format_shapes(reply: str) -> None:
    result = parse_reply(reply)
    assert result.calls == [INSERT_SEMANTIC]
    assert result.errors == []


def test_json_truncated_by_max_tokens_keeps_the_complete_calls() -> None:
    reply = (
        '[{"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": '
        '"Caroline is a counselor."}}, {"name": "new_memory_insert", "arguments": {"memory_type": "episodic_mem'
    )
    result = parse_reply(reply)
    assert result.calls[0] == INSERT_SEMANTIC
    # The cut call survives as a call, and apply rejects it: it is counted as a failed call.
    assert len(result.calls) == 2
    assert _apply(result.calls) == ["ok", "error"]


def test_unknown_tool_is_kept_and_apply_reports_it() -> None:
    reply = json.dumps(
        [
            {"name": "search_memory", "arguments": {"query": "Caroline"}},
            {
                "name": "new_memory_insert",
                "arguments": {"memory_type": "semantic_memory", "content": "Caroline is a counselor."},
            },
        ]
    )
    result = parse_reply(reply)
    assert [call.name for call in result.calls] == ["search_memory", "new_memory_insert"]
    assert result.errors == []
    assert _apply(result.calls) == ["error", "ok"]


def test_calls_as_json_round_trips() -> None:
    calls = [
        INSERT_SEMANTIC,
        ToolCall("memory_update", {"memory_type": "core_memory", "new_content": "Ünïcode ✓"}),
    ]
    assert parse_reply(calls_as_json(calls)).calls == calls


# --- nothing usable ---


@pytest.mark.parametrize("reply", [None, "", "   \n\t "])
def test_empty_reply_is_a_recorded_error(reply: str | None) -> None:
    result = parse_reply(reply)
    assert result.calls == [] and result.errors == ["empty reply"]


def test_prose_without_calls_is_a_recorded_error() -> None:
    result = parse_reply("I think nothing in this chunk needs to be remembered.")
    assert result.calls == []
    assert len(result.errors) == 1 and result.errors[0].startswith("no tool call found")


def test_json_that_is_not_a_call_is_an_error() -> None:
    result = parse_reply('[{"memory_type": "semantic_memory", "content": "no name"}, 42]')
    assert result.calls == []
    assert len(result.errors) == 2


@pytest.mark.parametrize("seed", range(20))
def test_binary_garbage_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))
    pieces = ["", "✿FUNCTION✿", "✿ARGS✿", "<tool_call>", "{", "[", '"name"', "```", "✿RESULT✿"]
    text = raw.decode("utf-8", errors="replace") + rng.choice(pieces) + raw.decode("latin-1")
    result = parse_reply(text, None)
    assert all(isinstance(call, ToolCall) for call in result.calls)
    assert result.calls or result.errors


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "{" * 50_000 + '"a"',
        '{"name": "x", "arguments": ' + "[" * 100_000,
        "✿FUNCTION✿" * 10_000,
        "<tool_call>" * 10_000,
        "\x00" * 1000,
    ],
)
def test_pathological_inputs_never_raise(text: str) -> None:
    result = parse_reply(text)
    assert result.calls or result.errors
