"""Our memorize prompt, with the structure of SPEC §3 (the wording is our own).

System message: role + instructions + the current memory + the tool block (the tool block depends on
the tool format). User message: instructions + the chunk in `<new_chunk>…</new_chunk>` + a reminder of
the response token limit. The prompt is rebuilt from scratch for every chunk; when it exceeds its
token budget, the number of visible recent items per kind is halved (5 → 2 → 1 → 0).

The `alpha` tool block follows the layout of Qwen-Agent's function-calling prompt (a `# Tools`
section, one `### name` entry per tool with its JSON-schema parameters, then the ✿FUNCTION✿ / ✿ARGS✿
call lines), which is what Memalpha-4B was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.memory.render import POLICY_VISIBLE_ITEMS, render_policy_memory
from app.memory.state import MemoryState
from app.memory.tokens import TokenCounter
from app.policy.parser import FN_ARGS, FN_EXIT, FN_NAME, FN_RESULT
from app.policy.tools import TOOL_NAMES, TOOL_SCHEMAS, openai_tools
from app.settings import ToolFormat

Message = dict[str, str]

_ROLE = (
    "You are the memory manager of an assistant. You read a long stream of text one chunk at a time "
    "and decide what to remember. Later, questions about the whole stream will be answered only from "
    "the memory you write, so keep everything that could be asked about, in a compact and "
    "self-contained form."
)

_INSTRUCTIONS = """## The memory

- core_memory: one short paragraph (at most 512 tokens) with the most important, lasting context: who is \
involved, their key traits and relations, the main topic. It is always shown in full. Replace it with \
memory_update when it should change; nothing can be inserted into it.
- semantic_memory: a list of facts and general knowledge (attributes, preferences, relations, definitions, \
rules, labelled examples), one fact per item.
- episodic_memory: a list of events, each with when it happened and who was involved, \
e.g. "On 2 March 2024, Alice adopted a beagle named Rex."

## Guidelines

1. Make every item understandable on its own: use names instead of pronouns, and absolute dates \
instead of words like "yesterday" when the date is known.
2. Do not store again what the memory already holds. When new information changes an item, update that \
item by its id; delete items that turned out to be wrong.
3. Items are shown as `[id] content`; use exactly that id in memory_update and memory_delete.
4. Only the most recent items of each list are shown; older items still exist and are kept."""

_USER = """Read the new chunk below and record it in memory with the tools: insert the new facts and events \
it contains, update items it changes, and keep the core memory current.

<new_chunk>
{chunk}
</new_chunk>

Keep your whole response within {max_new_tokens} tokens."""

_NATIVE_NOTE = "Write to memory by calling the provided tools; call several tools in one reply when needed."

_JSON_EXAMPLE_CHUNK = "[2:10 pm on 3 March, 2024] Alice: I adopted a puppy yesterday! His name is Rex, he's a beagle."
_JSON_EXAMPLE_REPLY = [
    {"name": "new_memory_insert",
     "arguments": {"memory_type": "episodic_memory", "content": "On 2 March 2024, Alice adopted a puppy named Rex."}},
    {"name": "new_memory_insert",
     "arguments": {"memory_type": "semantic_memory", "content": "Alice's dog Rex is a beagle."}},
    {"name": "memory_update",
     "arguments": {"memory_type": "core_memory", "new_content": "Alice: owns a beagle named Rex (since 2 March 2024)."}},
]


@dataclass(frozen=True)
class PromptBuild:
    messages: list[Message]
    visible_items: int  # recent items shown per kind after budget halving
    prompt_tokens: int  # as the configured counter measures it (tools of the native format included)


def build_messages(
    state: MemoryState, chunk: str, fmt: ToolFormat, counter: TokenCounter, budget_tokens: int,
    max_new_tokens: int,
) -> PromptBuild:
    tool_block = _tool_block(fmt)
    user = _USER.format(chunk=chunk.strip(), max_new_tokens=max_new_tokens)
    # Native tools (as the request sends them) are rendered into the prompt by the chat template: they count too.
    extra_tokens = counter.count(json.dumps(openai_tools(strict=True))) if fmt == "native" else 0
    visible = POLICY_VISIBLE_ITEMS
    while True:
        system = _system(state, visible, tool_block)
        tokens = counter.count(system) + counter.count(user) + extra_tokens
        if tokens <= budget_tokens or visible == 0:
            break
        visible //= 2
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return PromptBuild(messages=messages, visible_items=visible, prompt_tokens=tokens)


def _system(state: MemoryState, visible: int, tool_block: str) -> str:
    memory = render_policy_memory(state, visible)
    return f"{_ROLE}\n\n{_INSTRUCTIONS}\n\n# Current memory\n\n{memory}\n\n{tool_block}"


def _tool_block(fmt: ToolFormat) -> str:
    if fmt == "alpha":
        return _alpha_block()
    if fmt == "hermes":
        return _hermes_block()
    if fmt == "json":
        return _json_block()
    return _NATIVE_NOTE


def _alpha_block() -> str:
    entries = "\n\n".join(
        f"### {tool['name']}\n\n{tool['name']}: {tool['description']} "
        f"Parameters: {json.dumps(tool['parameters'], ensure_ascii=False)} The arguments are a JSON object."
        for tool in TOOL_SCHEMAS
    )
    names = ",".join(TOOL_NAMES)
    return f"""# Tools

## These tools are available to you:

{entries}

## To call tools, put these lines in your reply, one pair per call, as many calls as you need, in the order they \
should run:

{FN_NAME}: name of the first tool, one of [{names}]
{FN_ARGS}: arguments of the first tool
{FN_NAME}: name of the second tool
{FN_ARGS}: arguments of the second tool
...
{FN_RESULT}: results of the calls
{FN_EXIT}: your reply after seeing the results"""


def _hermes_block() -> str:
    tools = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in openai_tools())
    return f"""# Tools

You can call the functions described inside <tools></tools>:
<tools>
{tools}
</tools>

Write each call as a JSON object with the function name and its arguments inside <tool_call></tool_call> \
tags, one block per call, as many calls as you need, in the order they should run:
<tool_call>
{{"name": <function-name>, "arguments": <arguments-json-object>}}
</tool_call>"""


def _json_block() -> str:
    entries = "\n".join(
        f"- {tool['name']}: {tool['description']} Parameters: {json.dumps(tool['parameters'], ensure_ascii=False)}"
        for tool in TOOL_SCHEMAS
    )
    example = json.dumps(_JSON_EXAMPLE_REPLY, ensure_ascii=False)
    return f"""# Tools

{entries}

# Reply format

Reply with a JSON array of tool calls and nothing else. Each call is an object \
{{"name": <tool name>, "arguments": <arguments object>}}; the calls run in order.

Example. For the chunk
{_JSON_EXAMPLE_CHUNK}
a good reply is
{example}"""
