"""The shapes of a replay: request, report and status (the API and the client use these). Gold answers
are echoed next to both memories' answers; scoring them is evaluation, done by `memalpha replay`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

# queued: waits for a replay slot (replays run one at a time per process)
ReplayState = Literal["queued", "running", "done", "failed"]


class ReplayQuestion(BaseModel):
    question: str = Field(min_length=1)
    answer: str | list[str] | None = Field(default=None, description="gold answer; omit for questions only")


class ReplayRequest(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "policy": "qwen-json",
                    "questions": [
                        {
                            "question": "When did Caroline go to the support group?",
                            "answer": "7 May 2023",
                        }
                    ],
                }
            ]
        }
    }

    policy: str = Field(min_length=1, description="a registered policy version to replay under")
    questions: list[ReplayQuestion] = Field(default_factory=list, max_length=500)


class DiffItem(BaseModel):
    kind: str
    id: str
    content: str


class ChangedItem(BaseModel):
    kind: str
    live_id: str
    replay_id: str
    live: str
    replay: str
    similarity: float = Field(description="word-set Jaccard of the two texts (pairs from 0.5 up)")


class MemoryDiff(BaseModel):
    core_changed: bool
    live_core: str
    replay_core: str
    same: int = Field(description="items with identical text in both memories")
    only_live: list[DiffItem]
    only_replay: list[DiffItem]
    changed: list[ChangedItem]


class SideStats(BaseModel):
    memory_tokens: int
    items: dict[str, int] = Field(description="item counts by kind")
    operations: dict[str, int] = Field(
        description="policy operations by `tool/status`, e.g. new_memory_insert/ok"
    )


class ChunkFailure(BaseModel):
    seq: int
    error: str


class AnswerPair(BaseModel):
    question: str
    gold: str | list[str] | None
    live: str
    replay: str


class ReplayReport(BaseModel):
    policy: str
    model: str | None = Field(description="the model that answered the replay's policy calls")
    chunks_replayed: int
    chunks_skipped: int = Field(description="chunks not done in the live session (pending or failed)")
    parse_errors: int
    parse_error_samples: list[str]
    policy_failures: list[ChunkFailure] = Field(description="chunks the replayed policy could not process")
    live: SideStats
    replay: SideStats
    diff: MemoryDiff
    answers: list[AnswerPair]
    policy_latency_s: float


class ReplayStatus(BaseModel):
    id: str
    session_id: str
    policy: str
    status: ReplayState
    started_at: datetime
    finished_at: datetime | None
    chunks_total: int
    chunks_done: int
    error: str | None
    report: ReplayReport | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class ReplayList(BaseModel):
    replays: list[ReplayStatus]
