"""An evaluation/training episode: a stream of chunks to memorise and the questions asked afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QA:
    question: str
    answer: str | list[str]  # a list means "any of these" (SQuAD's several gold spans)
    category: int | None = None  # LoCoMo's category 1-4; None elsewhere
    query: str | None = None  # what retrieval searches, when the question carries a task hint

    @property
    def answers(self) -> list[str]:
        return list(self.answer) if isinstance(self.answer, list) else [self.answer]


@dataclass
class Episode:
    instance_id: str
    data_source: str  # selects the scorer and the answer hint (SPEC §5)
    chunks: list[str]
    questions: list[QA]
    metadata: dict[str, Any] = field(default_factory=dict)
