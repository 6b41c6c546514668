"""The extractive policy: a deterministic memory writer without an LLM (ARCHITECTURE §3).

It is the paper's "fixed rules" baseline and the embedded default. It emits ordinary tool calls, so
the very same apply path runs as for an LLM policy. It stores information, not the transcript:
- dialogue (lines `[date] Speaker: text` or `Speaker: text` under a date line): each informative
  sentence becomes one self-contained fact, "I"/"my" replaced by the speaker's name and "you" by the
  other participant's (`app.policy.facts`), relative times resolved against the session date
  ("yesterday (7 May 2023)"). Events (past tense, time expressions) go to episodic memory, one item
  per turn (`On <date>, <fact> <fact>`: the turn's events stay together, the date written once),
  lasting facts to semantic memory, likewise one item per turn. Small talk (greetings, questions, sentences with
  nothing informative besides reactions and names) is dropped; a short reply keeps the question it
  answers in front ("Which team did John sign with: The Minnesota Wolves!");
- prose: sentences with a time expression or first-person past events → episodic, other informative
  sentences → semantic; a sentence that opens with a pronoun is prefixed with its paragraph's topic,
  in a titled paragraph ("Title: text", an article) every sentence that does not name the title;
- a fact that has one current value per person (where someone lives, their job, a favourite thing, a
  partner) updates the semantic item that held the old value instead of adding a contradicting one;
- a fact whose content words mostly repeat a stored item of its kind is not stored again;
- a short core: participants, latest date seen, and a profile line per person from those
  one-value facts — only while the core is empty or in this writer's own format (a core written by a
  user or an LLM is left alone);
- an item written from a reply turn carries, as index-only cues (`Item.cues`, never shown to the
  reader), the words of the question that turn answered which the item lacks: later questions tend to
  repeat the asking question's words ("What got you into running?"), not the reply's. The writer knows
  the question exactly — the other speaker's turn right before, ending with "?" — so no word overlap
  guesses it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import date

from app.memory.kinds import MemoryKind
from app.memory.limits import MemoryLimits
from app.memory.operations import Tool
from app.memory.state import MemoryState
from app.memory.stemming import stem
from app.memory.stopwords import STOPWORDS
from app.memory.tokens import TokenCounter, truncate_at_word
from app.memory.words import cues_for
from app.policy.backend import PolicyReply, Usage
from app.policy.dates import find_date, format_date, mentions_time, resolve_relative
from app.policy.facts import (
    REACTION_WORDS,
    Slot,
    content_words,
    near_duplicate,
    slot_of,
    small_talk,
    term_set,
    third_person,
    without_interjection,
)
from app.policy.parser import ToolCall, calls_as_json
from app.policy.sentences import entities, is_filler, split_sentences, words

_TURN = re.compile(
    r"^\s*(?:\[(?P<stamp>[^\]]{1,80})\]\s*)?(?P<speaker>[A-Z][\w.'’-]*(?: [A-Z][\w.'’-]*){0,2})\s*:\s*(?P<text>\S.*)$"
)
_NOT_SPEAKERS = {
    "date",
    "time",
    "session",
    "note",
    "title",
    "summary",
    "source",
    "question",
    "answer",
    "context",
}
_HEADER_MAX_WORDS = 12
_NUMBER = re.compile(r"\d")
_ABOUT_SOMEONE = re.compile(
    r"\b(?:I|[Ww]e|[Mm]y|[Oo]ur|me|us|[Yy]ou|[Yy]our|[Hh]e|[Ss]he|[Tt]hey|[Hh]is|[Hh]er|[Tt]heir|him|them)\b"
    # No subject: the speaker's own doing ("Researching adoption agencies …", "Just got a new job.").
    # A gerund that is the subject ("Parenting's such a big responsibility.") is a general remark.
    r"|^(?:\w+ing (?!(?:is|was|can|has|makes|helps)\b)|(?:[Jj]ust|[Gg]onna|[Gg]ot|[Ww]ent|[Ff]inally|[Rr]ecently|[Bb]een)\b)"
)
# A sentence that opens by pointing at something said before: a reply's answer more often than not.
_REFERENCE_START = re.compile(r"^(?:It|Its|That|This|These|Those|The|Some|One)\b")
_FIRST_PERSON = re.compile(r"\b(?:I|we|We|my|My|our|Our)\b")
_PAST = re.compile(
    r"\b(?:\w{3,}ed|went|got|saw|took|made|had|was|were|did|met|bought|ran|gave|came|began|found|left|told|said|"
    r"thought|felt|won|lost|wrote|read|heard|brought|kept|spent|sold|taught|caught|built|drove|flew|ate|drank|"
    r"swam|sang|became|knew|grew|threw|wore|chose|fell|rode|spoke|broke|forgot|paid|sent|sat|stood|woke|moved)\b"
)
_NOT_PAST = {
    "need",
    "feed",
    "seed",
    "speed",
    "indeed",
    "proceed",
    "succeed",
    "exceed",
    "embed",
    "breed",
    "bleed",
    "shed",
    "bed",
    "red",
    "wed",
    "weed",
    "greed",
    "based",
    "used",
    "interested",
    "excited",
    "tired",
}
_MAX_SPEAKERS = 3  # a chunk with more voices than this must have each speak twice on average
_TITLE = re.compile(r"^(?P<title>[A-Z0-9][^:\n]{0,80}?): ")
_PRONOUN_START = re.compile(r"^(?:It|Its|He|His|She|Her|They|Their|This|These|Those)\b")
_CORE_PARTICIPANTS, _CORE_DATE, _CORE_PROFILE = "Participants:", "Latest date:", "Profile of "
_CORE_TOPICS = "Topics:"  # prose: the entities named most often (dialogue: its participants instead)
_CORE_MENTIONED = "Mentioned:"  # the previous format's entity list: read (dropped), no longer written
_CORE_MAX_TOPICS = 12
_RECENT_FOR_DUPLICATES = 400  # items of a kind compared for near-duplicates (the most recent ones)
_SHORT_REPLY_WORDS = 4  # a reply's first fact with at most this many content words keeps the question
_QUESTION_WORDS = 2  # informative words a question needs to be worth keeping ("How are you?" has none)
_TOPIC_WORDS = 3  # … to name the topic of a long reply that does not repeat it ("Anything new?" does not)
_DATE_PREFIX = re.compile(r"^On [^,]{1,40}, ")


@dataclass(frozen=True)
class _Turn:
    speaker: str
    text: str
    when: date | None


@dataclass
class _Writes:
    """The calls of one reply: no exact or near-duplicate of what the memory (or this reply) holds, and
    a one-value fact updates the item that held the old value."""

    state: MemoryState
    max_item_tokens: int
    counter: TokenCounter
    calls: list[ToolCall] = field(default_factory=list)
    seen: dict[MemoryKind, list[frozenset[str]]] = field(default_factory=dict)
    slots: dict[tuple[str, str], str] | None = None  # (person, slot) → the item id holding its value
    pending: dict[tuple[str, str], int] = field(default_factory=dict)  # … → index of this reply's insert

    def insert(self, kind: MemoryKind, content: str, question: str | None = None) -> None:
        """`question`: the question the content answers (its words become the item's cues)."""
        content = truncate_at_word(" ".join(content.split()), self.max_item_tokens, self.counter)
        if not content:
            return
        if kind is MemoryKind.SEMANTIC and (slot := stated_slot(content)) is not None:
            self._supersede(slot.key, content, question)
            return
        if self._new_fact(kind, term_set(content)):
            self._append(kind, content, question)

    def insert_facts(
        self, kind: MemoryKind, facts: list[str], prefix: str = "", question: str | None = None
    ) -> None:
        """A turn's facts of one kind as one item (`prefix`, e.g. its date, written once): each fact
        is checked for near-duplicates on its own; too long for one item, each fact is its own."""
        fresh = [
            fact
            for fact in (" ".join(fact.split()) for fact in facts)
            if fact and self._new_fact(kind, term_set(f"{prefix}{fact}"))
        ]
        if not fresh:
            return
        content = f"{prefix}{' '.join(fresh)}"
        if self.counter.count(content) <= self.max_item_tokens:
            self._append(kind, content, question)
            return
        for fact in fresh:
            self._append(
                kind, truncate_at_word(f"{prefix}{fact}", self.max_item_tokens, self.counter), question
            )

    def _new_fact(self, kind: MemoryKind, terms: frozenset[str]) -> bool:
        """Not an exact or near-duplicate of a fact of this kind that memory (or this reply) holds; a
        new fact is remembered for the next comparison."""
        if kind not in self.seen:
            self.seen[kind] = [
                terms
                for item in self.state.items(kind)[-_RECENT_FOR_DUPLICATES:]
                for terms in _fact_terms(item.content)
            ]
        recent = self.seen[kind]
        if terms in recent or near_duplicate(terms, recent):
            return False
        recent.append(terms)
        return True

    def _append(self, kind: MemoryKind, content: str, question: str | None) -> None:
        arguments = {"memory_type": kind.tool_value, "content": content}
        self.calls.append(ToolCall(Tool.INSERT.value, _with_cues(arguments, question)))

    def _supersede(self, slot: tuple[str, str], content: str, question: str | None) -> None:
        if self.slots is None:
            self.slots = {}
            for item in self.state.semantic:  # the latest item of a slot holds its value
                if (held := stated_slot(item.content)) is not None:
                    self.slots[held.key] = item.id
        kind = MemoryKind.SEMANTIC.tool_value
        if slot in self.pending:  # written earlier in this very reply: replace that write
            call = self.calls[self.pending[slot]]
            call.arguments["content" if call.name == Tool.INSERT.value else "new_content"] = content
            call.arguments.pop("cues", None)
            _with_cues(call.arguments, question, content)
            return
        self.pending[slot] = len(self.calls)
        item_id = self.slots.get(slot)
        if item_id is None:
            arguments = {"memory_type": kind, "content": content}
            self.calls.append(ToolCall(Tool.INSERT.value, _with_cues(arguments, question)))
        elif next(item.content for item in self.state.semantic if item.id == item_id) != content:
            # The update's own cues (or none): the old value's question is not this one's.
            arguments = {"memory_type": kind, "memory_id": item_id, "new_content": content}
            self.calls.append(ToolCall(Tool.UPDATE.value, _with_cues(arguments, question, content)))
        else:
            del self.pending[slot]

    def replace_core(self, content: str) -> None:
        self.calls.append(
            ToolCall(Tool.UPDATE.value, {"memory_type": MemoryKind.CORE.tool_value, "new_content": content})
        )


class ExtractivePolicy:
    name = "extractive"
    view_items: int | None = None  # slots and profiles read every semantic item

    def __init__(self, counter: TokenCounter, limits: MemoryLimits | None = None) -> None:
        self.counter = counter
        self.limits = limits or MemoryLimits()

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        started = time.perf_counter()
        # CPU work proportional to the chunk (up to ~100 ms for the largest): a thread keeps the
        # event loop, and with it every other request, responsive.
        calls = await asyncio.to_thread(self.plan, state, chunk)
        return PolicyReply(
            calls=calls,
            raw_text=calls_as_json(calls),
            usage=Usage(),
            model=self.name,
            latency_s=time.perf_counter() - started,
            parse_errors=[],
            visible_items=0,
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
        fields = _parse_core(state.core)
        participants = list(dict.fromkeys([*(fields[0] if fields else []), *(t.speaker for t in turns)]))
        for number, turn in enumerate(turns):
            others = [name for name in participants if name != turn.speaker]
            other = others[0] if len(others) == 1 else None
            self._write_turn(writes, turn, names, other, turns[number - 1] if number else None)
        if rest.strip():
            self._write_prose(writes, rest, _header_date(rest))
        core = self._core(state, writes, turns, rest if rest.strip() else "")
        if core is not None:
            writes.replace_core(core)
        return writes.calls

    # --- dialogue ---

    def _write_turn(
        self, writes: _Writes, turn: _Turn, names: set[str], other: str | None, previous: _Turn | None
    ) -> None:
        """The question the `previous` turn asked, which this turn replies to: when it asks about
        something, kept in front of a short first fact ("Which team did John sign with: The Minnesota
        Wolves!"); its words are the cues of every item the turn writes."""
        question = _question(previous, turn) if previous is not None else None
        asked = _asked(question, previous, turn, names) if previous is not None else None
        grouped: dict[MemoryKind, list[str]] = {MemoryKind.SEMANTIC: [], MemoryKind.EPISODIC: []}
        for sentence in split_sentences(turn.text):
            if small_talk(sentence, names):
                continue
            fact = third_person(without_interjection(sentence), turn.speaker, other)
            if turn.when is not None:
                fact = resolve_relative(fact, turn.when)
            if asked is not None:
                # A reply says what it is about when it is long and repeats the question's words;
                # otherwise the question is what a later search will name ("What got you into running?").
                said, topic = _terms(fact, names), _terms(asked, names)
                pointing = bool(_REFERENCE_START.match(fact) or _PRONOUN_START.match(fact))
                if len(said) <= _SHORT_REPLY_WORDS or (
                    (pointing or len(topic) >= _TOPIC_WORDS) and not said & topic
                ):
                    fact = f"{asked.rstrip('?').rstrip()}: {fact}"
                asked = None  # only the reply's first fact answers it
            slot = slot_of(fact)
            if slot is not None:  # the current value in its fixed phrasing; a move is an event as well
                since = f" (as of {format_date(turn.when)})" if turn.when is not None else ""
                writes.insert(MemoryKind.SEMANTIC, f"{slot.statement}{since}.", question)
                if _is_event(sentence) and turn.when is not None:
                    grouped[MemoryKind.EPISODIC].append(fact)
            elif _is_event(sentence):
                grouped[MemoryKind.EPISODIC].append(fact)
            elif _anchored(sentence):
                grouped[MemoryKind.SEMANTIC].append(fact)
        # One item per turn and kind: the turn's facts stay together, as in the raw passage a
        # question's words may be spread over (the answer sentence and the one that names its topic);
        # the date is written once.
        writes.insert_facts(MemoryKind.SEMANTIC, grouped[MemoryKind.SEMANTIC], question=question)
        dated = f"On {format_date(turn.when)}, " if turn.when is not None else ""
        writes.insert_facts(MemoryKind.EPISODIC, grouped[MemoryKind.EPISODIC], dated, question)

    # --- prose ---

    def _write_prose(self, writes: _Writes, text: str, anchor: date | None) -> None:
        for paragraph in re.split(r"\n\s*\n", text):
            titled = _TITLE.match(paragraph)
            names = entities(paragraph)
            topic = titled.group("title") if titled else names[0][0] if names else None
            for sentence in split_sentences(paragraph):
                if is_filler(sentence) or (anchor and _is_header(sentence)):
                    continue
                content = resolve_relative(sentence, anchor) if anchor else sentence
                # A titled paragraph (an article's "Title: text") is about its title throughout: a
                # sentence read alone must still say what it is about ("(End of Days) The film follows …").
                if topic and not _names_topic(sentence, topic) and (titled or _PRONOUN_START.match(sentence)):
                    content = f"({topic}) {content}"
                writes.insert(MemoryKind.EPISODIC if _is_event(sentence) else MemoryKind.SEMANTIC, content)

    # --- core ---

    def _core(self, state: MemoryState, writes: _Writes, turns: list[_Turn], prose: str) -> str | None:
        """The new core (participants, latest date, prose topics, a profile line per person), or None
        when it stays."""
        fields = _parse_core(state.core)
        if fields is None:
            return None
        participants, latest, topics = fields
        known = {topic.lower() for topic in topics}
        for name, count in entities(prose):
            # A run across a sentence end ("Evan. It's") is not a name.
            if count >= 2 and "." not in name and name.lower() not in known:
                topics.append(name)
                known.add(name.lower())
        topics = topics[:_CORE_MAX_TOPICS]  # the first topics of a text are its subject
        for turn in turns:
            if turn.speaker not in participants:
                participants.append(turn.speaker)
            if turn.when is not None and (latest is None or turn.when > latest):
                latest = turn.when
        profiles = _profiles(state, writes)
        while True:
            lines = []
            if participants:
                lines.append(f"{_CORE_PARTICIPANTS} {', '.join(participants)}.")
            if latest is not None:
                lines.append(f"{_CORE_DATE} {format_date(latest)}.")
            if topics:
                lines.append(f"{_CORE_TOPICS} {', '.join(topics)}.")
            lines += [f"{_CORE_PROFILE}{who}: {'; '.join(facts)}." for who, facts in profiles.items()]
            text = "\n".join(lines)
            if self.counter.count(text) <= self.limits.core_tokens or not profiles:
                break
            profiles.pop(next(iter(profiles)))  # over the limit: the first-profiled person goes first
        return text if text and text != state.core else None


def _question(previous: _Turn, turn: _Turn) -> str | None:
    """The question `turn` replies to: the last sentence of the previous turn, when another speaker's
    and it ends with "?"."""
    if previous.speaker == turn.speaker:
        return None
    sentences = split_sentences(previous.text)
    question = without_interjection(sentences[-1]) if sentences else ""
    return question if question.endswith("?") else None


def _with_cues(arguments: dict[str, str], question: str | None, content: str | None = None) -> dict[str, str]:
    """`arguments` with `cues` (the words of `question` the content lacks) when there are any."""
    cues = cues_for(question, content or arguments["content"]) if question else ""
    if cues:
        arguments["cues"] = cues
    return arguments


def _asked(question: str | None, previous: _Turn, turn: _Turn, names: set[str]) -> str | None:
    """`question` (asked by `previous`) in the third person ("you" is `turn`'s speaker), when it asks
    about something (not "How are you?")."""
    if question is None:
        return None
    informative = [word for word in content_words(question, names) if word not in REACTION_WORDS]
    if len(informative) < _QUESTION_WORDS:
        return None
    return third_person(question, previous.speaker, turn.speaker)


def _names_topic(sentence: str, topic: str) -> bool:
    """The sentence names its paragraph's topic, or part of it ("The Catamounts, led by …" under
    "2011–12 Vermont Catamounts men's basketball team")."""
    names = {word for word in re.findall(r"\b[A-Z][\w'’-]*", topic) if word.lower() not in STOPWORDS}
    return topic in sentence or bool(names & set(re.findall(r"\b[A-Z][\w'’-]*", sentence)))


def _terms(text: str, names: set[str]) -> set[str]:
    return {stem(word) for word in content_words(text, names)}


def _fact_terms(content: str) -> list[frozenset[str]]:
    """The term sets of an item's facts (its sentences), each with the item's date prefix, as a new
    fact is compared with its own prefix."""
    prefix = _DATE_PREFIX.match(content)
    head = prefix.group() if prefix else ""
    body = content[len(head) :]
    return [term_set(f"{head}{sentence}") for sentence in split_sentences(body)] or [term_set(content)]


def stated_slot(content: str) -> Slot | None:
    """The slot of an item this writer stated in the slot's fixed phrasing (`Ana lives in Oslo (as of
    …).`); None for any other item, e.g. a prose sentence that mentions where someone lives."""
    slot = slot_of(content)
    if slot is None or content.removesuffix(".").split(" (as of ")[0] != slot.statement:
        return None
    return slot


def _profiles(state: MemoryState, writes: _Writes) -> dict[str, list[str]]:
    """Each person's one-value facts (latest value per slot), as clauses without the name."""
    contents = [item.content for item in state.semantic]
    contents += [
        call.arguments.get("content") or call.arguments.get("new_content", "")
        for call in writes.calls
        if call.arguments.get("memory_type") == MemoryKind.SEMANTIC.tool_value
    ]
    latest: dict[tuple[str, str], Slot] = {}
    for content in contents:
        if (slot := stated_slot(content)) is not None:
            latest[slot.key] = slot
    profiles: dict[str, list[str]] = {}
    for slot in latest.values():
        profiles.setdefault(slot.who, []).append(slot.clause)
    return profiles


def _dialogue(chunk: str) -> tuple[list[_Turn], str]:
    """Dialogue turns of the chunk (when it has at least two) and the text that is not part of one."""
    turns: list[_Turn] = []
    other: list[str] = []
    anchor: date | None = None
    spaced = False  # a blank line between two turns
    for line in chunk.splitlines():
        spaced = spaced or (bool(turns) and not line.strip())
        match = _TURN.match(line)
        if (
            match
            and match.group("speaker").lower() not in _NOT_SPEAKERS
            and not _is_header(match.group("text"))
        ):
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
    speakers = {turn.speaker for turn in turns}
    # A conversation has few voices that take turns; "Title: text" paragraphs (articles) each have
    # their own "speaker", or all one, and stand apart: they are prose.
    articles = spaced and (len(speakers) == 1 or len(speakers) == len(turns))
    if len(turns) < 2 or articles or len(speakers) > max(_MAX_SPEAKERS, len(turns) // 2):
        return [], chunk
    return turns, "\n".join(line for line in other if not _is_header(line))


def _is_header(line: str) -> bool:
    """A short dated line that is not a sentence ("Session 3, 8 May 2023"); "I moved on 8 May." is an event."""
    text = line.strip()
    return (
        find_date(text) is not None
        and len(words(text)) <= _HEADER_MAX_WORDS
        and not text.endswith((".", "!", "?"))
    )


def _header_date(text: str) -> date | None:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return find_date(first) if _is_header(first) else None


def _anchored(sentence: str) -> bool:
    """A lasting fact in dialogue is about someone or something: the speakers ("I", "you", "we"), a
    person ("he", "they"), a name, a number, or a thing the conversation is about, opened by a reference
    to it ("It's a mix of drama and romance!", "The doctor said it's not too serious."). Without one it
    is a general remark ("Parenting's such a big responsibility.")."""
    return bool(
        _ABOUT_SOMEONE.search(sentence)
        or _NUMBER.search(sentence)
        or _REFERENCE_START.match(without_interjection(sentence))
        or entities(sentence)
    )


def _is_event(sentence: str) -> bool:
    if mentions_time(sentence):
        return True
    if not _FIRST_PERSON.search(sentence):
        return False
    return any(match.group().lower() not in _NOT_PAST for match in _PAST.finditer(sentence))


def _parse_core(core: str) -> tuple[list[str], date | None, list[str]] | None:
    """Participants, latest date and topics of a core in this writer's format; None for a core
    written by anyone else."""
    participants: list[str] = []
    topics: list[str] = []
    latest: date | None = None
    for line in core.splitlines():
        label, _, value = line.partition(": ")
        label = f"{label}:"
        value = value.rstrip(".")
        if label == _CORE_PARTICIPANTS:
            participants = [name for name in value.split(", ") if name]
        elif label == _CORE_DATE:
            latest = find_date(value)
        elif label == _CORE_TOPICS:
            topics = [name for name in value.split(", ") if name]
        elif label == _CORE_MENTIONED or line.startswith(_CORE_PROFILE):
            continue  # rebuilt from memory on every write
        elif line.strip():
            return None
    return participants, latest, topics
