"""HotpotQA (distractor): the context paragraphs of several questions, shuffled, as the stream."""

from __future__ import annotations

import ast
import json
from typing import Any

from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode
from trainer.episodes.packing import pack_units

DATA_SOURCE = "hotpotqa"
DEFAULT_FILE = "hotpotqa/hotpot_dev_distractor_first50.json"


def _field(value: Any) -> Any:
    """This copy stores `context`/`supporting_facts` as Python-literal strings; parse them as data."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _paragraphs(record: dict[str, Any]) -> list[tuple[str, str]]:
    context = _field(record["context"])
    if isinstance(context, dict):  # HF column layout: {"title": [...], "sentences": [[...]]}
        context = list(zip(context["title"], context["sentences"], strict=True))
    return [(title, "".join(sentences).strip()) for title, sentences in context]


def build_hotpotqa(config: BuildConfig) -> list[Episode]:
    with open(config.source(DEFAULT_FILE), encoding="utf-8") as source:
        records: list[dict[str, Any]] = json.load(source)
    order = list(range(len(records)))
    config.rng(DATA_SOURCE).shuffle(order)
    groups = [order[start : start + config.records] for start in range(0, len(order), config.records)]
    groups = [group for group in groups if len(group) == config.records]
    episodes = []
    for number, group in enumerate(groups[: config.episodes]):
        rng = config.rng(DATA_SOURCE, number)
        paragraphs: dict[str, str] = {}  # by title: questions of one group often share distractors
        for index in group:
            for title, text in _paragraphs(records[index]):
                paragraphs.setdefault(title, f"{title}: {text}")
        units = list(paragraphs.values())
        rng.shuffle(units)
        questions = [
            QA(question=records[index]["question"].strip(), answer=str(records[index]["answer"]))
            for index in group
        ]
        episodes.append(
            Episode(
                instance_id=f"hotpotqa-{number:03d}",
                data_source=DATA_SOURCE,
                chunks=pack_units(units, config.chunk_limit(), config.counter),
                questions=pick_questions(questions, config.questions, rng),
                # `_id` is optional (HF copies and hand-made files may lack it): the record's position stands in.
                metadata={
                    "record_ids": [records[index].get("_id", f"#{index}") for index in group],
                    "paragraphs": len(units),
                },
            )
        )
    return episodes
