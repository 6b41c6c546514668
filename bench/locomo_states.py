"""The budget sweep's two LoCoMo memories per conversation, for the benches that take its contexts
apart: the extractive writer's memory and the raw stream as passages (`trainer.evaluate.sweep`'s
rag-raw), written the way the sweep writes them."""

from __future__ import annotations

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
