"""The extractive answer on a given memory is the same in every process. A sentence's support is a sum
of its question terms' weights; summed in the iteration order of a set of strings, its last bit
depended on the process's string-hash seed, so an exact tie (two sentences with equally weighted terms)
went to either sentence by chance instead of by the documented tie-breaks (found as one answer of 770
differing between two evaluations of the same model: docs/results/grpo-squad)."""

from __future__ import annotations

import os
import subprocess
import sys

# Two sentences hold four question terms each, "turing" against "theory", both in 4 of the 6 items:
# equal support, so the item with the higher BM25 score wins (the shorter one). Under the old
# summation, hash seed 4 of 0–5 answered with the other sentence.
SCRIPT = """
import asyncio
from datetime import UTC, datetime
from app.memory import Applier, MemoryLimits, MemoryState, Operation, WordTokenCounter
from app.qa import ExtractiveAnswerer, answer_question
from app.retrieval import Retriever

counter = WordTokenCounter()
state = MemoryState()
texts = [
    "model tape problem state theory.",
    "tape model theory turing state.",
    "state model complexity symbol turing random problem machine class.",
    "turing define compute symbol random algorithm complexity.",
    "theory symbol define algorithm complexity.",
    "class machine theory random turing.",
]
applier = Applier(MemoryLimits(), counter)
for text in texts:
    op = Operation("new_memory_insert", "semantic_memory", text)
    assert applier.apply(state, op, now=datetime(2026, 1, 1, tzinfo=UTC)).status == "ok"
result = asyncio.run(
    answer_question(
        state,
        "Which complexity class do Turing machines define in theory of algorithm problem?",
        retriever=Retriever(scorer="okapi"),
        answerer=ExtractiveAnswerer(),
        k=20,
        budget_tokens=30_000,
        counter=counter,
    )
)
print(result.answer)
"""


def test_the_extractive_answer_does_not_depend_on_the_string_hash_seed() -> None:
    answers = {}
    for seed in range(6):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True
        )
        answers[seed] = done.stdout.strip()
    assert set(answers.values()) == {"theory symbol define algorithm complexity."}, answers
