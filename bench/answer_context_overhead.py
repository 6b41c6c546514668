"""Where the answer prompt's tokens go in budget mode (issue 11, round 6): memory against rag-raw.

For each LoCoMo question the sweep's own contexts are assembled (`trainer.evaluate.sweep`: the
extractive writer's memory and the raw stream as 128-token passages, `lucene` scorer, budget mode) and
the prompt's tokens are split into parts by taking each part out of the rendered context and counting
the difference (BPE merges across a cut are a token or two; the parts add up to the
context's count by construction, the remainder is `headers`):

- `fixed`: system prompt, `<memory>` wrapper and the question (the same for both methods);
- `core`: the core memory's text (its section header is counted in `headers`);
- `numbering`: the `N. ` in front of every item;
- `dates`: a leading date on an episodic item (`On 8 May 2023, `, the writer's form, or the
  answerer's `[8 May 2023] ` prefix), budget mode's date line per day (`8 May 2023:`), and the time
  stamp at the start of every raw transcript line (`[1:56 pm on 8 May, 2023] `, in rag-raw's passages);
- `items`: the items' text without those;
- `headers`: section headers, `(none retrieved)`, blank lines;
- `slack`: budget − the prompt's tokens (what the budget loop left unused).

    python -m bench.answer_context_overhead --data-dir ../shared/data --tokenizer-file $TOK \
        --episodes 3 --budgets 1024,2048,4096
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import defaultdict
from collections.abc import Sequence
from statistics import fmean

from app.memory import TokenCounter
from app.qa import AnswerContext, assemble_context
from app.qa.context import dated
from app.retrieval import Retriever
from app.tokens import make_token_counter
from bench.locomo_states import locomo_states
from trainer.evaluate.sweep import CachedCounter

PARTS = ("fixed", "core", "numbering", "dates", "items", "headers", "slack")
# A date in front of an episodic item (the writer's `On 8 May 2023, `, the answerer's `[8 May 2023] `)
# or a raw transcript line's time stamp (`[1:56 pm on 8 May, 2023] `, on every line of a rag-raw passage).
_LEADING_DATE = re.compile(r"(?m)^(?:On \d{1,2} [A-Z][a-z]+ \d{4}, |\[[^\]\n]{1,40}\d{4}\] )")


_NUMBER = re.compile(r"(?m)^\d+\. ")
_DAY_LINE = re.compile(r"(?m)^(?:\d{1,2} [A-Z][a-z]+ \d{4}|No date):\n")  # budget mode's line per day


def parts(context: AnswerContext, budget: int, counter: TokenCounter) -> dict[str, int]:
    full_text = context.rendered()
    unnumbered_text = _NUMBER.sub("", full_text)
    undated_text = _LEADING_DATE.sub("", _DAY_LINE.sub("", unnumbered_text))
    bare_text = undated_text.replace(f"Core memory:\n{context.core}\n", "Core memory:\n(empty)\n", 1)
    full, unnumbered, undated, bare = (
        counter.count(text) for text in (full_text, unnumbered_text, undated_text, bare_text)
    )
    # Each item's text as the prompt holds it: after its number's space (" Caroline" is one token).
    items = sum(counter.count(" " + _LEADING_DATE.sub("", s.item.content)) for s in context.semantic) + sum(
        counter.count(" " + _LEADING_DATE.sub("", dated(s.item))) for s in context.episodic
    )
    empty_core = counter.count("(empty)") if context.core else 0
    return {
        "fixed": context.tokens - full,
        "core": undated - bare + empty_core,
        "numbering": full - unnumbered,
        "dates": unnumbered - undated,
        "items": items,
        "headers": bare - empty_core - items,
        "slack": budget - context.tokens,
    }


async def measure(args: argparse.Namespace) -> dict[tuple[str, int], list[dict[str, int]]]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    retriever = Retriever(max_entries=64, scorer="lucene")
    budgets = [int(b) for b in args.budgets.split(",")]
    out: dict[tuple[str, int], list[dict[str, int]]] = defaultdict(list)
    async for episode, states in locomo_states(args.data_dir, args.episodes, counter, args.passage_tokens):
        for method, state in states.items():
            for qa in episode.questions:
                for budget in budgets:
                    context = assemble_context(
                        state,
                        qa.question,
                        retriever=retriever,
                        k=None,
                        budget_tokens=budget,
                        counter=counter,
                        key=(method, episode.instance_id),
                        mode="budget",
                        query=qa.query,
                    )
                    row = parts(context, budget, counter)
                    row["item_count"] = len(context.semantic) + len(context.episodic)
                    out[(method, budget)].append(row)
    return out


def table(measured: dict[tuple[str, int], list[dict[str, int]]]) -> str:
    lines = [
        "| method | budget | n | items | " + " | ".join(PARTS) + " | overhead + slack |",
        "|---|---|---|---|" + "---|" * (len(PARTS) + 1),
    ]
    for (method, budget), rows in sorted(measured.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        means = {part: fmean(row[part] for row in rows) for part in (*PARTS, "item_count")}
        waste = means["core"] + means["numbering"] + means["dates"] + means["headers"] + means["slack"]
        cells = [f"{means[p]:.0f} ({means[p] / budget:.1%})" for p in PARTS]
        lines.append(
            f"| {method} | {budget} | {len(rows)} | {means['item_count']:.1f} | {' | '.join(cells)} | "
            f"{waste:.0f} ({waste / budget:.1%}) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.answer_context_overhead")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tokenizer-file")
    parser.add_argument(
        "--episodes", type=int, default=3, help="LoCoMo conversations (first N: the dev split)"
    )
    parser.add_argument("--budgets", default="1024,2048,4096")
    parser.add_argument("--passage-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    print(table(asyncio.run(measure(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
