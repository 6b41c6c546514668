"""Which re-ordering of the matching items would bring LoCoMo's missed gold turns into a budget-mode
context (issue 11, round 7) — an oracle, no change to the service.

For each question with gold turns and each method, the sweep's own context at `--budget` gives the
number of items shown (N) and the matching items in the service's order (BM25, both kinds merged). A
gold turn counts as *within reach* under an ordering when one of the items holding it
(`trainer.evaluate.recall.turn_held`) is among the first N of that ordering. Orderings:

- `bm25`: the service's (within reach ≈ held; the gap is token sizes and duplicates);
- `group λ`: item score / best item score + λ · its group's score / best group score, the group taken
  as one BM25 document — memory: the items the writer made from one chunk (`source_seq`); rag-raw,
  equally equipped: the passages cut from one chunk;
- `asked`: memory only; every item also indexed with the words of the question its source turn
  answered (the other speaker's previous turn, when it ends with "?"), as an index-only field would;
- `speaker β`: memory only; score · (1 + β) for an item whose subject (its first word after the
  writer's date) is a participant the question names.

Also printed: `--examples` ranked-below memory misses (question, holder, rank, shared terms).

    python -m bench.ranking_oracle --data-dir ../shared/data --tokenizer-file $TOK --episodes 3 --budget 2048
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence

from app.memory import LIST_KINDS, Item, MemoryState
from app.qa import assemble_context
from app.qa.context import day_line
from app.retrieval import BM25Index, Retriever
from app.tokens import make_token_counter
from bench.locomo_states import dev_split_arguments, locomo_file, locomo_states
from trainer.episodes import Episode
from trainer.evaluate.recall import content_terms, locomo_evidence, turn_held
from trainer.evaluate.sweep import CachedCounter, passages

_TURN = re.compile(r"^\[[^\]\n]+\]\s*([^:\n]{1,40}):\s*(.+)$")
Order = Callable[[list[tuple[Item, float]]], list[Item]]


def _turns(episode: Episode) -> list[tuple[str, str]]:
    return [
        (found[1].strip(), found[2].strip())
        for chunk in episode.chunks
        for line in chunk.splitlines()
        if (found := _TURN.match(line.strip()))
    ]


def _passage_chunks(episode: Episode, passage_tokens: int, counter: CachedCounter) -> list[int]:
    """The chunk each rag-raw passage's first line came from (passages are cut from the line stream)."""
    stream = [(n, line.strip()) for n, chunk in enumerate(episode.chunks) for line in chunk.splitlines()]
    out, at = [], 0
    for passage in passages(episode.chunks, passage_tokens, counter):
        first = passage.splitlines()[0]
        while at < len(stream) - 1 and not stream[at][1].startswith(first[:40]):
            at += 1
        out.append(stream[at][0])
    return out


def asked_questions(memory: MemoryState, episode: Episode) -> dict[str, str]:
    """Each memory item's asking question: the other speaker's previous turn's last sentence, when it
    ends with "?", of the item's source turn (the transcript turn sharing most content words with it;
    the writer knows the turn, this reconstructs it)."""
    turns = _turns(episode)
    terms = [content_terms(text) for _, text in turns]
    out: dict[str, str] = {}
    for kind in LIST_KINDS:
        for item in memory.items(kind):
            mine = content_terms(day_line(item)[1])
            best = max(range(len(turns)), key=lambda n: len(mine & terms[n]), default=None)
            if best and turns[best - 1][0] != turns[best][0]:
                question = re.split(r"(?<=[.!?])\s+", turns[best - 1][1])[-1]
                if question.endswith("?"):
                    out[item.id] = question
    return out


def _group_order(
    retriever: Retriever, state: MemoryState, group_of: dict[str, int], terms: list[str], weight: float
) -> Order:
    groups: dict[int, list[str]] = {}
    for kind in LIST_KINDS:
        for item in state.items(kind):
            groups.setdefault(group_of[item.id], []).extend(
                retriever.scorer.analyzer.index_terms(item.content)
            )
    keys = sorted(groups)
    index = BM25Index([groups[key] for key in keys], retriever.scorer.params)
    scores = dict(zip(keys, index.scores(terms).tolist()))
    top_group = max(scores.values()) or 1.0

    def order(ranked: list[tuple[Item, float]]) -> list[Item]:
        top = max((score for _, score in ranked), default=1.0) or 1.0
        fused = [(s / top + weight * scores[group_of[item.id]] / top_group, item) for item, s in ranked]
        return [item for _, item in sorted(fused, key=lambda pair: -pair[0])]

    return order


def _speaker_order(names: set[str], beta: float) -> Order:
    def subject(item: Item) -> str:
        _, text = day_line(item)
        return text.split(" ", 1)[0].strip(",:'s").lower()

    def order(ranked: list[tuple[Item, float]]) -> list[Item]:
        boosted = [(s * (1 + beta) if subject(item) in names else s, item) for item, s in ranked]
        return [item for _, item in sorted(boosted, key=lambda pair: -pair[0])]

    return order


async def measure(args: argparse.Namespace) -> list[str]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    evidence = locomo_evidence(str(locomo_file(args.data_dir)))
    retriever = Retriever(max_entries=64, scorer="lucene")
    within: dict[str, Counter[str]] = {"memory": Counter(), "rag-raw": Counter()}
    examples: list[str] = []
    async for episode, states in locomo_states(args.data_dir, args.episodes, counter, args.passage_tokens):
        speakers = {speaker.lower() for speaker, _ in _turns(episode)}
        chunk_of = _passage_chunks(episode, args.passage_tokens, counter)
        questions = asked_questions(states["memory"], episode)
        analyze = retriever.scorer.analyzer.index_terms
        asked = {
            item.id: [*analyze(item.content), *analyze(questions.get(item.id, ""))]
            for kind in LIST_KINDS
            for item in states["memory"].items(kind)
        }
        for method, state in states.items():
            key = (method, episode.instance_id)
            items = [item for kind in LIST_KINDS for item in state.items(kind)]
            item_terms = {item.id: content_terms(item.content) for item in items}
            group_of = {
                item.id: (item.source_seq or 0) if method == "memory" else chunk_of[item.source_seq or 0]
                for item in items
            }
            asked_index = BM25Index([asked.get(item.id, []) for item in items], retriever.scorer.params)
            for qa in episode.questions:
                gold = evidence.get((episode.instance_id, qa.question), [])
                if not gold:
                    continue
                search = qa.query or qa.question
                context = assemble_context(
                    state,
                    qa.question,
                    retriever=retriever,
                    k=None,
                    budget_tokens=args.budget,
                    counter=counter,
                    key=key,
                    mode="budget",
                    query=qa.query,
                )
                shown = len(context.semantic) + len(context.episodic)
                terms = retriever.query_terms(search)
                ranked = sorted(
                    (
                        (scored.item, scored.score)
                        for kind in LIST_KINDS
                        for _, scored in retriever.matching(state, terms, kind, key)
                    ),
                    key=lambda pair: -pair[1],
                )
                orders: dict[str, list[Item]] = {"bm25": [item for item, _ in ranked]}
                for weight in (0.25, 0.5, 1.0):
                    orders[f"group {weight}"] = _group_order(retriever, state, group_of, terms, weight)(
                        ranked
                    )
                if method == "memory":
                    scores = asked_index.scores(terms)
                    orders["asked"] = [
                        items[n]
                        for n in sorted(
                            (int(n) for n in asked_index.matches(terms)), key=lambda n: -scores[n]
                        )
                    ]
                    named = {word for word in re.findall(r"[a-z]+", search.lower()) if word in speakers}
                    for beta in (0.25, 0.5):
                        orders[f"speaker {beta}"] = _speaker_order(named, beta)(ranked)
                lines = [content_terms(line) for line in context.rendered().splitlines() if line.strip()]
                for turn in gold:
                    held = turn_held(turn, lines)
                    within[method]["turns"] += 1
                    within[method]["held"] += held
                    holders = {item.id for item in items if turn_held(turn, [item_terms[item.id]])}
                    for name, order in orders.items():
                        within[method][name] += any(item.id in holders for item in order[:shown])
                    place = next((n for n, (item, _) in enumerate(ranked) if item.id in holders), None)
                    if (
                        method == "memory"
                        and not held
                        and place is not None
                        and len(examples) < args.examples
                    ):
                        item = ranked[place][0]
                        shared = sorted(set(terms) & set(retriever.scorer.analyzer.index_terms(item.content)))
                        examples.append(
                            f"- Q: {qa.question} | rank {place + 1} of {len(ranked)} (shown {shown}) | shares "
                            f"{shared} | holder: {item.content[:160]} | gold: {turn[:120]}"
                        )
    report = [
        f"{method}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for method, counts in within.items()
    ]
    return [*report, "", *examples]


def main(argv: Sequence[str] | None = None) -> int:
    parser = dev_split_arguments("python -m bench.ranking_oracle")
    parser.add_argument("--examples", type=int, default=20)
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(measure(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
