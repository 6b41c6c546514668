"""Tool schemas against SPEC §2, the memorize prompt of every tool format, and budget halving."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.memory import Item, MemoryState, WordTokenCounter, render_policy_memory
from app.policy.prompt import build_messages, prompt_sha256
from app.policy.tools import TOOL_NAMES, TOOL_SCHEMAS, openai_tools, tool_calls_json_schema

COUNTER = WordTokenCounter()
NOW = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK = "[1:56 pm on 8 May, 2023] Caroline: I went to a LGBTQ support group yesterday and it was so powerful."

# SPEC §2, written out independently of app/policy/tools.py.
SPEC_TOOLS: dict[str, dict[str, Any]] = {
    "new_memory_insert": {
        "params": {"memory_type", "content"},
        "required": {"memory_type", "content"},
        "types": ["semantic_memory", "episodic_memory"],
    },
    "memory_update": {
        "params": {"memory_type", "new_content", "memory_id"},
        "required": {"memory_type", "new_content"},
        "types": ["core_memory", "semantic_memory", "episodic_memory"],
    },
    "memory_delete": {
        "params": {"memory_type", "memory_id"},
        "required": {"memory_type"},
        "types": ["core_memory", "semantic_memory", "episodic_memory"],
    },
}


def _state(items_per_kind: int, words_per_item: int = 5) -> MemoryState:
    state = MemoryState(core="Caroline and Melanie are friends.")
    for kind_items, prefix, label in ((state.semantic, "s", "fact"), (state.episodic, "e", "event")):
        for number in range(items_per_kind):
            text = f"{label} {number} " + " ".join(f"word{n}" for n in range(words_per_item))
            kind_items.append(Item(id=f"{prefix}{number:03d}", content=text, created_at=NOW, updated_at=NOW))
    return state


# --- tool schemas ---


def test_tool_schemas_match_spec_exactly() -> None:
    assert TOOL_NAMES == tuple(SPEC_TOOLS)
    for schema in TOOL_SCHEMAS:
        spec = SPEC_TOOLS[schema["name"]]
        params = schema["parameters"]
        assert params["type"] == "object"
        assert set(params["properties"]) == spec["params"]
        assert set(params["required"]) == spec["required"]
        assert params["properties"]["memory_type"]["enum"] == spec["types"]
        assert all(prop["type"] == "string" for prop in params["properties"].values())
        assert schema["description"]


def test_openai_tools_format_and_independence() -> None:
    tools = openai_tools()
    assert [tool["type"] for tool in tools] == ["function"] * 3
    assert [tool["function"]["name"] for tool in tools] == list(TOOL_NAMES)
    tools[0]["function"]["parameters"]["required"].append("mutated")
    assert "mutated" not in TOOL_SCHEMAS[0]["parameters"]["required"]
    assert all("strict" not in tool["function"] for tool in tools)
    strict = openai_tools(strict=True)
    for tool, schema in zip(strict, TOOL_SCHEMAS, strict=True):
        assert tool["function"]["strict"] is True
        assert tool["function"]["parameters"] == {**schema["parameters"], "additionalProperties": False}


def _matches(variant: dict[str, Any], call: dict[str, Any]) -> bool:
    """A small validator for the schema subset the list-of-calls schema uses."""

    def fits(schema: dict[str, Any], value: Any) -> bool:
        if schema["type"] == "string":
            return isinstance(value, str) and ("enum" not in schema or value in schema["enum"])
        if schema["type"] == "object":
            if not isinstance(value, dict) or not set(schema["required"]) <= set(value):
                return False
            if schema.get("additionalProperties") is False and not set(value) <= set(schema["properties"]):
                return False
            return all(fits(schema["properties"][key], item) for key, item in value.items())
        raise AssertionError(f"unexpected schema type {schema['type']}")

    return fits(variant, call)


def test_list_of_calls_schema_structure() -> None:
    schema = tool_calls_json_schema(max_calls=7)
    assert schema["type"] == "array" and schema["maxItems"] == 7 and schema["minItems"] == 1
    variants = schema["items"]["anyOf"]
    names = set()
    for variant in variants:
        assert variant["additionalProperties"] is False
        assert variant["required"] == ["name", "arguments"]
        arguments = variant["properties"]["arguments"]
        assert arguments["additionalProperties"] is False
        (name,) = variant["properties"]["name"]["enum"]
        names.add(name)
        spec = SPEC_TOOLS[name]
        assert set(arguments["properties"]) <= spec["params"]
        assert spec["required"] <= set(arguments["required"])
        assert set(arguments["properties"]["memory_type"]["enum"]) <= set(spec["types"])
    assert names == set(TOOL_NAMES)


@pytest.mark.parametrize(
    ("call", "valid"),
    [
        (
            {"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory", "content": "x"}},
            True,
        ),
        ({"name": "new_memory_insert", "arguments": {"memory_type": "core_memory", "content": "x"}}, False),
        ({"name": "new_memory_insert", "arguments": {"memory_type": "semantic_memory"}}, False),
        ({"name": "memory_update", "arguments": {"memory_type": "core_memory", "new_content": "x"}}, True),
        (
            {"name": "memory_update", "arguments": {"memory_type": "semantic_memory", "new_content": "x"}},
            False,
        ),
        (
            {
                "name": "memory_update",
                "arguments": {"memory_type": "episodic_memory", "new_content": "x", "memory_id": "k3x9"},
            },
            True,
        ),
        ({"name": "memory_delete", "arguments": {"memory_type": "core_memory"}}, True),
        ({"name": "memory_delete", "arguments": {"memory_type": "semantic_memory"}}, False),
        (
            {"name": "memory_delete", "arguments": {"memory_type": "semantic_memory", "memory_id": "k3x9"}},
            True,
        ),
        ({"name": "memory_delete", "arguments": {"memory_type": "core_memory", "extra": 1}}, False),
        ({"name": "search_memory", "arguments": {"memory_type": "core_memory"}}, False),
    ],
)
def test_list_of_calls_schema_accepts_exactly_valid_calls(call: dict[str, Any], valid: bool) -> None:
    variants = tool_calls_json_schema(max_calls=32)["items"]["anyOf"]
    assert any(_matches(variant, call) for variant in variants) is valid


# --- prompt structure per format ---


@pytest.mark.parametrize("fmt", ["alpha", "hermes", "native", "json"])
def test_prompt_structure(fmt: str) -> None:
    state = _state(items_per_kind=7)
    build = build_messages(state, CHUNK, fmt, COUNTER, budget_tokens=6144, max_new_tokens=1638)  # type: ignore[arg-type]
    system, user = build.messages
    assert system["role"] == "system" and user["role"] == "user"
    assert build.visible_items == 5
    # role + instructions, then the memory, then the tool block
    text = system["content"]
    assert text.index("memory manager") < text.index("<core_memory>") < text.index("</episodic_memory>")
    assert "Caroline and Melanie are friends." in text
    assert "<semantic_memory> showing the 5 most recent of 7 items" in text
    assert "[s006] fact 6" in text and "[s001]" not in text and "[e002] event 2" in text
    assert f"<new_chunk>\n{CHUNK}\n</new_chunk>" in user["content"]
    assert "1638 tokens" in user["content"]
    tools_at = text.index("</episodic_memory>")
    if fmt == "alpha":
        for schema in TOOL_SCHEMAS:
            assert f"### {schema['name']}" in text[tools_at:]
            assert json.dumps(schema["parameters"]) in text
        assert "✿FUNCTION✿: " in text and "✿ARGS✿: " in text and "✿RESULT✿" in text
        assert "[new_memory_insert,memory_update,memory_delete]" in text
    elif fmt == "hermes":
        assert "<tools>" in text and "</tool_call>" in text
        for tool in openai_tools():
            assert json.dumps(tool) in text
    elif fmt == "native":
        assert "✿" not in text and "<tool_call>" not in text and '"parameters"' not in text
    else:
        assert "JSON array" in text and "✿" not in text


@pytest.mark.parametrize("fmt", ["hermes", "native", "json"])
def test_prompt_holds_no_example_content_that_could_leak_into_memory(fmt: str) -> None:
    """Small models store an example's names and events as if they came from the stream, and the 0.5B
    stored even the `json` prompt's old `<placeholders>` of an example reply ("<one self-contained fact from
    the chunk>"): the formats an LLM writer uses show no names, dates or events, and `json` no example reply.
    (`alpha` keeps the prompt Memalpha-4B was trained with.)"""
    build = build_messages(MemoryState(), "x", fmt, COUNTER, budget_tokens=6144, max_new_tokens=512)  # type: ignore[arg-type]
    text = "\n".join(message["content"] for message in build.messages)
    for word in ("Alice", "Rex", "beagle", "puppy", "2024", "March"):
        assert word not in text
    if fmt == "json":
        reply_format = build.messages[0]["content"].split("# Reply format")[1]
        assert (
            '"name"' in reply_format and "[{" not in reply_format and not re.search(r"<[^>]+>", reply_format)
        )


def test_prompt_digest_follows_the_wording_not_the_request() -> None:
    formats = ("alpha", "hermes", "native", "json")
    assert len({prompt_sha256(fmt) for fmt in formats}) == len(formats)  # type: ignore[arg-type]
    assert prompt_sha256("json", 256) != prompt_sha256("json") == prompt_sha256("json", 512)
    assert re.fullmatch(r"[0-9a-f]{64}", prompt_sha256("alpha"))


def test_alpha_prompt_keeps_its_episodic_example() -> None:
    """The `alpha` prompt is the one Memalpha-4B was trained on: its wording stays as it was."""
    system = build_messages(MemoryState(), CHUNK, "alpha", COUNTER, 6144, 512).messages[0]["content"]
    assert (
        'each with when it happened and who was involved, e.g. "On 2 March 2024, Alice adopted a beagle named Rex."'
        in system
    )


def test_empty_memory_is_shown_as_empty() -> None:
    system = build_messages(MemoryState(), CHUNK, "alpha", COUNTER, 6144, 512).messages[0]["content"]
    assert "<core_memory>\n(empty)\n</core_memory>" in system
    assert "showing the 0 most recent of 0 items\n(empty)" in system


# --- budget ---


def test_prompt_tokens_are_the_counted_messages() -> None:
    build = build_messages(_state(3), CHUNK, "alpha", COUNTER, 6144, 512)
    assert build.prompt_tokens == sum(COUNTER.count(message["content"]) for message in build.messages)
    native = build_messages(_state(3), CHUNK, "native", COUNTER, 6144, 512)
    counted = sum(COUNTER.count(message["content"]) for message in native.messages)
    assert native.prompt_tokens == counted + COUNTER.count(json.dumps(openai_tools(strict=True)))


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(["alpha", "json", "hermes", "native"]),
    core=_TEXT,
    contents=st.lists(_TEXT, max_size=8),
    chunk=_TEXT,
    budget=st.integers(0, 4000),
)
def test_prompt_tokens_counted_by_section_equal_the_whole_count(
    fmt: str, core: str, contents: list[str], chunk: str, budget: int
) -> None:
    """The fixed text is counted once per format (`_fixed_tokens`); the word estimate's count of the
    messages as sent is the same, whatever the memory and chunk hold (punctuation at an edge, no
    whitespace, other scripts), and so is every budget decision."""
    state = MemoryState(core=core)
    for number, content in enumerate(contents):
        items = state.semantic if number % 2 else state.episodic
        items.append(Item(id=f"x{number:03d}", content=content, created_at=NOW, updated_at=NOW))
    build = build_messages(state, chunk, fmt, COUNTER, budget, 512)  # type: ignore[arg-type]
    whole = sum(COUNTER.count(message["content"]) for message in build.messages)
    tools = COUNTER.count(json.dumps(openai_tools(strict=True))) if fmt == "native" else 0
    assert build.prompt_tokens == whole + tools


def _size_at(state: MemoryState, visible: int) -> int:
    """Prompt tokens with a `visible`-item window, from the unbounded prompt with its memory view swapped."""
    full = build_messages(state, CHUNK, "alpha", COUNTER, budget_tokens=10**9, max_new_tokens=512)
    system = full.messages[0]["content"].replace(
        render_policy_memory(state, 5), render_policy_memory(state, visible)
    )
    return COUNTER.count(system) + COUNTER.count(full.messages[1]["content"])


@pytest.mark.parametrize(("visible", "smaller"), [(5, 2), (2, 1), (1, 0)])
def test_budget_halves_visible_items(visible: int, smaller: int) -> None:
    state = _state(items_per_kind=9, words_per_item=200)
    size = _size_at(state, visible)
    exact = build_messages(state, CHUNK, "alpha", COUNTER, budget_tokens=size, max_new_tokens=512)
    assert exact.visible_items == visible and exact.prompt_tokens == size
    assert f"showing the {visible} most recent of 9 items" in exact.messages[0]["content"]
    over = build_messages(state, CHUNK, "alpha", COUNTER, budget_tokens=size - 1, max_new_tokens=512)
    assert over.visible_items == smaller and over.prompt_tokens == _size_at(state, smaller) < size


def test_budget_too_small_even_for_no_items_still_builds() -> None:
    state = _state(items_per_kind=9, words_per_item=200)
    build = build_messages(state, CHUNK, "json", COUNTER, budget_tokens=10, max_new_tokens=512)
    assert build.visible_items == 0
    assert build.prompt_tokens > 10
    assert CHUNK in build.messages[1]["content"]


def test_prompt_states_the_configured_core_limit() -> None:
    default = build_messages(MemoryState(), CHUNK, "alpha", COUNTER, 6144, 512).messages[0]["content"]
    assert "at most 512 tokens" in default  # the prompt Memalpha-4B was trained on
    smaller = build_messages(MemoryState(), CHUNK, "alpha", COUNTER, 6144, 512, core_tokens=200)
    assert "at most 200 tokens" in smaller.messages[0]["content"]
