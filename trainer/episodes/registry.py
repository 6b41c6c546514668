"""One entry point for every episode source: `build_episodes("squad", config)`, `"parquet:PATH"`."""

from __future__ import annotations

from collections.abc import Callable

from trainer.episodes.classification import build_classification, load_intent, load_trec
from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.hotpotqa import build_hotpotqa
from trainer.episodes.io import load_episodes
from trainer.episodes.locomo import build_locomo
from trainer.episodes.model import Episode
from trainer.episodes.squad import build_squad
from trainer.episodes.squad_paragraphs import build_squad_multichunk, build_squad_paragraphs
from trainer.episodes.updates import build_updates

Builder = Callable[[BuildConfig], list[Episode]]

BUILDERS: dict[str, Builder] = {
    "locomo": build_locomo,
    "locomo-updates": build_updates,
    "squad": build_squad,
    "squad-paragraphs": build_squad_paragraphs,
    "squad-multichunk": build_squad_multichunk,
    "hotpotqa": build_hotpotqa,
    "trec": lambda config: build_classification(load_trec(config.data_dir, fine=False), config),
    "trec-fine": lambda config: build_classification(load_trec(config.data_dir, fine=True), config),
    **{
        name: (lambda config, name=name: build_classification(load_intent(config.data_dir, name), config))
        for name in ("banking77", "clinc150", "hwu64")
    },
}
FILE_PREFIXES = ("parquet:", "jsonl:")


def dataset_names() -> list[str]:
    return [*BUILDERS, *(f"{prefix}PATH" for prefix in FILE_PREFIXES)]


def build_episodes(name: str, config: BuildConfig) -> list[Episode]:
    """Episodes of a built-in data set, or of a Memalpha parquet/JSONL file (`parquet:PATH`), cut to
    the configured number of episodes and (seeded sample of) questions per episode."""
    if name.startswith(FILE_PREFIXES):
        episodes = load_episodes(name.split(":", 1)[1])[: config.episodes]
        for episode in episodes:
            episode.questions = pick_questions(
                episode.questions, config.questions, config.rng(episode.instance_id)
            )
        return episodes
    builder = BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(dataset_names())}")
    return builder(config)
