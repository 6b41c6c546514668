"""The budget sweep's two LoCoMo memories per conversation, for the benches that take its contexts
apart: the extractive writer's memory and the raw stream as passages (`trainer.evaluate.sweep`'s
rag-raw), written the way the sweep writes them."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

from app.backends import make_policy
from app.memory import MemoryState
from app.settings import Settings
from trainer.episodes import BuildConfig, Episode, build_episodes
from trainer.episodes.locomo import DEFAULT_FILE
from trainer.evaluate.baselines import raw_memory
from trainer.evaluate.harness import applier_for
from trainer.evaluate.sweep import CachedCounter, passages
from trainer.runner import write_memory


def locomo_file(data_dir: str) -> Path:
    return BuildConfig(data_dir=Path(data_dir)).source(DEFAULT_FILE)


async def locomo_states(
    data_dir: str, episodes: int, counter: CachedCounter, passage_tokens: int
) -> AsyncIterator[tuple[Episode, dict[str, MemoryState]]]:
    """Each of the first `episodes` conversations with its `memory` and `rag-raw` states."""
    settings = Settings(policy_backend="extractive", answerer_backend="extractive")
    build = BuildConfig(data_dir=Path(data_dir), episodes=episodes, counter=counter)
    policy, applier = make_policy(settings), applier_for(settings, counter)
    for episode in build_episodes("locomo", build):
        memory, _ = await write_memory(episode, policy, applier=applier, counter=counter)
        yield (
            episode,
            {"memory": memory, "rag-raw": raw_memory(passages(episode.chunks, passage_tokens, counter))},
        )


def dev_split_arguments(prog: str) -> argparse.ArgumentParser:
    """The options every LoCoMo ranking bench takes: data, token counter, the first N conversations,
    one budget, the rag-raw passage size."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tokenizer-file")
    parser.add_argument(
        "--episodes", type=int, default=3, help="LoCoMo conversations (first N: the dev split)"
    )
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--passage-tokens", type=int, default=128)
    return parser
