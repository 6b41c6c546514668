"""Candidate (a) of issue 11, round 7, measured on real budget-mode contexts: every memory item also
indexed — not rendered — with the words of the question its source turn answered, as an index-only
field written by the extractive writer would be. The field is simulated by an analyzer that adds the
item's asking question to its index terms (`bench.ranking_oracle.asked_questions` finds it from the
transcript), so the budget loop, the rendering and the recall metric are the service's own.

Prints per budget: memory's gold-turn recall and token F1 (extractive answerer) without and with the
field, rag-raw's, the paired differences with 95% bootstrap CIs (over the questions with gold turns),
and the field's size as a share of the input (what storing it would add to the stored share).

    python -m bench.asked_field --data-dir ../shared/data --tokenizer-file $TOK --episodes 3 \
        --budgets 1024,2048,4096 [--field question] [--episodes 5 --held-out conv-42,conv-43]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from statistics import fmean

from app.memory import LIST_KINDS
from app.qa import ExtractiveAnswerer, assemble_context
from app.retrieval import SCORERS, STOPWORDS, Analyzer, Retriever, Scorer, bm25_tokens, stem
from app.tokens import make_token_counter
from bench.locomo_states import locomo_file, locomo_states
from bench.ranking_oracle import asked_questions
from trainer.evaluate.recall import content_terms, gold_turn_recall, locomo_evidence
from trainer.evaluate.scorers import score
from trainer.evaluate.sweep import CachedCounter, bootstrap_ci


@dataclass(frozen=True)
class _WithAsked(Analyzer):
    asked: Mapping[str, str] = field(default_factory=dict)  # item content → its asking question

    def index_terms(self, text: str) -> list[str]:
        return [*super().index_terms(text), *super().index_terms(self.asked.get(text, ""))]


def _ci(diffs: list[float]) -> str:
    low, high = bootstrap_ci(diffs)
    return f"{fmean(diffs):+.3f} [{low:+.3f}, {high:+.3f}]"


async def measure(args: argparse.Namespace) -> list[str]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    evidence = locomo_evidence(str(locomo_file(args.data_dir)))
    budgets = [int(b) for b in args.budgets.split(",")]
    plain = Retriever(max_entries=64, scorer="lucene")
    answerer = ExtractiveAnswerer()
    # (metric, run, budget) → (conversation, value) per question with gold turns
    measured: dict[tuple[str, str, int], list[tuple[str, float]]] = defaultdict(list)
    rows: list[dict[str, object]] = []
    field_tokens = input_tokens = 0
    async for episode, states in locomo_states(args.data_dir, args.episodes, counter, args.passage_tokens):
        memory = states["memory"]
        by_id = asked_questions(memory, episode)
        asked = {
            item.content: _field(by_id[item.id], item.content, args.field)
            for kind in LIST_KINDS
            for item in memory.items(kind)
            if item.id in by_id
        }
        field_tokens += sum(counter.count(text) for text in asked.values() if text)
        input_tokens += sum(counter.count(chunk) for chunk in episode.chunks)
        lucene = SCORERS["lucene"]
        with_asked = Retriever(
            max_entries=64,
            scorer=Scorer("lucene", lucene.params, _WithAsked(**vars(lucene.analyzer), asked=asked)),
        )
        runs = {
            "memory": (memory, plain),
            "memory+asked": (memory, with_asked),
            "rag-raw": (states["rag-raw"], plain),
        }
        for number, qa in enumerate(episode.questions):
            turns = evidence.get((episode.instance_id, qa.question), [])
            if not turns:
                continue
            for name, (state, retriever) in runs.items():
                for budget in budgets:
                    context = assemble_context(
                        state,
                        qa.question,
                        retriever=retriever,
                        k=None,
                        budget_tokens=budget,
                        counter=counter,
                        key=(name, episode.instance_id),
                        mode="budget",
                        query=qa.query,
                    )
                    # The answerer reads the rendered items, where the field never is: plain analysis.
                    reply = await answerer.answer(replace(context, analyzer=lucene.analyzer))
                    recall = gold_turn_recall(context.rendered(), turns) or 0.0
                    f1 = score(episode.data_source, reply.text, qa.answers, category=qa.category)
                    measured[("recall", name, budget)].append((episode.instance_id, recall))
                    measured[("F1", name, budget)].append((episode.instance_id, f1))
                    rows.append(
                        {
                            "run": name,
                            "budget": budget,
                            "episode": episode.instance_id,
                            "question": number,
                            "turn_recall": recall,
                            "score": f1,
                        }
                    )
    if args.out is not None:
        _write(args.out, rows, measured, budgets)
    share = field_tokens / input_tokens
    lines = [
        f"index-only field ({args.field}): {field_tokens} tokens = {share:.3f} of the input ({input_tokens} tokens)"
    ]
    held_out = set(args.held_out.split(",")) if args.held_out else set()
    splits = {"all": None, "dev": False, "held out": True} if held_out else {"all": None}
    for metric, (split, outside) in product(("recall", "F1"), splits.items()):
        kept = {
            (name, budget): [
                value for episode, value in rows if outside is None or (episode in held_out) == outside
            ]
            for (measure_of, name, budget), rows in measured.items()
            if measure_of == metric
        }
        lines += [
            "",
            f"{metric}, {split}: {len(kept[('memory', budgets[0])])} questions with gold turns",
            "| budget | memory | memory+asked | rag-raw | +asked − memory | memory − rag-raw | +asked − rag-raw |",
            "|---|---|---|---|---|---|---|",
        ]
        for budget in budgets:
            mem, new, rag = (kept[(name, budget)] for name in ("memory", "memory+asked", "rag-raw"))
            lines.append(
                f"| {budget} | {fmean(mem):.3f} | {fmean(new):.3f} | {fmean(rag):.3f} | "
                f"{_ci([b - a for a, b in zip(mem, new)])} | {_ci([a - b for a, b in zip(mem, rag)])} | "
                f"{_ci([a - b for a, b in zip(new, rag)])} |"
            )
    return lines


def _write(
    out: Path,
    rows: list[dict[str, object]],
    measured: dict[tuple[str, str, int], list[tuple[str, float]]],
    budgets: list[int],
) -> None:
    """The per-question rows (JSON lines) and a plot of recall against the budget, all conversations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "asked-field.rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, style in (("memory", "--"), ("memory+asked", "-"), ("rag-raw", ":")):
        means = [fmean(value for _, value in measured[("recall", name, budget)]) for budget in budgets]
        axes.plot(budgets, means, style, marker="o", label=name)
    axes.set_xscale("log", base=2)
    axes.set_xticks(budgets, [str(budget) for budget in budgets])
    axes.set_xlabel("answer prompt budget (Qwen tokens)")
    axes.set_ylabel("gold-turn recall")
    axes.set_title("LoCoMo, 5 conversations: the asked words as an index-only field")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "asked-field.png", dpi=120)
    plt.close(figure)


def _field(question: str, content: str, form: str) -> str:
    """What the field would hold: the whole question, or only its content words that the item's own
    text lacks (an index-only field needs no stopwords and no repeats)."""
    if form == "question":
        return question
    own = content_terms(content)
    words = [word for word in bm25_tokens(question) if word not in STOPWORDS and stem(word) not in own]
    return " ".join(dict.fromkeys(words))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asked_field")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tokenizer-file")
    parser.add_argument(
        "--episodes", type=int, default=3, help="LoCoMo conversations (first N: the dev split)"
    )
    parser.add_argument("--budgets", default="1024,2048,4096")
    parser.add_argument("--passage-tokens", type=int, default=128)
    parser.add_argument("--field", choices=("words", "question"), default="words")
    parser.add_argument("--out", type=Path, help="folder for the per-question rows and a PNG")
    parser.add_argument("--held-out", default="", help="conversations reported apart (e.g. conv-42,conv-43)")
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(measure(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
