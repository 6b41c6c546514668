"""Our memorize prompt, with the structure of SPEC §3 (the wording is our own).

System message: role + instructions + the current memory + the tool block (the tool block depends on
the tool format). User message: instructions + the chunk in `<new_chunk>…</new_chunk>` + a reminder of
the response token limit. The prompt is built for every chunk (its fixed text once); when it exceeds its
token budget, the number of visible recent items per kind is halved (5 → 2 → 1 → 0).

The `alpha` tool block follows the layout of Qwen-Agent's function-calling prompt (a `# Tools`
section, one `### name` entry per tool with its JSON-schema parameters, then the ✿FUNCTION✿ / ✿ARGS✿
call lines), which is what Memalpha-4B was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache

from app.contracts.policy import ToolFormat
from app.memory.limits import MemoryLimits
from app.memory.render import POLICY_VISIBLE_ITEMS, render_policy_memory
from app.memory.state import MemoryState
from app.memory.tokens import TokenCounter, WordTokenCounter
from app.policy.parser import FN_ARGS, FN_EXIT, FN_NAME, FN_RESULT
from app.policy.tools import TOOL_NAMES, TOOL_SCHEMAS, openai_tools

Message = dict[str, str]

_ROLE = (
    "You are the memory manager of an assistant. You read a long stream of text one chunk at a time "
    "and decide what to remember. Later, questions about the whole stream will be answered only from "
    "the memory you write, so keep everything that could be asked about, in a compact and "
    "self-contained form."
)

_INSTRUCTIONS = """## The memory

- core_memory: one short paragraph (at most {core_tokens} tokens) with the most important, lasting context: who is \
involved, their key traits and relations, the main topic. It is always shown in full. Replace it with \
memory_update when it should change; nothing can be inserted into it.
- semantic_memory: a list of facts and general knowledge (attributes, preferences, relations, definitions, \
rules, labelled examples), one fact per item.
- episodic_memory: a list of events, each with when it happened and who was involved, \
{episodic_example}

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

# The episodic example of the instructions. `alpha` keeps the sentence Memalpha-4B's prompt was written
# with; every other format gets the shape alone, because small models copy example content (names, dates)
# into memory as if it came from the stream.
_EPISODIC_EXAMPLE_ALPHA = 'e.g. "On 2 March 2024, Alice adopted a beagle named Rex."'
_EPISODIC_SHAPE = 'written as "On <date>, <who> <did what>."'


@dataclass(frozen=True)
class PromptBuild:
    messages: list[Message]
    visible_items: int  # recent items shown per kind after budget halving
    prompt_tokens: int  # as the configured counter measures it (tools of the native format included)


def build_messages(
    state: MemoryState,
    chunk: str,
    fmt: ToolFormat,
    counter: TokenCounter,
    budget_tokens: int,
    max_new_tokens: int,
    *,
    core_tokens: int = MemoryLimits.core_tokens,
) -> PromptBuild:
    """`core_tokens` is the core limit the prompt states (the service's `MEMALPHA_CORE_TOKEN_LIMIT`;
    the default, 512, is the prompt Memalpha-4B was trained on). The prompt's tokens are counted section
    by section (the system message's fixed text once per counter and format, then the memory and the user
    message), which the word estimate counts exactly (sections are separated by blank lines) and a
    tokenizer to within a token or two per section boundary."""
    head, tail = _fixed_sections(fmt, core_tokens)
    user = _USER.format(chunk=chunk.strip(), max_new_tokens=max_new_tokens)
    fixed_tokens = _fixed_tokens(counter, fmt, core_tokens) + counter.count(user)
    visible = POLICY_VISIBLE_ITEMS
    while True:
        memory = render_policy_memory(state, visible)
        tokens = fixed_tokens + counter.count(memory)
        if tokens <= budget_tokens or visible == 0:
            break
        visible //= 2
    messages = [{"role": "system", "content": f"{head}{memory}{tail}"}, {"role": "user", "content": user}]
    return PromptBuild(messages=messages, visible_items=visible, prompt_tokens=tokens)


@cache
def _fixed_sections(fmt: ToolFormat, core_tokens: int) -> tuple[str, str]:
    """The system message's text before and after the memory (the same for every chunk)."""
    instructions = _INSTRUCTIONS.format(
        core_tokens=core_tokens,
        episodic_example=_EPISODIC_EXAMPLE_ALPHA if fmt == "alpha" else _EPISODIC_SHAPE,
    )
    return f"{_ROLE}\n\n{instructions}\n\n# Current memory\n\n", f"\n\n{_tool_block(fmt)}"


@lru_cache(maxsize=16)
def _fixed_tokens(counter: TokenCounter, fmt: ToolFormat, core_tokens: int) -> int:
    """Tokens of the system message's fixed text; native tools (as the request sends them) are rendered into
    the prompt by the chat template, so they count too."""
    head, tail = _fixed_sections(fmt, core_tokens)
    tools = counter.count(json.dumps(openai_tools(strict=True))) if fmt == "native" else 0
    return counter.count(head) + counter.count(tail) + tools


def prompt_sha256(fmt: ToolFormat, core_tokens: int = MemoryLimits.core_tokens) -> str:
    """A digest of the prompt's wording (an empty memory and chunk, no budget stated): an adapter reads at
    serving time the prompt it was trained on only when the digests agree. The chunk, the memory and the
    stated response budget vary per request or are serving settings of their own."""
    build = build_messages(MemoryState(), "", fmt, WordTokenCounter(), 1 << 30, 0, core_tokens=core_tokens)
    return hashlib.sha256(json.dumps(build.messages, ensure_ascii=False).encode()).hexdigest()


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
    # The reply's shape is described in words, with no example reply: small models copied an example's
    # content — even `<placeholders>` saying what goes there — into memory as if it came from the chunk.
    # The service decodes `json` under the calls' JSON schema, which enforces the shape.
    entries = "\n".join(
        f"- {tool['name']}: {tool['description']} Parameters: {json.dumps(tool['parameters'], ensure_ascii=False)}"
        for tool in TOOL_SCHEMAS
    )
    return f"""# Tools

{entries}

# Reply format

Reply with a JSON array of tool calls and nothing else. Each call is an object with two keys: "name", the \
tool's name, and "arguments", an object with that tool's parameters. The calls run in order, as many as the \
chunk needs (one insert per fact or event); every content is written from the chunk."""
