"""SQuAD v1.1 by paragraph, split by article: `squad-paragraphs` makes one episode per paragraph (one chunk,
that paragraph's own questions), `squad-multichunk` one episode per run of consecutive paragraphs of one
article (one chunk per paragraph, the run's questions), so memory must hold several paragraphs and later
chunks see what earlier ones wrote. Articles come in one seeded order for both builders, their paragraphs
in order, and each episode names its article in `metadata["article"]`, so a held-out split can take whole
articles (`data.eval_group = "article"`; paragraphs of one article share names and facts, and would leak)
and both builders hold out the same articles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from trainer.episodes.config import BuildConfig, pick_questions
from trainer.episodes.model import QA, Episode
from trainer.episodes.packing import pack_units
from trainer.episodes.squad import DATA_SOURCE, DEFAULT_FILE, _unique

# The seeded article order's stream; both builders share it, so they hold out the same articles.
_ORDER_STREAM = "squad-paragraphs"


@dataclass(frozen=True)
class _Paragraph:
    article_index: int
    article: str  # the title as the data spells it
    number: int
    text: str  # "Title: context"
    questions: list[QA]


def _articles(config: BuildConfig) -> Iterator[list[_Paragraph]]:
    """Every article's first `config.paragraphs` paragraphs, articles in the seeded order."""
    with open(config.data_dir / DEFAULT_FILE, encoding="utf-8") as source:
        articles: list[dict[str, Any]] = json.load(source)["data"]
    order = list(range(len(articles)))
    config.rng(_ORDER_STREAM).shuffle(order)
    for index in order:
        article = articles[index]
        title = article["title"].replace("_", " ")
        yield [
            _Paragraph(
                article_index=index,
                article=article["title"],
                number=number,
                text=f"{title}: {paragraph['context'].strip()}",
                questions=[
                    QA(question=qa["question"].strip(), answer=answers)
                    for qa in paragraph["qas"]
                    if (answers := _unique([answer["text"] for answer in qa["answers"]]))
                ],
            )
            for number, paragraph in enumerate(article["paragraphs"][: config.paragraphs])
        ]


def build_squad_paragraphs(config: BuildConfig) -> list[Episode]:
    episodes = []
    for article in _articles(config):
        for paragraph in article:
            instance_id = f"squad-a{paragraph.article_index:02d}-p{paragraph.number:03d}"
            episodes.append(
                Episode(
                    instance_id=instance_id,
                    data_source=DATA_SOURCE,
                    chunks=pack_units([paragraph.text], config.chunk_limit(), config.counter),
                    questions=pick_questions(paragraph.questions, config.questions, config.rng(instance_id)),
                    metadata={"article": paragraph.article, "paragraph": paragraph.number},
                )
            )
    return episodes[: config.episodes]


def runs(count: int, size: int) -> list[range]:
    """`count` items cut into round(count / size) consecutive runs (at least one) whose lengths differ by at
    most one: no short remainder run, which would be a single-chunk episode among multi-chunk ones."""
    if not count:
        return []
    number = max(1, round(count / size))
    bounds = [index * count // number for index in range(number + 1)]
    return [range(start, end) for start, end in pairwise(bounds)]


def build_squad_multichunk(config: BuildConfig) -> list[Episode]:
    """Runs of about `config.episode_paragraphs` consecutive paragraphs of one article; every paragraph
    its own chunk(s) (one split by the engine's `split_text` when it exceeds the chunk limit), so a chunk
    is never more than one paragraph."""
    episodes = []
    for article in _articles(config):
        for run in runs(len(article), config.episode_paragraphs):
            members = [article[index] for index in run]
            first, last = members[0], members[-1]
            instance_id = f"squad-a{first.article_index:02d}-p{first.number:03d}-{last.number:03d}"
            questions = [qa for paragraph in members for qa in paragraph.questions]
            episodes.append(
                Episode(
                    instance_id=instance_id,
                    data_source=DATA_SOURCE,
                    chunks=[
                        chunk
                        for paragraph in members
                        for chunk in pack_units([paragraph.text], config.chunk_limit(), config.counter)
                    ],
                    questions=pick_questions(questions, config.questions, config.rng(instance_id)),
                    metadata={"article": first.article, "paragraphs": [p.number for p in members]},
                )
            )
    return episodes[: config.episodes]
