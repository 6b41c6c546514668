"""Real text for benchmarks: sentences (SQuAD paragraphs, LoCoMo turns) to fill memories with, and real
questions to query them with, drawn reproducibly."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.memory import Item, MemoryState, item_id
from trainer.corpus.locomo import load_locomo

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SQUAD_FILE = "squad/squad_dev_v1.1_articles_00-23.json"
LOCOMO_FILE = "locomo/locomo_dev.json"


@dataclass(frozen=True)
class TextPool:
    sentences: list[str]
    questions: list[str]
    paragraphs: list[str]  # SQuAD paragraphs and LoCoMo turn lines, in reading order

    def items(self, count: int, seed: int = 0) -> list[str]:
        """`count` distinct memory contents: single sentences while the pool lasts, then pairs."""
        rng = random.Random(seed)
        if count <= len(self.sentences):
            return rng.sample(self.sentences, count)
        out = dict.fromkeys(self.sentences)
        while len(out) < count:
            out[f"{rng.choice(self.sentences)} {rng.choice(self.sentences)}"] = None
        return list(out)[:count]

    def memory(self, count: int, seed: int = 0) -> MemoryState:
        """A memory with `count` items, split evenly between semantic and episodic."""
        now = datetime.now(UTC)
        contents = self.items(count, seed)
        items = [Item(item_id(n), content, now, now, n) for n, content in enumerate(contents)]
        half = count // 2
        return MemoryState(
            core="", semantic=items[:half], episodic=items[half:], version=count, next_item=count
        )


def load_pool(data_dir: Path) -> TextPool:
    squad = json.loads((data_dir / SQUAD_FILE).read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"].strip() for article in squad for p in article["paragraphs"]]
    questions = [
        qa["question"].strip() for article in squad for p in article["paragraphs"] for qa in p["qas"]
    ]
    lines = [
        turn.line() for conversation in load_locomo(data_dir / LOCOMO_FILE) for turn in conversation.turns
    ]
    sentences = [s.strip() for p in paragraphs for s in _SENTENCE_END.split(p) if len(s.split()) >= 4]
    sentences += [line for line in lines if len(line.split()) >= 8]
    return TextPool(list(dict.fromkeys(sentences)), questions, paragraphs + lines)
