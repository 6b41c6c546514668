"""The episode runner and the raw-stream baselines, on the real engine (extractive policy and answerer,
and a scripted in-process policy backend for the recording paths)."""

from __future__ import annotations

import pytest
from shared_data import DATA

from app.memory import Applier, MemoryLimits, MemoryState, WordTokenCounter
from app.policy import ExtractivePolicy, PolicyError, PolicyReply, ToolCall, Usage
from app.qa import ExtractiveAnswerer
from app.retrieval import Retriever
from trainer.episodes import QA, BuildConfig, Episode, build_episodes
from trainer.evaluate.baselines import run_rag_raw, run_stream_baseline, tail
from trainer.evaluate.evidence import evidence_recall
from trainer.runner import QASettings, memory_tokens, run_episode

COUNTER = WordTokenCounter()
LIMITS = MemoryLimits()


class ScriptedPolicy:
    """A PolicyBackend that replays fixed replies per chunk index (a reply may be an exception)."""

    name = "scripted"
    view_items: int | None = None

    def __init__(self, replies: list[list[ToolCall] | Exception]) -> None:
        self.replies = replies
        self.seen: list[tuple[int, str]] = []  # (items in memory when asked, chunk)

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        reply = self.replies[len(self.seen)]
        self.seen.append((len(state.semantic) + len(state.episodic), chunk))
        if isinstance(reply, Exception):
            raise reply
        return PolicyReply(
            calls=reply,
            raw_text=f"reply {len(self.seen)}",
            usage=Usage(100, 20),
            model=model or "scripted-model",
            latency_s=0.01,
            parse_errors=[],
            visible_items=5,
        )

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def insert(kind: str, content: str) -> ToolCall:
    return ToolCall("new_memory_insert", {"memory_type": kind, "content": content})


EPISODE = Episode(
    "toy",
    "squad",
    [
        "The lighthouse of Varne was built in 1841 by Tobias Reed.",
        "Marta Quill painted the harbour gates blue in 1902.",
        "The Varne ferry carries forty passengers to Elsworth island.",
    ],
    [
        QA("Who built the lighthouse of Varne?", ["Tobias Reed"]),
        QA("What colour did Marta Quill paint the harbour gates?", ["blue"]),
        QA("How many passengers does the Varne ferry carry?", ["forty"]),
    ],
)


async def test_runner_applies_calls_in_order_and_records_every_step() -> None:
    policy = ScriptedPolicy(
        [
            [
                insert("semantic_memory", "The lighthouse of Varne was built in 1841 by Tobias Reed."),
                ToolCall(
                    "memory_update", {"memory_type": "core_memory", "new_content": "Varne: a harbour town."}
                ),
                ToolCall("memory_delete", {"memory_type": "semantic_memory", "memory_id": "zzzz"}),
            ],
            PolicyError("endpoint down"),
            [
                insert("episodic_memory", "In 1902 Marta Quill painted the harbour gates blue."),
                insert("episodic_memory", "In 1902 Marta Quill painted the harbour gates blue."),
            ],
        ]
    )
    run = await run_episode(
        EPISODE,
        policy,
        method="scripted",
        applier=Applier(LIMITS, COUNTER),
        answerer=ExtractiveAnswerer(),
        retriever=Retriever(),
        qa=QASettings(k=5, budget_tokens=2000),
        counter=COUNTER,
        step_extras=lambda reply: {"raw": reply.raw_text},
    )
    assert [seen for seen, _ in policy.seen] == [0, 1, 1]  # each call sees the previous chunks' writes
    first, failed, third = run.steps
    assert [r.status for r in first.results] == ["ok", "ok", "error"]
    assert (
        first.extras == {"raw": "reply 1"} and first.prompt_tokens == 100 and first.model == "scripted-model"
    )
    assert failed.error == "endpoint down" and failed.results == [] and failed.extras is None
    assert [r.status for r in third.results] == ["ok", "skipped"]
    assert run.state is not None and run.state.core == "Varne: a harbour town."
    assert run.memory_tokens == memory_tokens(run.state, COUNTER)
    assert run.input_tokens == sum(COUNTER.count(chunk) for chunk in EPISODE.chunks)
    assert run.policy_calls == 3 and run.llm_tokens == 240  # the failed call counts as a call
    # Memory lost the ferry (its chunk's call failed): the reader cannot find it; the others it can.
    assert [a.evidence_recall for a in run.answers] == [1.0, 1.0, 0.0]
    assert [a.score for a in run.answers][:2] == [1.0, 1.0] and run.answers[2].score == 0.0


async def test_extractive_policy_on_real_episode() -> None:
    episode = build_episodes(
        "squad",
        BuildConfig(
            data_dir=DATA,
            counter=COUNTER,
            episodes=1,
            articles=2,
            paragraphs=3,
            questions=5,
            chunk_tokens=200,
        ),
    )[0]
    run = await run_episode(
        episode,
        ExtractivePolicy(COUNTER, LIMITS),
        method="extractive",
        applier=Applier(LIMITS, COUNTER),
        answerer=ExtractiveAnswerer(),
        retriever=Retriever(),
        qa=QASettings(),
        counter=COUNTER,
    )
    assert len(run.steps) == len(episode.chunks) and all(step.error is None for step in run.steps)
    assert all(len(step.results) == len(step.calls) for step in run.steps)
    assert run.state is not None and run.state.semantic
    assert len(run.answers) == 5 and all(0.0 <= a.score <= 1.0 for a in run.answers)
    assert run.llm_calls == 0 and run.score is not None
    assert sum(a.evidence_recall for a in run.answers) >= 3  # the writer keeps most facts verbatim


async def test_rag_raw_fits_the_budget_and_finds_the_right_chunk() -> None:
    budget = 178  # the prompt with one chunk fits (~173 tokens), with all three it does not (~197)
    run = await run_rag_raw(
        EPISODE,
        answerer=ExtractiveAnswerer(),
        qa=QASettings(k=20, budget_tokens=budget),
        counter=COUNTER,
        retriever=Retriever(),
    )
    assert run.memory_tokens == run.input_tokens and run.compression == 0.0
    for answer in run.answers:
        assert answer.context_tokens <= budget and answer.k >= 1
        assert answer.evidence_recall == 1.0 and answer.score == 1.0
    wide = await run_rag_raw(
        EPISODE,
        answerer=ExtractiveAnswerer(),
        qa=QASettings(k=20, budget_tokens=10_000),
        counter=COUNTER,
        retriever=Retriever(),
    )
    assert all(answer.k == 20 for answer in wide.answers)
    assert all(a.k == 1 for a in run.answers)  # the tight budget shrank k to one chunk


def test_tail_keeps_the_last_tokens_in_stream_order() -> None:
    chunks = ["one two three four", "five six", "seven eight nine"]
    assert tail(chunks, 5, COUNTER) == ["five six", "seven eight nine"]
    assert tail(chunks, 6, COUNTER) == ["four", "five six", "seven eight nine"]
    assert tail(chunks, 100, COUNTER) == chunks


async def test_long_context_sees_only_the_end_and_full_context_skips_what_does_not_fit() -> None:
    qa = QASettings(budget_tokens=182)  # room for the last two chunks only
    long = await run_stream_baseline(
        EPISODE, method="long-context", answerer=ExtractiveAnswerer(), qa=qa, counter=COUNTER
    )
    assert all(answer.context_tokens <= 182 for answer in long.answers)
    assert [a.evidence_recall for a in long.answers] == [0.0, 1.0, 1.0]  # the first chunk fell out
    skipped = await run_stream_baseline(
        EPISODE, method="full-context", answerer=ExtractiveAnswerer(), qa=qa, counter=COUNTER
    )
    assert skipped.skipped and skipped.answers == []
    full = await run_stream_baseline(
        EPISODE,
        method="full-context",
        answerer=ExtractiveAnswerer(),
        qa=QASettings(budget_tokens=5000),
        counter=COUNTER,
    )
    assert full.skipped is None and [a.score for a in full.answers] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("source", "context", "answers", "category", "expected"),
    [
        ("squad", "It was built by Tobias Reed.", ["tobias reed", "Reed"], None, 1.0),
        ("hotpotqa", "Nothing relevant.", ["Reed"], None, 0.0),
        ("banking77", "Sample: where is my card; Label: 12", ["12"], None, 1.0),
        ("banking77", "Sample: where is my card; Label: 120", ["12"], None, 0.0),
        ("locomo", "On 7 May 2023 Caroline went to the support group.", ["7 May 2023"], 2, 1.0),
        ("locomo", "Caroline paints landscapes.", ["Psychology, counseling"], 3, 0.0),
        ("locomo", "She studies psychology.", ["Psychology; counseling certification"], 3, 1.0),
    ],
)
def test_evidence_recall(
    source: str, context: str, answers: list[str], category: int | None, expected: float
) -> None:
    assert evidence_recall(source, context, answers, category=category) == expected
