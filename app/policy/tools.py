"""The policy's three tools (SPEC §2): names, parameters and `memory_type` values are the interface the
released Memalpha-4B speaks, so they stay exactly as specified. Everything the prompt, the `native`
request (`tools=`) and the `json` request (`response_format`) show the model derives from `TOOL_SCHEMAS`."""

from __future__ import annotations

import copy
from typing import Any

from app.memory.kinds import LIST_KINDS, MemoryKind
from app.memory.operations import Tool

CORE = MemoryKind.CORE.tool_value
LIST_TYPES = [kind.tool_value for kind in LIST_KINDS]  # semantic_memory, episodic_memory
ALL_TYPES = [CORE, *LIST_TYPES]

_MEMORY_ID = {
    "type": "string",
    "description": "Id of the item, as shown in square brackets in the memory. "
    "Required for semantic_memory and episodic_memory; not used for core_memory.",
}

TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    {
        "name": Tool.INSERT.value,
        "description": "Add a new item to semantic memory (a fact, piece of knowledge, preference or rule) "
        "or to episodic memory (an event, with when it happened and who was involved).",
        "parameters": {
            "type": "object",
            "properties": {
                "memory_type": {
                    "type": "string",
                    "enum": LIST_TYPES,
                    "description": "Where to add the item.",
                },
                "content": {"type": "string", "description": "The self-contained text of the new item."},
            },
            "required": ["memory_type", "content"],
        },
    },
    {
        "name": Tool.UPDATE.value,
        "description": "Replace the content of a memory: the whole core memory paragraph, or one semantic "
        "or episodic item given by its id.",
        "parameters": {
            "type": "object",
            "properties": {
                "memory_type": {
                    "type": "string",
                    "enum": ALL_TYPES,
                    "description": "Which memory to change.",
                },
                "new_content": {
                    "type": "string",
                    "description": "The complete new text that replaces the old.",
                },
                "memory_id": _MEMORY_ID,
            },
            "required": ["memory_type", "new_content"],
        },
    },
    {
        "name": Tool.DELETE.value,
        "description": "Remove a semantic or episodic item given by its id, or clear the core memory.",
        "parameters": {
            "type": "object",
            "properties": {
                "memory_type": {
                    "type": "string",
                    "enum": ALL_TYPES,
                    "description": "Which memory to remove from.",
                },
                "memory_id": _MEMORY_ID,
            },
            "required": ["memory_type"],
        },
    },
)

TOOL_NAMES: tuple[str, ...] = tuple(schema["name"] for schema in TOOL_SCHEMAS)


def openai_tools(*, strict: bool = False) -> list[dict[str, Any]]:
    """The tools in the OpenAI `tools=` request format.

    `strict=True` marks each function strict (and closes its parameters): vLLM then constrains the
    arguments, not only the call envelope, to the schema when it decodes a `tool_choice="required"`
    call. (OpenAI's hosted strict mode would refuse these schemas: it wants every property required.)"""
    tools = []
    for schema in TOOL_SCHEMAS:
        function = copy.deepcopy(schema)
        if strict:
            function["strict"] = True
            function["parameters"]["additionalProperties"] = False
        tools.append({"type": "function", "function": function})
    return tools


def _call_variant(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    arguments = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [name]}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tool_calls_json_schema(max_calls: int) -> dict[str, Any]:
    """JSON schema of "a list of tool calls" for the `json` format (constrained decoding).

    One `anyOf` branch per tool; update and delete are split into a core branch (no id) and an item
    branch (id required), so that a constrained model cannot forget the id an item needs. At least one
    call: like `tool_choice="required"` in the native format, every chunk gets a write attempt.
    """
    schemas = {schema["name"]: schema["parameters"]["properties"] for schema in TOOL_SCHEMAS}
    string = {"type": "string"}
    core_type = {"type": "string", "enum": [CORE]}
    list_type = {"type": "string", "enum": LIST_TYPES}
    insert = schemas[Tool.INSERT.value]
    variants = [
        _call_variant(
            Tool.INSERT.value,
            {"memory_type": list_type, "content": insert["content"]},
            ["memory_type", "content"],
        ),
        _call_variant(
            Tool.UPDATE.value,
            {"memory_type": core_type, "new_content": string},
            ["memory_type", "new_content"],
        ),
        _call_variant(
            Tool.UPDATE.value,
            {"memory_type": list_type, "new_content": string, "memory_id": string},
            ["memory_type", "new_content", "memory_id"],
        ),
        _call_variant(Tool.DELETE.value, {"memory_type": core_type}, ["memory_type"]),
        _call_variant(
            Tool.DELETE.value, {"memory_type": list_type, "memory_id": string}, ["memory_type", "memory_id"]
        ),
    ]
    return {"type": "array", "items": {"anyOf": variants}, "minItems": 1, "maxItems": max_calls}


def json_response_format(max_calls: int) -> dict[str, Any]:
    """The `response_format` of a `json` request: the service's, and the trainer's vLLM rollouts'."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "tool_calls", "schema": tool_calls_json_schema(max_calls)},
    }
