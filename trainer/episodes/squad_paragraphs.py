"""SQuAD v1.1 one paragraph per episode, with that paragraph's own questions: single-chunk episodes, many
of them (1,048 paragraphs in the 24 articles). Articles come in a seeded order, their paragraphs in order,
and each episode names its article in `metadata["article"]`, so a held-out split can take whole articles
(`data.eval_group = "article"`): paragraphs of one article share names and facts, and would leak."""

from __future__ import annotations

import json
from typing import Any

from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode
from trainer.episodes.packing import pack_units
from trainer.episodes.squad import DATA_SOURCE, DEFAULT_FILE, _unique


def build_squad_paragraphs(config: BuildConfig) -> list[Episode]:
    with open(config.data_dir / DEFAULT_FILE, encoding="utf-8") as source:
        articles: list[dict[str, Any]] = json.load(source)["data"]
    order = list(range(len(articles)))
    config.rng("squad-paragraphs").shuffle(order)
    episodes = []
    for index in order:
        article = articles[index]
        title = article["title"].replace("_", " ")
        for number, paragraph in enumerate(article["paragraphs"][: config.paragraphs]):
            questions = [
                QA(question=qa["question"].strip(), answer=answers)
                for qa in paragraph["qas"]
                if (answers := _unique([answer["text"] for answer in qa["answers"]]))
            ]
            instance_id = f"squad-a{index:02d}-p{number:03d}"
            episodes.append(
                Episode(
                    instance_id=instance_id,
                    data_source=DATA_SOURCE,
                    chunks=pack_units(
                        [f"{title}: {paragraph['context'].strip()}"], config.chunk_limit(), config.counter
                    ),
                    questions=pick_questions(questions, config.questions, config.rng(instance_id)),
                    metadata={"article": article["title"], "paragraph": number},
                )
            )
    return episodes[: config.episodes]
