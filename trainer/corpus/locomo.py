"""LoCoMo conversations (snap-research/LoCoMo `locomo10.json` layout) as ordered, dated turns, chunks
for the memory policy and QA items.

Each turn becomes one line, `[<session date>] <speaker>: <text>`; a shared image adds its caption
(`[shared an image: …]`), since some questions are about the photos. Lines are packed into chunks of at
most N tokens and a turn is never split across chunks, except a single turn longer than N on its own,
which `split_text` cuts at sentence boundaries. QA categories: 1 multi-hop, 2 temporal, 3 open-domain,
4 single-hop, 5 adversarial (no `answer`; not scored).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from app.memory import TokenCounter, split_text

_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE_SESSION = re.compile(r"D(\d+):")
SCORED_CATEGORIES = frozenset({1, 2, 3, 4})


@dataclass(frozen=True)
class Turn:
    session: int
    date_time: str
    speaker: str
    dia_id: str
    text: str
    image_caption: str | None = None

    def line(self) -> str:
        image = f" [shared an image: {self.image_caption}]" if self.image_caption else ""
        return f"[{self.date_time}] {self.speaker}: {self.text}{image}"


@dataclass(frozen=True)
class QAItem:
    question: str
    answer: str | None  # None for category 5; numbers in the data become strings
    category: int
    evidence: tuple[str, ...] = ()
    adversarial_answer: str | None = None

    @property
    def scored(self) -> bool:
        return self.category in SCORED_CATEGORIES and self.answer is not None

    @property
    def sessions(self) -> frozenset[int]:
        """Sessions that hold the evidence (from dia ids such as `D3:13`)."""
        return frozenset(int(n) for ref in self.evidence for n in _EVIDENCE_SESSION.findall(ref))


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: tuple[Turn, ...]
    qa: tuple[QAItem, ...]

    @property
    def session_count(self) -> int:
        return max((turn.session for turn in self.turns), default=0)

    def first_sessions(self, count: int) -> Conversation:
        """The conversation cut after `count` sessions, keeping the QA items whose evidence lies in them."""
        return Conversation(
            self.sample_id,
            self.speaker_a,
            self.speaker_b,
            tuple(turn for turn in self.turns if turn.session <= count),
            tuple(qa for qa in self.qa if qa.sessions and max(qa.sessions) <= count),
        )

    def chunks(self, max_tokens: int, counter: TokenCounter) -> list[str]:
        return pack_lines([turn.line() for turn in self.turns], max_tokens, counter)


def pack_lines(lines: list[str], max_tokens: int, counter: TokenCounter) -> list[str]:
    """Greedily join lines (newline-separated) into chunks of at most `max_tokens`."""
    chunks: list[str] = []
    current: list[str] = []
    for line in lines:
        if counter.count(line) > max_tokens:
            if current:
                chunks.append("\n".join(current))
                current = []
            chunks.extend(split_text(line, max_tokens, counter))
            continue
        if current and counter.count("\n".join([*current, line])) > max_tokens:
            chunks.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append("\n".join(current))
    return chunks


def _turns(conversation: dict[str, object]) -> list[Turn]:
    sessions = sorted(
        (int(match.group(1)), key) for key in conversation if (match := _SESSION_KEY.fullmatch(key))
    )
    turns: list[Turn] = []
    for number, key in sessions:
        date_time = str(conversation.get(f"{key}_date_time", "")).strip()
        for raw in conversation[key] or []:  # type: ignore[attr-defined]
            caption = raw.get("blip_caption")
            turns.append(Turn(number, date_time, raw["speaker"], raw["dia_id"], raw["text"].strip(), caption))
    return turns


def _qa(raw: dict[str, object]) -> QAItem:
    answer = raw.get("answer")
    adversarial = raw.get("adversarial_answer")
    return QAItem(
        question=str(raw["question"]),
        answer=None if answer is None else str(answer),
        category=int(raw["category"]),  # type: ignore[arg-type]
        evidence=tuple(str(ref) for ref in raw.get("evidence", []) or []),  # type: ignore[union-attr]
        adversarial_answer=None if adversarial is None else str(adversarial),
    )


def load_locomo(path: str | Path) -> list[Conversation]:
    samples = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        Conversation(
            sample_id=str(sample["sample_id"]),
            speaker_a=str(sample["conversation"]["speaker_a"]),
            speaker_b=str(sample["conversation"]["speaker_b"]),
            turns=tuple(_turns(sample["conversation"])),
            qa=tuple(_qa(raw) for raw in sample.get("qa", [])),
        )
        for sample in samples
    ]


def load_conversation(path: str | Path, sample_id: str) -> Conversation:
    conversations = load_locomo(path)
    for conversation in conversations:
        if conversation.sample_id == sample_id:
            return conversation
    known = ", ".join(c.sample_id for c in conversations)
    raise KeyError(f"no conversation {sample_id!r} in {path} (has: {known})")


def is_locomo_file(path: str | Path) -> bool:
    """A JSON list whose records have `conversation` and `qa` (checked on the first record)."""
    if Path(path).suffix.lower() != ".json":
        return False
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], dict)
        and {"conversation", "qa"} <= data[0].keys()
    )
