"""The three memory operations (SPEC §2) and `apply`, with our stricter semantics
(ARCHITECTURE §2): unknown ids, empty content, core inserts and over-long items are errors; exact
duplicate inserts are skipped; an over-long core is truncated at a word boundary and flagged; a leading
`[id] ` label that names an item of the memory (copied from the policy view) is dropped from content.

Inserts and updates of items take one optional argument beyond SPEC §2, `cues`: index-only words
(`Item.cues`). A policy that does not know it (Memalpha-4B) never sends it and nothing changes for it.
A value that is not a string, or longer than an item may be, is an error like a bad `content`. An
update replaces the cues with its own, or clears them when it sends none: cues name the question the
old content answered, which new content need not answer any more (a stale cue would keep finding the
item for it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from app.memory.blank import is_blank
from app.memory.ids import item_id, normalise_id
from app.memory.kinds import LIST_KINDS, MemoryKind
from app.memory.limits import TRUNCATION_MARKER, MemoryLimits
from app.memory.state import Item, MemoryState
from app.memory.tokens import TokenCounter, truncate_at_word


class Tool(StrEnum):
    INSERT = "new_memory_insert"
    UPDATE = "memory_update"
    DELETE = "memory_delete"


OpStatus = Literal["ok", "skipped", "error"]


class Call(Protocol):
    """A tool call as a policy proposed it (the policy parser's `ToolCall` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class Operation:
    """One requested change, as the policy (or a user) asked for it; validated by `apply`."""

    tool: str
    memory_type: object
    content: object = None
    memory_id: object = None
    cues: object = None  # None: not given

    @classmethod
    def from_call(cls, name: str, arguments: Mapping[str, object]) -> Operation:
        """Map a tool call's arguments; `new_content` (update) and `content` (insert) both land in content."""
        content = arguments.get("new_content", arguments.get("content"))
        return cls(
            tool=name,
            memory_type=arguments.get("memory_type"),
            content=content,
            memory_id=arguments.get("memory_id"),
            cues=arguments.get("cues"),
        )


@dataclass
class OpResult:
    tool: str
    memory_type: str  # the kind's value (`semantic`) or the raw value when it was not a kind
    status: OpStatus
    item_id: str | None = None
    before: str | None = None
    after: str | None = None
    error: str | None = None
    truncated: bool = False

    @property
    def changed(self) -> bool:
        return self.status == "ok"


class _Reject(Exception):
    def __init__(self, status: OpStatus, message: str, item_id: str | None = None, before: str | None = None):
        super().__init__(message)
        self.status, self.item_id, self.before = status, item_id, before


@dataclass(frozen=True)
class Applier:
    """Applies operations to a state in place, in order; each op sees the effect of the previous one."""

    limits: MemoryLimits
    counter: TokenCounter

    def apply(
        self,
        state: MemoryState,
        op: Operation,
        *,
        now: datetime,
        source_seq: int | None = None,
        occurred_at: datetime | None = None,
    ) -> OpResult:
        kind = MemoryKind.parse(op.memory_type)
        kind_label = kind.value if kind else str(op.memory_type)
        result = OpResult(tool=op.tool, memory_type=kind_label, status="ok")
        try:
            if kind is None:
                raise _Reject("error", f"unknown memory_type {op.memory_type!r}")
            if op.tool == Tool.INSERT:
                self._insert(state, kind, op, now, source_seq, occurred_at, result)
            elif op.tool == Tool.UPDATE:
                self._update(state, kind, op, now, result)
            elif op.tool == Tool.DELETE:
                self._delete(state, kind, op, result)
            else:
                raise _Reject("error", f"unknown tool {op.tool!r}")
        except _Reject as reject:
            result.status, result.error = reject.status, str(reject)
            result.item_id, result.before = reject.item_id, reject.before
            return result
        state.version += 1
        return result

    def apply_all(
        self,
        state: MemoryState,
        ops: Iterable[Operation],
        *,
        now: datetime,
        source_seq: int | None = None,
        occurred_at: datetime | None = None,
    ) -> list[OpResult]:
        return [self.apply(state, op, now=now, source_seq=source_seq, occurred_at=occurred_at) for op in ops]

    def apply_calls(
        self,
        state: MemoryState,
        calls: Sequence[Call],
        *,
        now: datetime,
        seq: int | None,
        occurred_at: datetime | None = None,
    ) -> list[OpResult]:
        """The engine step (ARCHITECTURE §3): one policy reply's tool calls applied in order to `state`
        for the chunk `seq`. Episodic items it inserts happened (at the latest) at the chunk's
        `occurred_at`. The ingest worker, the trainer's rollouts, the evaluator, `demo` and the benches
        all call this, so training and serving write the same memory for the same reply."""
        ops = [Operation.from_call(call.name, call.arguments) for call in calls]
        return self.apply_all(state, ops, now=now, source_seq=seq, occurred_at=occurred_at)

    # --- the three operations ---

    def _insert(
        self,
        state: MemoryState,
        kind: MemoryKind,
        op: Operation,
        now: datetime,
        source_seq: int | None,
        occurred_at: datetime | None,
        result: OpResult,
    ) -> None:
        if kind is MemoryKind.CORE:
            raise _Reject("error", "core memory cannot be inserted into; use memory_update to replace it")
        content = self._item_content(state, op.content)
        cues = self._cues(op.cues) or ""
        items = state.items(kind)
        duplicate = next((item for item in items if item.content == content), None)
        if duplicate is not None:
            raise _Reject("skipped", f"duplicate of {kind.value} item {duplicate.id}", item_id=duplicate.id)
        if state.count(kind) >= self.limits.max_items_per_kind:
            raise _Reject("error", f"{kind.value} memory is full ({self.limits.max_items_per_kind} items)")
        new_id = item_id(state.next_item)
        state.next_item += 1
        # An event written from a timestamped chunk happened (at the latest) at the chunk's time.
        occurred = occurred_at if kind is MemoryKind.EPISODIC else None
        items.append(
            Item(
                id=new_id,
                content=content,
                created_at=now,
                updated_at=now,
                source_seq=source_seq,
                occurred_at=occurred,
                cues=cues,
            )
        )
        result.item_id, result.after = new_id, content

    def _update(
        self, state: MemoryState, kind: MemoryKind, op: Operation, now: datetime, result: OpResult
    ) -> None:
        if kind is MemoryKind.CORE:
            text = self._non_empty(op.content, "new_content")
            fitted = self._fit_core(text)
            if fitted == state.core:
                raise _Reject("skipped", "core memory already has this content")
            result.before, result.after = state.core, fitted
            result.truncated = fitted != text
            state.core, state.core_truncated = fitted, result.truncated
            return
        item = self._existing(state, kind, op.memory_id)
        content = self._item_content(state, op.content)
        cues = self._cues(op.cues)
        result.item_id, result.before = item.id, item.content
        if content == item.content and (cues is None or cues == item.cues):
            raise _Reject(
                "skipped", f"{kind.value} item {item.id} already has this content", item.id, item.content
            )
        item.content, item.cues, item.updated_at = content, cues or "", now
        result.after = content

    def _delete(self, state: MemoryState, kind: MemoryKind, op: Operation, result: OpResult) -> None:
        if kind is MemoryKind.CORE:
            if not state.core:
                raise _Reject("skipped", "core memory is already empty")
            result.before, result.after = state.core, ""
            state.core, state.core_truncated = "", False
            return
        item = self._existing(state, kind, op.memory_id)
        state.items(kind).remove(item)
        result.item_id, result.before = item.id, item.content

    # --- validation ---

    @staticmethod
    def _non_empty(value: object, name: str) -> str:
        if not isinstance(value, str) or is_blank(value):
            raise _Reject("error", f"{name} must be a non-empty string")
        return value.strip()

    def _item_content(self, state: MemoryState, value: object) -> str:
        content = _without_view_labels(state, self._non_empty(value, "content"))
        if not content:
            raise _Reject("error", "content is only an item's [id] label")
        tokens = self.counter.count(content)
        if tokens > self.limits.max_item_tokens:
            raise _Reject(
                "error", f"content has {tokens} tokens; the limit per item is {self.limits.max_item_tokens}"
            )
        return content

    def _cues(self, value: object) -> str | None:
        """The cues an operation gives, whitespace collapsed; None when it gives none."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Reject("error", "cues must be a string")
        cues = " ".join(value.split())
        tokens = self.counter.count(cues)
        if tokens > self.limits.max_item_tokens:
            raise _Reject(
                "error", f"cues have {tokens} tokens; the limit per item is {self.limits.max_item_tokens}"
            )
        return cues

    def _existing(self, state: MemoryState, kind: MemoryKind, raw_id: object) -> Item:
        wanted = normalise_id(raw_id)
        if wanted is None:
            raise _Reject("error", f"memory_id is required for {kind.tool_value}")
        item = state.find(kind, wanted)
        if item is None:
            raise _Reject("error", f"no {kind.value} item with id {wanted!r}")
        return item

    def _fit_core(self, text: str) -> str:
        limit = self.limits.core_tokens
        if self.counter.count(text) <= limit:
            return text
        room = max(limit - self.counter.count(TRUNCATION_MARKER), 0)
        return truncate_at_word(text, room, self.counter) + TRUNCATION_MARKER


_VIEW_LABEL = re.compile(r"\[([0-9A-Za-z]+)\]\s*")


def _without_view_labels(state: MemoryState, content: str) -> str:
    """`content` without the leading `[id] ` labels that name items of this memory. The policy sees
    items as `[id] content` lines (render.py), and small models copy that label into what they write
    (measured: the 1.5B put it in front of every later insert), which would store an id as text."""
    while (label := _VIEW_LABEL.match(content)) and _names_item(state, label.group(1)):
        content = content[label.end() :]
    return content


def _names_item(state: MemoryState, raw_id: str) -> bool:
    wanted = normalise_id(raw_id)
    return wanted is not None and any(state.find(kind, wanted) for kind in LIST_KINDS)
