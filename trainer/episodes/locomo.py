"""LoCoMo: each conversation is one episode (dated, speaker-prefixed turns in session order, read by
`trainer.corpus.locomo`, which `demo` reads too); its questions of categories 1–4 carry their category."""

from __future__ import annotations

from trainer.corpus.locomo import load_locomo
from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode

DATA_SOURCE = "locomo"
DEFAULT_FILE = "locomo/locomo_dev.json"


def build_locomo(config: BuildConfig) -> list[Episode]:
    episodes = []
    for conversation in load_locomo(config.source(DEFAULT_FILE))[: config.episodes]:
        if config.sessions is not None:
            conversation = conversation.first_sessions(config.sessions)
        questions = [
            QA(question=qa.question, answer=qa.answer, category=qa.category)
            for qa in conversation.qa
            if qa.scored and qa.answer is not None
        ]
        episodes.append(
            Episode(
                instance_id=conversation.sample_id,
                data_source=DATA_SOURCE,
                chunks=conversation.chunks(config.chunk_limit(), config.counter),
                questions=pick_questions(questions, config.questions, config.rng(DATA_SOURCE, len(episodes))),
                metadata={
                    "speakers": [conversation.speaker_a, conversation.speaker_b],
                    "sessions": conversation.session_count,
                    "turns": len(conversation.turns),
                },
            )
        )
    return episodes
