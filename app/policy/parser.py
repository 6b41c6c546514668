"""From a policy reply (raw text and/or native `tool_calls`) to ordered tool calls.

Accepted, in this order of precedence: native `tool_calls` (OpenAI objects or dicts; arguments as a
JSON string or a dict); Qwen-Agent ✿FUNCTION✿/✿ARGS✿ lines (cut at the first ✿RESULT✿/✿RETURN✿);
Hermes `<tool_call>` blocks (a missing closing tag is tolerated); the `json` format (a list of calls,
`{"calls"|"tool_calls": [...]}`, or one call object). Code fences, prose around calls and `<think>`
blocks are ignored; broken JSON is repaired with `json-repair`.

Decisions: a call whose tool name is unknown is KEPT as a call, so that `apply` reports it as an
`error` operation (it counts as a failed call for the r2 reward and shows in the audit log, as
upstream counted it). A candidate that has no usable name or whose arguments are not an object
becomes a parse error instead. `memory_type` values are normalised (`semantic` → `semantic_memory`).
`parse_reply` never raises: anything unparseable ends up in `errors`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair

from app.memory.kinds import MemoryKind

FN_NAME, FN_ARGS, FN_RESULT, FN_EXIT = "✿FUNCTION✿", "✿ARGS✿", "✿RESULT✿", "✿RETURN✿"
STOP_MARKERS = (FN_RESULT, FN_EXIT)

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
_DECODER = json.JSONDecoder()
_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_FENCE = re.compile(r"```[\w-]*")
_JSON_START = re.compile(r"\[\s*\{|\{\s*[\"']")
_CALL_LIST_KEYS = ("calls", "tool_calls", "function_calls", "functions")


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ParseResult:
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_reply(text: str | None, native_calls: Sequence[Any] | None = None) -> ParseResult:
    result = ParseResult()
    try:
        if native_calls:
            for index, raw in enumerate(native_calls):
                _add_candidate(result, _native_to_dict(raw), f"native call {index + 1}")
            return result
        _parse_text(result, text)
    except Exception as exc:  # noqa: BLE001 -- the contract is "never raises"; e.g. deep-nesting RecursionError
        result.errors.append(f"parser failure: {type(exc).__name__}: {str(exc)[:200]}")
    return result


def _parse_text(result: ParseResult, text: str | None) -> None:
    if text is None or not text.strip():
        result.errors.append("empty reply")
        return
    text = _THINK.sub("", text.replace("\x00", ""))
    if FN_NAME in text:
        _parse_alpha(result, text)
    elif _HERMES_OPEN in text:
        _parse_hermes(result, text)
    else:
        _parse_json_reply(result, text)
    if not result.calls and not result.errors:
        result.errors.append(f"no tool call found in reply: {_snippet(text)}")


def _parse_alpha(result: ParseResult, text: str) -> None:
    cut = min((i for i in (text.find(marker) for marker in STOP_MARKERS) if i >= 0), default=len(text))
    for number, segment in enumerate(text[:cut].split(FN_NAME)[1:], start=1):
        where = f"✿ call {number}"
        head, has_args, raw_args = segment.partition(FN_ARGS)
        name = _clean_name(head.strip().lstrip(":").split("\n", 1)[0])
        if not has_args:
            result.errors.append(f"{where} ({name or '?'}): no {FN_ARGS} line")
            continue
        arguments = _load_json(_strip_fences(raw_args.strip().removeprefix(":")))
        _add_candidate(result, {"name": name, "arguments": arguments}, where)


def _parse_hermes(result: ParseResult, text: str) -> None:
    blocks = text.split(_HERMES_OPEN)[1:]
    for number, block in enumerate(blocks, start=1):
        body = block.split(_HERMES_CLOSE, 1)[0]
        candidates = _as_candidates(_load_json(_strip_fences(body)))
        if not candidates:
            result.errors.append(f"<tool_call> {number}: no JSON object in {_snippet(body)!r}")
        for index, candidate in enumerate(candidates):
            _add_candidate(result, candidate, f"<tool_call> {number}" + (f".{index + 1}" if index else ""))


def _parse_json_reply(result: ParseResult, text: str) -> None:
    stripped = _strip_fences(text)
    start = _JSON_START.search(stripped)
    if start is None:
        return
    for index, candidate in enumerate(_as_candidates(_load_json(stripped[start.start() :])), start=1):
        _add_candidate(result, candidate, f"json call {index}")


def _as_candidates(value: Any) -> list[Any]:
    """Unwrap the shapes a reply can take into a flat list of would-be calls."""
    if isinstance(value, list):
        out: list[Any] = []
        for element in value:
            out.extend(_as_candidates(element) if isinstance(element, list) else [element])
        return out
    if isinstance(value, dict):
        for key in _CALL_LIST_KEYS:
            if isinstance(value.get(key), list) and "name" not in value:
                return _as_candidates(value[key])
        return [value]
    return [value] if value not in ("", None) else []


def _add_candidate(result: ParseResult, candidate: Any, where: str) -> None:
    if not isinstance(candidate, Mapping):
        result.errors.append(f"{where}: not a call object: {_snippet(repr(candidate))}")
        return
    if isinstance(candidate.get("function"), Mapping):  # OpenAI shape {"type": "function", "function": {...}}
        candidate = candidate["function"]
    name = _clean_name(candidate.get("name"))
    if not name:
        result.errors.append(f"{where}: call without a tool name: {_snippet(repr(dict(candidate)))}")
        return
    raw_args = candidate.get("arguments", candidate.get("parameters", {}))
    arguments = _load_json(raw_args) if isinstance(raw_args, str) else raw_args
    if arguments is None or arguments == "":
        arguments = {}
    if not isinstance(arguments, Mapping):
        result.errors.append(f"{where} ({name}): arguments are not a JSON object: {_snippet(repr(raw_args))}")
        return
    result.calls.append(ToolCall(name=name, arguments=_normalise_arguments(arguments)))


def _normalise_arguments(arguments: Mapping[Any, Any]) -> dict[str, Any]:
    out = {str(key).strip(): value for key, value in arguments.items()}
    kind = MemoryKind.parse(out.get("memory_type"))
    if kind is not None:
        out["memory_type"] = kind.tool_value
    return out


def _native_to_dict(raw: Any) -> Any:
    """OpenAI SDK objects (`ChatCompletionMessageToolCall`) or plain dicts → {"name", "arguments"}."""
    if isinstance(raw, Mapping):
        return raw
    function = getattr(raw, "function", None)
    if function is None:
        return raw
    return {"name": getattr(function, "name", None), "arguments": getattr(function, "arguments", None)}


def _clean_name(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return value.strip().strip("`'\"*[]<>:").strip()


def _strip_fences(text: str) -> str:
    return _FENCE.sub("", text).strip()


def _load_json(text: str) -> Any:
    """The JSON value(s) at the start of `text`: strict JSON first (the common case, and trailing prose
    is ignored), repaired JSON for a broken rest. Several consecutive values (JSON lines) → a list;
    None when nothing is there."""
    values: list[Any] = []
    position, text = 0, text.strip()
    while position < len(text):
        try:
            value, position = _DECODER.raw_decode(text, position)
        except ValueError:
            if not values or text[position] in "[{":
                values.append(_repair(text[position:]))
            break
        values.append(value)
        position = _skip_separators(text, position)
        if position < len(text) and text[position] not in "[{":
            break  # prose after the JSON
    values = [value for value in values if value not in ("", None)]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _skip_separators(text: str, position: int) -> int:
    while position < len(text) and (text[position].isspace() or text[position] == ","):
        position += 1
    return position


def _repair(text: str) -> Any:
    try:
        return json_repair.loads(text)
    except (ValueError, RecursionError):
        return None


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def calls_as_json(calls: Iterable[ToolCall]) -> str:
    """The `json` format's rendering of calls; `parse_reply` reads it back to the same calls."""
    return json.dumps(
        [{"name": call.name, "arguments": call.arguments} for call in calls], ensure_ascii=False
    )
