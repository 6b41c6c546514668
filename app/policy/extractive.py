"""The extractive policy: a deterministic memory writer without an LLM (ARCHITECTURE §3).

It is the paper's "fixed rules" baseline and the embedded default. It emits ordinary tool calls, so
the very same apply path runs as for an LLM policy:
- dialogue (lines `[date] Speaker: text` or `Speaker: text` under a date line): every informative
  turn becomes an episodic item `On <date>, <Speaker>: <text>`, with relative times resolved against
  the session date ("yesterday (7 May 2023)"); first-person statements of lasting facts ("I'm a
  nurse", "My sister lives in Boston") also become semantic items;
- prose: sentences with a time expression or first-person past events → episodic, other informative
  sentences → semantic; a sentence that opens with a pronoun is prefixed with its paragraph's topic;
- a short rolling core: participants, latest date seen, recently frequent named entities — only while
  the core is empty or in this writer's own format (a core written by a user or an LLM is left alone).
Filler (greetings, thanks, short small-talk questions) is skipped; nothing already stored is inserted again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import date

from app.memory.kinds import MemoryKind
from app.memory.limits import MemoryLimits
from app.memory.operations import Tool
from app.memory.state import MemoryState
from app.memory.tokens import TokenCounter, truncate_at_word
from app.policy.backend import PolicyReply, Usage
from app.policy.dates import find_date, format_date, mentions_time, resolve_relative
from app.policy.parser import ToolCall, calls_as_json
from app.policy.sentences import entities, is_filler, split_sentences, words

_TURN = re.compile(
    r"^\s*(?:\[(?P<stamp>[^\]]{1,80})\]\s*)?(?P<speaker>[A-Z][\w.'’-]*(?: [A-Z][\w.'’-]*){0,2})\s*:\s*(?P<text>\S.*)$"
)
_NOT_SPEAKERS = {"date", "time", "session", "note", "title", "summary", "source", "question", "answer", "context"}
_HEADER_MAX_WORDS = 12
_FACT = re.compile(
    r"^(?:I'm (?:a|an|from|married|single|divorced|engaged|allergic|vegetarian|vegan|\d+)|I am (?:a|an|from|\d+)|"
    r"I (?:have|own|work|live|study|love|like|enjoy|prefer|hate)|I've (?:got|known|been \w+ing for|always)|"
    r"My (?:favou?rite|name|job|work|home|family|husband|wife|partner|son|daughter|kids|children|brother|sister|"
    r"mom|mother|dad|father|parents|friend|dog|cat|pet|birthday|goal|dream|hobby|passion)\b[\w' ]{0,30}? "
    r"(?:is|are|was|were|has|have|lives|works)|We (?:have|live|own)|Our [\w' ]{1,30}? (?:is|are|has|have))\b",
)
_FIRST_PERSON = re.compile(r"\b(?:I|we|We|my|My|our|Our)\b")
_PAST = re.compile(
    r"\b(?:\w{3,}ed|went|got|saw|took|made|had|was|were|did|met|bought|ran|gave|came|began|found|left|told|said|"
    r"thought|felt|won|lost|wrote|read|heard|brought|kept|spent|sold|taught|caught|built|drove|flew|ate|drank|"
    r"swam|sang|became|knew|grew|threw|wore|chose|fell|rode|spoke|broke|forgot|paid|sent|sat|stood|woke|moved)\b"
)
_NOT_PAST = {"need", "feed", "seed", "speed", "indeed", "proceed", "succeed", "exceed", "embed", "breed", "bleed",
             "shed", "bed", "red", "wed", "weed", "greed", "based", "used", "interested", "excited", "tired"}
_PRONOUN_START = re.compile(r"^(?:It|Its|He|His|She|Her|They|Their|This|These|Those)\b")
_CORE_PARTICIPANTS, _CORE_DATE, _CORE_MENTIONED = "Participants:", "Latest date:", "Mentioned:"
_CORE_MAX_MENTIONED = 40
_NEW_ENTITIES_PER_CHUNK = 8


@dataclass(frozen=True)
class _Turn:
    speaker: str
    text: str
    when: date | None


@dataclass
class _Writes:
    """The calls of one reply, never repeating what the memory (or this reply) already holds."""

    state: MemoryState
    max_item_tokens: int
    counter: TokenCounter
    calls: list[ToolCall] = field(default_factory=list)
    seen: dict[MemoryKind, set[str]] = field(default_factory=dict)

    def insert(self, kind: MemoryKind, content: str) -> None:
        content = truncate_at_word(" ".join(content.split()), self.max_item_tokens, self.counter)
        if kind not in self.seen:
            self.seen[kind] = {item.content for item in self.state.items(kind)}
        seen = self.seen[kind]
        if not content or content in seen:
            return
        seen.add(content)
        self.calls.append(ToolCall(Tool.INSERT.value, {"memory_type": kind.tool_value, "content": content}))

    def replace_core(self, content: str) -> None:
        self.calls.append(
            ToolCall(Tool.UPDATE.value, {"memory_type": MemoryKind.CORE.tool_value, "new_content": content})
        )


class ExtractivePolicy:
    name = "extractive"

    def __init__(self, counter: TokenCounter, limits: MemoryLimits | None = None) -> None:
        self.counter = counter
        self.limits = limits or MemoryLimits()

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        started = time.perf_counter()
        calls = self.plan(state, chunk)
        return PolicyReply(
            calls=calls, raw_text=calls_as_json(calls), usage=Usage(), model=self.name,
            latency_s=time.perf_counter() - started, parse_errors=[], visible_items=0,
        )

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    def plan(self, state: MemoryState, chunk: str) -> list[ToolCall]:
        """The tool calls for one chunk: a pure function of (state, chunk)."""
        writes = _Writes(state, self.limits.max_item_tokens, self.counter)
        turns, rest = _dialogue(chunk)
        # Addressing each other by name ("Thanks, Mel!") is small talk too.
        names = {part.lower() for turn in turns for part in turn.speaker.split()}
        names |= {name[:3] for name in names}
        for turn in turns:
            self._write_turn(writes, turn, names)
        if rest.strip():
            self._write_prose(writes, rest, _header_date(rest))
        core = self._core(state.core, chunk, turns)
        if core is not None:
            writes.replace_core(core)
        return writes.calls

    # --- dialogue ---

    def _write_turn(self, writes: _Writes, turn: _Turn, names: set[str]) -> None:
        kept = [sentence for sentence in split_sentences(turn.text) if not is_filler(sentence, names)]
        if not kept:
            return
        body = " ".join(kept)
        if turn.when is not None:
            body = resolve_relative(body, turn.when)
            writes.insert(MemoryKind.EPISODIC, f"On {format_date(turn.when)}, {turn.speaker}: {body}")
        else:
            writes.insert(MemoryKind.EPISODIC, f"{turn.speaker}: {body}")
        for sentence in kept:
            if _FACT.match(sentence) and not sentence.rstrip().endswith("?"):
                fact = resolve_relative(sentence, turn.when) if turn.when else sentence
                writes.insert(MemoryKind.SEMANTIC, f"{turn.speaker}: {fact}")

    # --- prose ---

    def _write_prose(self, writes: _Writes, text: str, anchor: date | None) -> None:
        for paragraph in re.split(r"\n\s*\n", text):
            names = entities(paragraph)
            topic = names[0][0] if names else None
            for sentence in split_sentences(paragraph):
                if is_filler(sentence) or (anchor and _is_header(sentence)):
                    continue
                content = resolve_relative(sentence, anchor) if anchor else sentence
                if topic and _PRONOUN_START.match(sentence) and topic not in sentence:
                    content = f"({topic}) {content}"
                writes.insert(MemoryKind.EPISODIC if _is_event(sentence) else MemoryKind.SEMANTIC, content)

    # --- core ---

    def _core(self, core: str, chunk: str, turns: list[_Turn]) -> str | None:
        """The new core, or None when it stays as it is."""
        fields = _parse_core(core)
        if fields is None:
            return None
        participants, latest, mentioned = fields
        for turn in turns:
            if turn.speaker not in participants:
                participants.append(turn.speaker)
            if turn.when is not None and (latest is None or turn.when > latest):
                latest = turn.when
        known = {name.lower() for name in participants + mentioned}
        fresh = [
            name for name, count in entities(chunk)
            if count >= 2 and name.lower() not in known
            and not any(person.lower().startswith(name.lower()) for person in participants)  # nicknames
        ]
        mentioned = (mentioned + fresh[:_NEW_ENTITIES_PER_CHUNK])[-_CORE_MAX_MENTIONED:]
        while True:
            lines = []
            if participants:
                lines.append(f"{_CORE_PARTICIPANTS} {', '.join(participants)}.")
            if latest is not None:
                lines.append(f"{_CORE_DATE} {format_date(latest)}.")
            if mentioned:
                lines.append(f"{_CORE_MENTIONED} {', '.join(mentioned)}.")
            text = "\n".join(lines)
            if self.counter.count(text) <= self.limits.core_tokens or not mentioned:
                break
            mentioned = mentioned[1:]  # rolling: the oldest mentions go first
        return text if text and text != core else None


def _dialogue(chunk: str) -> tuple[list[_Turn], str]:
    """Dialogue turns of the chunk (when it has at least two) and the text that is not part of one."""
    turns: list[_Turn] = []
    other: list[str] = []
    anchor: date | None = None
    for line in chunk.splitlines():
        match = _TURN.match(line)
        if match and match.group("speaker").lower() not in _NOT_SPEAKERS and not _is_header(match.group("text")):
            stamp = match.group("stamp")
            when = (find_date(stamp) if stamp else None) or anchor
            turns.append(_Turn(match.group("speaker").strip(), match.group("text").strip(), when))
        elif _is_header(line):
            anchor = find_date(line)
            other.append(line)
        elif turns and line.strip():
            last = turns[-1]  # a turn that runs over several lines
            turns[-1] = _Turn(last.speaker, f"{last.text} {line.strip()}", last.when)
        else:
            other.append(line)
    if len(turns) < 2:
        return [], chunk
    return turns, "\n".join(line for line in other if not _is_header(line))


def _is_header(line: str) -> bool:
    """A short dated line that is not a sentence ("Session 3, 8 May 2023"); "I moved on 8 May." is an event."""
    text = line.strip()
    return (
        find_date(text) is not None and len(words(text)) <= _HEADER_MAX_WORDS and not text.endswith((".", "!", "?"))
    )


def _header_date(text: str) -> date | None:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return find_date(first) if _is_header(first) else None


def _is_event(sentence: str) -> bool:
    if mentions_time(sentence):
        return True
    if not _FIRST_PERSON.search(sentence):
        return False
    return any(match.group().lower() not in _NOT_PAST for match in _PAST.finditer(sentence))


def _parse_core(core: str) -> tuple[list[str], date | None, list[str]] | None:
    """The fields of a core in this writer's format; None for a core written by anyone else."""
    participants: list[str] = []
    mentioned: list[str] = []
    latest: date | None = None
    for line in core.splitlines():
        label, _, value = line.partition(": ")
        label = f"{label}:"
        value = value.rstrip(".")
        if label == _CORE_PARTICIPANTS:
            participants = [name for name in value.split(", ") if name]
        elif label == _CORE_DATE:
            latest = find_date(value)
        elif label == _CORE_MENTIONED:
            mentioned = [name for name in value.split(", ") if name]
        elif line.strip():
            return None
    return participants, latest, mentioned
