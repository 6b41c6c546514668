"""Sizes and seed of an episode build: every builder takes one `BuildConfig`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from app.memory import TokenCounter, WordTokenCounter

DEFAULT_CHUNK_TOKENS = 2048
CLASSIFICATION_CHUNK_TOKENS = 1024  # SPEC §3: classification sets use chunks of at most 1,024 tokens

T = TypeVar("T")


@dataclass(frozen=True)
class BuildConfig:
    data_dir: Path = Path("../shared/data")
    file: Path | None = None  # LoCoMo/SQuAD/HotpotQA: this file in the set's format instead of the dev file
    episodes: int | None = None  # None: as many as the data gives
    questions: int | None = None  # per episode; None: all
    chunk_tokens: int | None = None  # None: the data set's default (2,048; classification 1,024)
    seed: int = 0
    counter: TokenCounter = field(default_factory=WordTokenCounter)
    articles: int = 3  # SQuAD: articles shuffled together into one episode
    paragraphs: int | None = None  # SQuAD: first N paragraphs of each article; None: all
    episode_paragraphs: int = 3  # squad-multichunk: consecutive paragraphs of one article per episode
    records: int = 10  # HotpotQA: questions whose context paragraphs form one episode
    labels: int | None = None  # classification: labels per episode; None: all of the set
    shots: int = 5  # classification: labelled samples per label shown in the stream
    sessions: int | None = (
        None  # LoCoMo: first N sessions of each conversation (questions whose evidence lies in them)
    )

    def rng(self, dataset: str, episode: int = 0) -> random.Random:
        """One independent, reproducible stream per (seed, data set, episode)."""
        return random.Random(f"{self.seed}:{dataset}:{episode}")

    def source(self, default_file: str) -> Path:
        return self.file if self.file is not None else self.data_dir / default_file

    def chunk_limit(self, default: int = DEFAULT_CHUNK_TOKENS) -> int:
        return self.chunk_tokens if self.chunk_tokens is not None else default


def pick_questions(items: list[T], limit: int | None, rng: random.Random) -> list[T]:
    """A seeded sample of at most `limit` items, kept in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    chosen = sorted(rng.sample(range(len(items)), limit))
    return [items[index] for index in chosen]
