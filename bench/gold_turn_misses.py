"""Where the LoCoMo gold turns that a budget-mode context misses sit (issue 11, round 6).

For each question with gold turns, the sweep's own context (`trainer.evaluate.sweep`: extractive writer,
rag-raw = 128-token passages, `lucene`, budget mode) at `--budget`; each gold turn it does not hold
(`trainer.evaluate.recall.turn_held`, per context line) is classed as: not stored (no item holds it),
stored but sharing no term with the question (never a candidate), or stored and ranked below the budget
— then the rank of its best holder among the matching items (best score first) and the item tokens
ranked above it. Also: the share of questions whose context shows every matching item (the budget does
not bind).

    python -m bench.gold_turn_misses --data-dir ../shared/data --tokenizer-file $TOK --episodes 3 --budget 2048
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
from collections import Counter
from collections.abc import Sequence
from statistics import fmean, median

from app.memory import LIST_KINDS
from app.qa import assemble_context
from app.retrieval import Retriever, bm25_tokens
from app.tokens import make_token_counter
from bench.locomo_states import dev_split_arguments, locomo_file, locomo_states
from trainer.evaluate.recall import content_terms, locomo_evidence, turn_held
from trainer.evaluate.sweep import CachedCounter


async def measure(args: argparse.Namespace) -> list[str]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    evidence = locomo_evidence(str(locomo_file(args.data_dir)))
    retriever = Retriever(max_entries=64, scorer="lucene")
    classes: dict[str, Counter[str]] = {"memory": Counter(), "rag-raw": Counter()}
    below: dict[str, list[tuple[int, int]]] = {method: [] for method in classes}
    unbound: dict[str, list[bool]] = {method: [] for method in classes}
    async for episode, states in locomo_states(args.data_dir, args.episodes, counter, args.passage_tokens):
        for method, state in states.items():
            key = (method, episode.instance_id)
            items = [(item, content_terms(item.content)) for kind in LIST_KINDS for item in state.items(kind)]
            for qa in episode.questions:
                turns = evidence.get((episode.instance_id, qa.question), [])
                if not turns:
                    continue
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
                terms = retriever.query_terms(qa.query or qa.question)
                ranked = [
                    scored.item
                    for _, scored in heapq.merge(
                        *(retriever.matching(state, terms, kind, key) for kind in LIST_KINDS),
                        key=lambda pair: -pair[1].score,
                    )
                ]
                shown = len(context.semantic) + len(context.episodic)
                unbound[method].append(shown >= len({" ".join(bm25_tokens(i.content)) for i in ranked}))
                lines = [content_terms(line) for line in context.rendered().splitlines() if line.strip()]
                for turn in turns:
                    if turn_held(turn, lines):
                        classes[method]["held"] += 1
                        continue
                    holders = {item.id for item, item_terms in items if turn_held(turn, [item_terms])}
                    place = next((n for n, item in enumerate(ranked) if item.id in holders), None)
                    if not holders:
                        classes[method]["not stored"] += 1
                    elif place is None:
                        classes[method]["stored, shares no term"] += 1
                    else:
                        classes[method]["stored, ranked below"] += 1
                        above = sum(counter.count(item.content) for item in ranked[:place])
                        below[method].append((place + 1, above))
    report = []
    for method, counts in classes.items():
        ranks = below[method]
        report.append(
            f"{method} at {args.budget}: {dict(counts)}; ranked below: holder's rank median "
            f"{median(r for r, _ in ranks):.0f}, item tokens above it median {median(t for _, t in ranks):.0f}; "
            f"questions whose context shows every matching item {fmean(unbound[method]):.3f}"
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = dev_split_arguments("python -m bench.gold_turn_misses")
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(measure(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
