"""Budget sweep (issue 11): memory against raw-passage RAG at the context budgets agents use.

For each episode the extractive writer writes memory once; then every question is answered at every
budget (answer-prompt tokens: 256 … 8k) by every variant, with the same extractive answerer:

- a variant is `method:scorer:mode`: method `memory` (the written memory) or `rag-raw` (the raw
  stream cut into passages of at most `--passage-tokens` tokens, at line breaks, as semantic items:
  small passages so that raw RAG is not starved at small budgets), scorer `lucene` or `okapi`
  (`app.retrieval.SCORERS`), mode `budget` or `top-k` (`app.qa.context`);
- per question it records the tokens the answerer actually read (the whole answer prompt), the score
  (SPEC §5; LoCoMo token F1), and answerer-independent recall (`trainer.evaluate.recall`): LoCoMo
  gold-turn recall, and whether the gold answer is present (gated on a gold turn for LoCoMo);
- paired differences memory − rag-raw (same scorer and mode) per budget, with 95% bootstrap CIs over
  questions.

`python -m trainer.evaluate.sweep run …` writes one JSON summary (and the per-question rows beside it);
`python -m trainer.evaluate.sweep report A.json B.json … --out DIR` draws the curves (one PNG per data
set, one line per variant and run label) and writes a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np

from app.backends import make_policy
from app.memory import MemoryState, TokenCounter
from app.qa import AnswerContext, ExtractiveAnswerer, assemble_context
from app.retrieval import Retriever
from app.settings import Settings
from app.tokens import make_token_counter
from trainer.episodes import QA, BuildConfig, Episode, build_episodes
from trainer.episodes.locomo import DEFAULT_FILE as LOCOMO_FILE
from trainer.evaluate.baselines import raw_memory
from trainer.evaluate.harness import applier_for
from trainer.evaluate.recall import answer_present, gold_turn_recall, locomo_evidence
from trainer.evaluate.scorers import score
from trainer.runner import memory_tokens, write_memory

BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
TOP_K = 20  # top-k mode: the paper's k per kind
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Variant:
    method: str  # "memory" | "rag-raw"
    scorer: str  # "lucene" | "okapi"
    mode: str  # "budget" | "top-k"

    @property
    def name(self) -> str:
        return f"{self.method}:{self.scorer}:{self.mode}"


def parse_variants(text: str) -> list[Variant]:
    variants = []
    for part in text.split(","):
        method, scorer, mode = part.strip().split(":")
        if (
            method not in ("memory", "rag-raw")
            or scorer not in ("lucene", "okapi")
            or mode not in ("budget", "top-k")
        ):
            raise ValueError(f"bad variant {part!r}: method:scorer:mode, e.g. memory:lucene:budget")
        variants.append(Variant(method, scorer, mode))
    return variants


def passages(chunks: list[str], max_tokens: int, counter: TokenCounter) -> list[str]:
    """The stream as passages of at most `max_tokens`: whole lines packed together; a longer line is
    cut at words."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in (line.strip() for chunk in chunks for line in chunk.splitlines()):
        while line and counter.count(line) > max_tokens:
            end = counter.prefix_end(line, max_tokens)
            if end <= 0:
                break
            if current:
                out.append("\n".join(current))
                current, size = [], 0
            out.append(line[:end].strip())
            line = line[end:].strip()
        if not line:
            continue
        tokens = counter.count(line)
        if current and size + tokens > max_tokens:
            out.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += tokens
    if current:
        out.append("\n".join(current))
    return out


class CachedCounter:
    """Counts each distinct short text once: the sweep counts the same items for every question and
    budget."""

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter
        self.name = getattr(counter, "name", type(counter).__name__)
        self._counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        if len(text) > 4000:  # whole prompts: each one is new, keeping them would only cost memory
            return self._counter.count(text)
        found = self._counts.get(text)
        if found is None:
            found = self._counts[text] = self._counter.count(text)
        return found

    def prefix_end(self, text: str, max_tokens: int) -> int:
        return self._counter.prefix_end(text, max_tokens)


def _retriever(scorer: str) -> Retriever:
    return Retriever(max_entries=64, scorer=scorer)  # type: ignore[arg-type]


def _query(qa: QA) -> str | None:
    return qa.query


def _context(
    state: MemoryState, qa: QA, retriever: Retriever, mode: str, budget: int, counter: TokenCounter, key: Any
) -> AnswerContext:
    return assemble_context(
        state,
        qa.question,
        retriever=retriever,
        k=TOP_K if mode == "top-k" else None,
        budget_tokens=budget,
        counter=counter,
        key=key,
        mode=mode,  # type: ignore[arg-type]
        query=_query(qa),
    )


async def sweep_episode(
    episode: Episode,
    memory: MemoryState,
    variants: Sequence[Variant],
    budgets: Sequence[int],
    retrievers: dict[str, Retriever],
    counter: TokenCounter,
    passage_tokens: int,
    evidence: dict[tuple[str, str], list[str]],
) -> list[dict[str, Any]]:
    answerer = ExtractiveAnswerer()
    raw = raw_memory(passages(episode.chunks, passage_tokens, counter))
    locomo = episode.data_source == "locomo"
    rows: list[dict[str, Any]] = []
    for variant in variants:
        state = memory if variant.method == "memory" else raw
        key = (variant.method, episode.instance_id)
        for number, qa in enumerate(episode.questions):
            turns = evidence.get((episode.instance_id, qa.question), []) if locomo else []
            for budget in budgets:
                context = _context(state, qa, retrievers[variant.scorer], variant.mode, budget, counter, key)
                reply = await answerer.answer(context)
                text = context.rendered()
                recall = gold_turn_recall(text, turns) if locomo else None
                rows.append(
                    {
                        "variant": variant.name,
                        "episode": episode.instance_id,
                        "question": number,
                        "category": qa.category,
                        "budget": budget,
                        "tokens_read": context.tokens,
                        "items": len(context.semantic) + len(context.episodic),
                        "score": score(episode.data_source, reply.text, qa.answers, category=qa.category),
                        "turn_recall": recall,
                        "answer_present": answer_present(
                            episode.data_source, text, qa.answers, category=qa.category, turn_recall=recall
                        ),
                        "prediction": reply.text,
                        **_update_outcome(episode, qa, reply.text),
                    }
                )
    return rows


def _update_outcome(episode: Episode, qa: QA, prediction: str) -> dict[str, float | None]:
    """Knowledge-update episodes (`locomo-updates`): is the answer the current value (and not the stale
    one), or the stale value?"""
    stale = episode.metadata.get("stale", {}).get(qa.question)
    if stale is None:
        return {"current": None, "stale": None}
    text = prediction.lower()
    has_old = stale.lower() in text
    return {"current": float(str(qa.answer).lower() in text and not has_old), "stale": float(has_old)}


def bootstrap_ci(diffs: Sequence[float], seed: int = 0) -> tuple[float, float]:
    values = np.asarray(diffs, dtype=float)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return fmean(present) if present else None


METRICS = ("score", "turn_recall", "answer_present", "tokens_read", "current", "stale")


def summarise(
    rows: list[dict[str, Any]], variants: Sequence[Variant], budgets: Sequence[int]
) -> dict[str, Any]:
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by[(row["variant"], row["budget"])].append(row)
    table = []
    for variant in variants:
        for budget in budgets:
            group = by[(variant.name, budget)]
            entry: dict[str, Any] = {"variant": variant.name, "budget": budget, "questions": len(group)}
            # .get: runs of an earlier version of this sweep lack the update metrics
            entry.update({metric: _mean([row.get(metric) for row in group]) for metric in METRICS})
            categories = sorted({row["category"] for row in group if row["category"] is not None})
            if categories:
                entry["by_category"] = {
                    str(c): {
                        "questions": sum(row["category"] == c for row in group),
                        "score": _mean([row["score"] for row in group if row["category"] == c]),
                        "turn_recall": _mean([row["turn_recall"] for row in group if row["category"] == c]),
                    }
                    for c in categories
                }
            table.append(entry)
    diffs = []
    for variant in variants:
        if variant.method != "memory":
            continue
        control = Variant("rag-raw", variant.scorer, variant.mode)
        if control not in variants:
            continue
        for budget in budgets:
            ours = {(r["episode"], r["question"]): r for r in by[(variant.name, budget)]}
            theirs = {(r["episode"], r["question"]): r for r in by[(control.name, budget)]}
            paired = sorted(ours.keys() & theirs.keys())
            entry = {
                "memory": variant.name,
                "control": control.name,
                "budget": budget,
                "questions": len(paired),
            }
            for metric in ("score", "turn_recall", "answer_present", "current"):
                values = [
                    ours[q][metric] - theirs[q][metric]
                    for q in paired
                    if ours[q].get(metric) is not None and theirs[q].get(metric) is not None
                ]
                low, high = bootstrap_ci(values)
                entry[metric] = {
                    "mean": fmean(values) if values else None,
                    "ci95": [low, high],
                    "n": len(values),
                }
            diffs.append(entry)
    return {"table": table, "differences": diffs}


async def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    settings = Settings(policy_backend="extractive", answerer_backend="extractive")
    build = BuildConfig(
        data_dir=Path(args.data_dir),
        file=args.data_file,
        episodes=args.episodes,
        questions=args.questions,
        seed=args.seed,
        counter=counter,
        articles=args.articles,
        records=args.records,
        labels=args.labels,
        shots=args.shots,
    )
    variants = parse_variants(args.variants)
    budgets = [int(b) for b in args.budgets.split(",")]
    episodes = build_episodes(args.dataset, build)
    evidence = locomo_evidence(str(build.source(LOCOMO_FILE))) if args.dataset == "locomo" else {}
    retrievers = {scorer: _retriever(scorer) for scorer in {v.scorer for v in variants}}
    policy = make_policy(settings)
    applier = applier_for(settings, counter)
    rows: list[dict[str, Any]] = []
    stored = []
    started = time.perf_counter()
    for episode in episodes:
        write_started = time.perf_counter()
        memory, _ = await write_memory(episode, policy, applier=applier, counter=counter)
        written_s = time.perf_counter() - write_started
        input_tokens = sum(counter.count(chunk) for chunk in episode.chunks)
        stored.append(
            {
                "episode": episode.instance_id,
                "input_tokens": input_tokens,
                "memory_tokens": memory_tokens(memory, counter),
                "items": len(memory.semantic) + len(memory.episodic),
                "write_s": round(written_s, 3),
                "questions": len(episode.questions),
            }
        )
        rows += await sweep_episode(
            episode, memory, variants, budgets, retrievers, counter, args.passage_tokens, evidence
        )
        print(f"{args.label} {args.dataset} {episode.instance_id}: {len(rows)} rows", file=sys.stderr)
    total_in = sum(s["input_tokens"] for s in stored)
    total_mem = sum(s["memory_tokens"] for s in stored)
    return {
        "label": args.label,
        "dataset": args.dataset,
        "command": " ".join(sys.argv),
        "token_counter": counter.name,
        "passage_tokens": args.passage_tokens,
        "variants": [v.name for v in variants],
        "budgets": budgets,
        "episodes": stored,
        "stored_share": total_mem / total_in if total_in else None,
        "elapsed_s": round(time.perf_counter() - started, 1),
        **summarise(rows, variants, budgets),
        "rows": rows,
    }


def write_run(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = result.pop("rows")
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate.sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sweep one data set")
    run.add_argument("--dataset", required=True)
    run.add_argument("--label", default="after", help="run label in plots and tables (e.g. before/after)")
    run.add_argument("--data-dir", default="../shared/data")
    run.add_argument("--data-file", type=Path, help="a file in the data set's format instead of its dev file")
    run.add_argument(
        "--variants",
        default="memory:lucene:budget,rag-raw:lucene:budget,memory:okapi:budget,rag-raw:okapi:budget",
    )
    run.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    run.add_argument("--passage-tokens", type=int, default=128)
    run.add_argument("--episodes", type=int)
    run.add_argument("--questions", type=int)
    run.add_argument("--articles", type=int, default=3)
    run.add_argument("--records", type=int, default=10)
    run.add_argument("--labels", type=int)
    run.add_argument("--shots", type=int, default=5)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--tokenizer-file")
    run.add_argument("--out", type=Path, required=True)
    report = sub.add_parser("report", help="plots and markdown from run JSONs")
    report.add_argument("runs", nargs="+", type=Path)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument(
        "--episodes", help="only these episodes (comma-separated ids), e.g. a held-out split of LoCoMo"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        write_run(asyncio.run(run_sweep(args)), args.out)
        return 0
    from trainer.evaluate.sweep_report import write_report

    only = set(args.episodes.split(",")) if args.episodes else None
    runs = [json.loads(path.read_text()) for path in args.runs]
    write_report(common_episodes(runs, args.runs, only), args.out)
    return 0


def common_episodes(
    runs: list[dict[str, Any]], paths: Sequence[Path], only: set[str] | None = None
) -> list[dict[str, Any]]:
    """Runs of one data set cut to the episodes they all have (from the rows beside each JSON), so that
    before/after tables compare the same questions; `only`: further cut to these episodes (a split)."""
    by_dataset: dict[str, set[str]] = {}
    for run in runs:
        episodes = {e["episode"] for e in run["episodes"]}
        if only is not None:
            episodes &= only
        by_dataset[run["dataset"]] = by_dataset.get(run["dataset"], episodes) & episodes
    out = []
    for run, path in zip(runs, paths, strict=True):
        keep = by_dataset[run["dataset"]]
        if keep == {e["episode"] for e in run["episodes"]}:
            out.append(run)
            continue
        rows_path = path.with_suffix(".rows.jsonl")
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
        rows = [row for row in rows if row["episode"] in keep]
        variants = parse_variants(",".join(run["variants"]))
        episodes = [e for e in run["episodes"] if e["episode"] in keep]
        stored = sum(e["memory_tokens"] for e in episodes) / sum(e["input_tokens"] for e in episodes)
        out.append(
            {**run, "episodes": episodes, "stored_share": stored, **summarise(rows, variants, run["budgets"])}
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
