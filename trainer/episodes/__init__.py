"""Episodes: chunk streams with questions, from Memalpha files or built from the real data sets."""

from trainer.episodes.config import BuildConfig
from trainer.episodes.io import load_episodes, save_episodes
from trainer.episodes.model import QA, Episode
from trainer.episodes.registry import BUILDERS, build_episodes, dataset_names

__all__ = [
    "BUILDERS",
    "QA",
    "BuildConfig",
    "Episode",
    "build_episodes",
    "dataset_names",
    "load_episodes",
    "save_episodes",
]
