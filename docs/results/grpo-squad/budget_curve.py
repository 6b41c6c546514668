"""r1 per token read (PREREGISTRATION.md, run log of 2026-12-02 21:23 UTC, exploratory): each evaluation's
memories are rebuilt from its records (every chunk step's reply through the service's repeat stop, parser and
applier) and answered again through r1's path with the answer context capped at several budgets; the raw-chunk
reference is answered the same way. Before anything is reported the rebuild is checked against the record:
the same memory tokens and, at the evaluation's own budget, the same r1.

    R=docs/results/grpo-squad; PYTHONPATH=$PWD .venv/bin/python $R/budget_curve.py --reference "trained T (in-process)" \\
        --evaluation "base model (in-process)=$R/runs/squad-grpo/evals/iter0000-greedy.jsonl" \\
        --evaluation "trained T (in-process)=$R/runs/squad-grpo/evals/iter0015-greedy.jsonl" --out $R/budget-curve
(from the repository's root: the experiment's config and data paths are relative to it)

Besides raw chunks, two more references need no LLM: the chunks split into sentences (each sentence an item:
raw retrieval at the finest grain the text offers) and the memory the service's embedded extractive policy
writes. `--mode budget` answers as the service does by default (items of both kinds, best first, until the
budget is full) instead of r1's top-k path (the same k for both kinds, shrunk until the prompt fits). The
rebuild's r1 check reads each evaluation at the context its records were scored at (`answer_context` and
`answer_context_tokens` in the records; older records were scored in top-k mode at 30,000 tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raw_reference import held_out_setup

from app.memory import MemoryState
from app.policy.extractive import ExtractivePolicy
from app.policy.parser import parse_reply
from app.policy.repeats import applied_text, repeat_window
from app.policy.sentences import split_sentences
from trainer.episodes import Episode
from trainer.evaluate.baselines import raw_memory
from trainer.paired import Episode as PairedEpisode
from trainer.paired import Paired, compare
from trainer.rewards import accuracy_reward
from trainer.rollouts import Engine
from trainer.runner import answer_from_memory, memory_tokens

BUDGETS = (64, 128, 256, 512, 30_000)
TOOL_FORMAT, REPEAT_STOP_CHARS = "json", 256  # the experiment's service settings (run.sh)
RAW, SENTENCES, EXTRACTIVE = "raw chunks", "raw sentences", "extractive policy"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def rebuild(engine: Engine, replies: list[str | None]) -> MemoryState:
    """The memory an evaluation wrote: each chunk step's reply applied as the service applies it."""
    state, window = MemoryState(), repeat_window(TOOL_FORMAT, REPEAT_STOP_CHARS)
    for index, text in enumerate(replies):
        if text is None:  # the policy call failed: nothing was applied
            continue
        applied, _ = applied_text(text, window)
        engine.applier.apply_calls(state, parse_reply(applied).calls, now=NOW, seq=index + 1)
    return state


def extractive_memory(engine: Engine, chunks: list[str]) -> MemoryState:
    """The memory the service's embedded default policy writes, chunk by chunk, under the engine's limits."""
    state, policy = MemoryState(), ExtractivePolicy(engine.counter, engine.applier.limits)
    for index, chunk in enumerate(chunks):
        engine.applier.apply_calls(state, policy.plan(state, chunk), now=NOW, seq=index + 1)
    return state


async def r1_at(
    engine: Engine, episode: Episode, state: MemoryState, budget: int, mode: str, key: object
) -> float:
    qa = replace(engine.qa, budget_tokens=budget, mode=mode)
    answers = await answer_from_memory(
        episode,
        state,
        retriever=engine.retriever,
        answerer=engine.answerer,
        qa=qa,
        counter=engine.counter,
        key=key,
    )
    return accuracy_reward([answer.score for answer in answers])


def memories(engine: Engine, path: Path) -> tuple[dict[str, MemoryState], dict[str, float], tuple[str, int]]:
    """Each scored episode's rebuilt memory, its recorded r1 and the answer context r1 was read at (records
    written before the records carried it were read at the engine's)."""
    out, recorded, contexts = {}, {}, set()
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("r1") is None or record.get("rollout", 0) != 0:
            continue
        state = rebuild(engine, record["raw_text"])
        rebuilt = memory_tokens(state, engine.counter)
        if rebuilt != record["memory_tokens"]:
            raise SystemExit(
                f"{path}: {record['instance_id']} rebuilt {rebuilt} memory tokens, recorded {record['memory_tokens']}"
            )
        out[record["instance_id"]] = state
        recorded[record["instance_id"]] = record["r1"]
        contexts.add(
            (
                record.get("answer_context", engine.qa.mode),
                record.get("answer_context_tokens", engine.qa.budget_tokens),
            )
        )
    if len(contexts) != 1:
        raise SystemExit(f"{path}: records scored at several answer contexts {sorted(contexts)}")
    return out, recorded, contexts.pop()


async def curve(args: argparse.Namespace) -> dict[str, Any]:
    engine, held_out = held_out_setup()
    episodes = {episode.instance_id: episode for episode in held_out}
    states = {
        RAW: {key: raw_memory(episode.chunks) for key, episode in episodes.items()},
        SENTENCES: {
            key: raw_memory([s for chunk in episode.chunks for s in split_sentences(chunk)])
            for key, episode in episodes.items()
        },
        EXTRACTIVE: {key: extractive_memory(engine, episode.chunks) for key, episode in episodes.items()},
    }
    recorded: dict[str, tuple[dict[str, float], tuple[str, int]]] = {}
    for item in args.evaluation:
        name, _, path = item.partition("=")
        states[name], by_episode, context = memories(engine, Path(path))
        recorded[name] = by_episode, context
    r1: dict[str, dict[int, dict[str, float]]] = {name: {} for name in states}
    for budget in args.budgets:
        for name, by_episode in states.items():
            r1[name][budget] = {
                key: await r1_at(engine, episodes[key], state, budget, args.mode, (name, budget, key))
                for key, state in by_episode.items()
            }
    # The rebuild must reproduce each evaluation's own r1 at the context it was scored at; an episode where it
    # does not is listed in the result (an answer-path fix made after the evaluation ran shows up here), not
    # hidden.
    differs: dict[str, dict[str, dict[str, float]]] = {}
    for name, (by_episode, (mode, budget)) in recorded.items():
        differs[name] = {}
        for key, value in by_episode.items():
            if mode == args.mode and budget in r1[name]:
                again = r1[name][budget][key]
            else:
                state = states[name][key]
                again = await r1_at(engine, episodes[key], state, budget, mode, (name, mode, budget, key))
            if abs(again - value) > 1e-9:
                differs[name][key] = {"recorded": value, "rebuilt": again}

    def paired(name: str, base: str, budget: int) -> Paired:
        def table(label: str) -> dict[str, PairedEpisode]:
            return {
                key: PairedEpisode(
                    str(episodes[key].metadata.get("article")), value, len(episodes[key].questions)
                )
                for key, value in r1[label][budget].items()
            }

        return compare(f"{name} − {base}", table(base), table(name), resamples=args.resamples)

    comparisons = [(args.reference, name) for name in states if name != args.reference]
    return {
        "mode": args.mode,
        "budgets": list(args.budgets),
        "rebuilt_r1_differs_from_record": differs,
        "memory_tokens": {
            name: sum(memory_tokens(state, engine.counter) for state in by_episode.values()) / len(by_episode)
            for name, by_episode in states.items()
        },
        "r1": {
            name: {budget: sum(v.values()) / len(v) for budget, v in curves.items()}
            for name, curves in r1.items()
        },
        "paired": [
            {"budget": budget, **asdict(paired(name, base, budget))}
            for name, base in comparisons
            for budget in args.budgets
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    budgets = result["budgets"]
    lines = [
        "| memory | tokens stored per episode | " + " | ".join(f"r1 at {b:,}" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for name, curve_ in result["r1"].items():
        values = " | ".join(f"{curve_[b]:.4f}" for b in budgets)
        lines.append(f"| {name} | {result['memory_tokens'][name]:.0f} | {values} |")
    lines += [
        "",
        "| comparison | answer budget | episodes (articles) | mean Δ r1 | 95% cluster-bootstrap CI | sign-flip p |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["paired"]:
        lines.append(
            f"| {row['name']} | {row['budget']:,} | {row['episodes']} ({row['clusters']}) | {row['delta']:+.4f} | "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['p_value']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = result["budgets"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, curve_ in result["r1"].items():
        axis.plot(
            range(len(budgets)),
            [curve_[b] for b in budgets],
            marker="o",
            label=f"{name} ({result['memory_tokens'][name]:.0f} tok stored)",
        )
    axis.set_xticks(range(len(budgets)), [f"{b:,}" for b in budgets])
    axis.set(xlabel="answer context budget (tokens read per question)", ylabel="held-out r1 (58 episodes)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--evaluation", action="append", required=True, metavar="NAME=RECORDS")
    parser.add_argument(
        "--reference", required=True, help="the evaluation compared with the others and raw chunks"
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument(
        "--mode", choices=("top-k", "budget"), default="top-k", help="how the context is filled"
    )
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(curve(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budget_curve.json").write_text(json.dumps(result, indent=1))
    (args.out / "budget_curve.md").write_text(markdown(result))
    plot(result, args.out / "budget_curve.png")
    print(markdown(result))
    print("rebuilt r1 differs from the record:", json.dumps(result["rebuilt_r1_differs_from_record"]))


if __name__ == "__main__":
    main()
