"""SQuAD v1.1: several articles' paragraphs shuffled into one multi-document stream, plus their questions."""

from __future__ import annotations

import json
from typing import Any

from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode
from trainer.episodes.packing import pack_units

DATA_SOURCE = "squad"
DEFAULT_FILE = "squad/squad_dev_v1.1_articles_00-23.json"


def _unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(text.strip() for text in texts if text.strip()))


def build_squad(config: BuildConfig) -> list[Episode]:
    with open(config.source(DEFAULT_FILE), encoding="utf-8") as source:
        articles: list[dict[str, Any]] = json.load(source)["data"]
    order = list(range(len(articles)))
    config.rng(DATA_SOURCE).shuffle(order)
    groups = [order[start : start + config.articles] for start in range(0, len(order), config.articles)]
    groups = [group for group in groups if len(group) == config.articles]
    episodes = []
    for number, group in enumerate(groups[: config.episodes]):
        rng = config.rng(DATA_SOURCE, number)
        paragraphs: list[str] = []
        questions: list[QA] = []
        for index in group:
            article = articles[index]
            title = article.get("title", f"article {index}").replace("_", " ")
            for paragraph in article["paragraphs"][: config.paragraphs]:
                paragraphs.append(f"{title}: {paragraph['context'].strip()}")
                for qa in paragraph["qas"]:
                    answers = _unique([answer["text"] for answer in qa["answers"]])
                    if answers:
                        questions.append(QA(question=qa["question"].strip(), answer=answers))
        rng.shuffle(paragraphs)
        episodes.append(
            Episode(
                instance_id=f"squad-{number:03d}",
                data_source=DATA_SOURCE,
                chunks=pack_units(paragraphs, config.chunk_limit(), config.counter),
                questions=pick_questions(questions, config.questions, rng),
                metadata={
                    "articles": [articles[index].get("title", f"article {index}") for index in group],
                    "paragraphs": len(paragraphs),
                },
            )
        )
    return episodes
