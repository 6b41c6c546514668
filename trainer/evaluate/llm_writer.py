"""LLM memory writers in the budget sweep (issue 11, Build 4).

A local model writes the memory through the service's own `openai` policy backend (the request the
service sends: tool format `json`, the json-schema constraint of `app.policy.tools`), one call per LoCoMo
*session* (a session longer than `--chunk-tokens` is packed into several chunks), and the result is
swept like the extractive memory (`trainer.evaluate.sweep`): same extractive answerer, same budgets, same
gold-turn recall, paired bootstrap CIs against `rag-raw` and against the extractive memory.

A CPU-only model takes about a minute per chunk, so every reply is kept on disk as it arrives (one JSONL
line per chunk, keyed by the chunk's sha256): `write` resumes where it stopped, and `sweep` replays the
cached replies through the applier (`--partial` sweeps conversations whose writes are not finished, with
the uncached chunks left unwritten, and says so in the summary).

    python -m trainer.evaluate.llm_writer write --writer memory-llm-1.5b --url http://127.0.0.1:8013/v1 \\
        --model qwen2.5-coder-1.5b --conversations conv-30,conv-26 --cache DIR
    python -m trainer.evaluate.llm_writer sweep --writers memory-llm-1.5b,memory-llm-0.5b \\
        --conversations conv-30,conv-26 --cache DIR --out docs/results/sweep/llm-writer.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from app.backends import make_policy
from app.memory import MemoryState, TokenCounter
from app.policy.backend import PolicyBackend, PolicyError, PolicyReply, Usage
from app.policy.parser import ToolCall
from app.settings import Settings
from app.tokens import make_token_counter
from trainer.corpus.locomo import load_locomo, pack_lines
from trainer.episodes import BuildConfig, Episode, build_episodes
from trainer.episodes.locomo import DEFAULT_FILE as LOCOMO_FILE
from trainer.evaluate.harness import applier_for
from trainer.evaluate.recall import locomo_evidence
from trainer.evaluate.sweep import BUDGETS, CachedCounter, Variant, _retriever, bootstrap_ci, sweep_episode
from trainer.runner import memory_tokens, write_memory

EXTRACTIVE = "memory-extractive"
RAG = "rag-raw"
SCORER = "lucene"
MODE = "budget"


def session_episodes(
    data_dir: Path,
    data_file: Path | None,
    names: Sequence[str],
    chunk_tokens: int,
    counter: TokenCounter,
    sessions: int | None = None,
) -> list[Episode]:
    """The named LoCoMo conversations as episodes (their questions of categories 1–4), chunked one session
    per chunk, so that a conversation costs one LLM call per session (19–32 here). `sessions`: the first N
    sessions only, with the questions whose evidence lies in them (a sweep of unfinished writes)."""
    config = BuildConfig(data_dir=data_dir, file=data_file, counter=counter, sessions=sessions)
    by_name = {episode.instance_id: episode for episode in build_episodes("locomo", config)}
    conversations = {c.sample_id: c for c in load_locomo(config.source(LOCOMO_FILE))}
    out = []
    for name in names:
        conversation = conversations[name]
        if sessions is not None:
            conversation = conversation.first_sessions(sessions)
        by_session: dict[int, list[str]] = defaultdict(list)
        for turn in conversation.turns:
            by_session[turn.session].append(turn.line())
        chunks = [
            chunk
            for number in sorted(by_session)
            for chunk in pack_lines(by_session[number], chunk_tokens, counter)
        ]
        out.append(replace(by_name[name], chunks=chunks))
    return out


def _key(chunk: str) -> str:
    return hashlib.sha256(chunk.encode()).hexdigest()


class CachedPolicy:
    """A policy backend that answers from the on-disk reply cache and asks `inner` (when given) for
    chunks it has not seen, appending each new reply to the cache before returning it."""

    name = "cached"

    def __init__(self, path: Path, inner: PolicyBackend | None) -> None:
        self.path = path
        self.inner = inner
        self.replies: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                self.replies[record["key"]] = record
        self.failed = False

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        record = self.replies.get(_key(chunk))
        if record is None:
            if self.inner is None or self.failed:
                # Later chunks wait for the missing one, so that every cached reply saw the memory that
                # the chunks before it wrote.
                raise PolicyError("not written yet (no cached reply for this chunk or one before it)")
            try:
                reply = await self.inner.propose(state, chunk, model=model)
            except PolicyError:
                self.failed = True
                raise
            record = {
                "key": _key(chunk),
                "chunk_start": chunk[:80],
                "calls": [asdict(call) for call in reply.calls],
                "raw_text": reply.raw_text,
                "parse_errors": reply.parse_errors,
                "prompt_tokens": reply.usage.prompt_tokens,
                "completion_tokens": reply.usage.completion_tokens,
                "model": reply.model,
                "latency_s": round(reply.latency_s, 2),
                "visible_items": reply.visible_items,
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            self.replies[record["key"]] = record
        return PolicyReply(
            calls=[ToolCall(**call) for call in record["calls"]],
            raw_text=record["raw_text"],
            usage=Usage(record["prompt_tokens"], record["completion_tokens"]),
            model=record["model"],
            latency_s=record["latency_s"],
            parse_errors=list(record["parse_errors"]),
            visible_items=record["visible_items"],
        )

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


def _cache_file(cache: Path, writer: str, episode: str) -> Path:
    return cache / writer / f"{episode}.jsonl"


def writer_settings(url: str, model: str, timeout_s: float, max_tokens: int) -> Settings:
    """The service's settings for an `openai` policy with the json tool format: the request it sends."""
    return Settings(
        policy_backend="openai",
        policy_url=url,
        policy_model=model,
        policy_tool_format="json",
        policy_timeout_s=timeout_s,
        policy_max_retries=0,  # a timed-out chunk is retried by running `write` again
        policy_max_tokens=max_tokens,
        answerer_backend="extractive",
    )


async def write(args: argparse.Namespace) -> int:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    settings = writer_settings(args.url, args.model, args.timeout_s, args.max_tokens)
    applier = applier_for(settings, counter)
    names = args.conversations.split(",")
    failed = 0
    for episode in session_episodes(
        Path(args.data_dir), args.data_file, names, args.chunk_tokens, counter, args.sessions
    ):
        policy = CachedPolicy(
            _cache_file(args.cache, args.writer, episode.instance_id), make_policy(settings)
        )

        def progress(step: Any, episode: Episode = episode) -> None:
            status = (
                f"error: {step.error}" if step.error else f"{len(step.calls)} calls, {step.latency_s:.1f} s"
            )
            print(
                f"[{time.strftime('%H:%M:%S')}] {args.writer} {episode.instance_id} chunk {step.index + 1}/"
                f"{len(episode.chunks)} ({step.chunk_tokens} tokens): {status}",
                file=sys.stderr,
                flush=True,
            )

        _, steps = await write_memory(episode, policy, applier=applier, counter=counter, on_step=progress)
        failed += sum(step.error is not None for step in steps)
        await policy.aclose()
    return 1 if failed else 0


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    counter = CachedCounter(make_token_counter(args.tokenizer_file))
    settings = Settings(policy_backend="extractive", answerer_backend="extractive")
    applier = applier_for(settings, counter)
    extractive = make_policy(settings)
    names = args.conversations.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    episodes = session_episodes(
        Path(args.data_dir), args.data_file, names, args.chunk_tokens, counter, args.sessions
    )
    evidence = locomo_evidence(
        str(BuildConfig(data_dir=Path(args.data_dir), file=args.data_file).source(LOCOMO_FILE))
    )
    retrievers = {SCORER: _retriever(SCORER)}
    writers = args.writers.split(",")
    methods = [EXTRACTIVE, *writers]
    rows: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []
    examples: dict[str, list[str]] = {}
    for episode in episodes:
        input_tokens = sum(counter.count(chunk) for chunk in episode.chunks)
        memories: dict[str, MemoryState] = {}
        for method in methods:
            policy = (
                extractive
                if method == EXTRACTIVE
                else CachedPolicy(_cache_file(args.cache, method, episode.instance_id), None)
            )
            memory, steps = await write_memory(episode, policy, applier=applier, counter=counter)
            written = [step for step in steps if step.error is None]
            if len(written) < len(steps) and not args.partial:
                raise SystemExit(
                    f"{method} {episode.instance_id}: {len(steps) - len(written)} of {len(steps)} chunks not written "
                    "yet; run `write` to finish, or sweep with --partial"
                )
            memories[method] = memory
            llm_steps = [step for step in written if method != EXTRACTIVE]
            stored.append(
                {
                    "method": method,
                    "episode": episode.instance_id,
                    "chunks": len(steps),
                    "chunks_written": len(written),
                    "input_tokens": input_tokens,
                    "memory_tokens": memory_tokens(memory, counter),
                    "semantic": len(memory.semantic),
                    "episodic": len(memory.episodic),
                    "core_tokens": counter.count(memory.core),
                    "calls": sum(len(step.calls) for step in written),
                    "parse_errors": sum(len(step.parse_errors) for step in written),
                    "failed_calls": sum(
                        result.status == "error" for step in written for result in step.results
                    ),
                    "latency_s_mean": fmean(step.latency_s for step in llm_steps) if llm_steps else None,
                    "completion_tokens_mean": fmean(step.completion_tokens for step in llm_steps)
                    if llm_steps
                    else None,
                }
            )
            examples.setdefault(method, [])
            examples[method] += [
                f"[{episode.instance_id} semantic] {item.content}" for item in memory.semantic[:3]
            ]
            examples[method] += [
                f"[{episode.instance_id} episodic] {item.content}" for item in memory.episodic[:3]
            ]
            examples[method] += [f"[{episode.instance_id} core] {memory.core}"] if memory.core else []
        for method, memory in [*memories.items(), (RAG, None)]:
            variant = Variant("memory" if memory is not None else "rag-raw", SCORER, MODE)
            got = await sweep_episode(
                episode,
                memory or MemoryState(),
                [variant],
                budgets,
                retrievers,
                counter,
                args.passage_tokens,
                evidence,
            )
            rows += [{**row, "variant": method} for row in got]
        print(f"swept {episode.instance_id}: {len(rows)} rows", file=sys.stderr, flush=True)
    methods.append(RAG)
    return {
        "dataset": "locomo",
        "command": " ".join(sys.argv),
        "token_counter": counter.name,
        "chunking": f"one chunk per LoCoMo session (packed at {args.chunk_tokens} tokens)",
        "sessions": args.sessions or "all",
        "passage_tokens": args.passage_tokens,
        "answerer": "extractive",
        "methods": methods,
        "budgets": budgets,
        "episodes": stored,
        "stored_share": {
            method: sum(s["memory_tokens"] for s in stored if s["method"] == method)
            / sum(s["input_tokens"] for s in stored if s["method"] == method)
            for method in methods
            if method != RAG
        },
        **summarise(rows, methods, budgets),
        "examples": examples,
        "rows": rows,
    }


def summarise(rows: list[dict[str, Any]], methods: Sequence[str], budgets: Sequence[int]) -> dict[str, Any]:
    """Means per method and budget, and paired differences (with 95% bootstrap CIs over questions) of each
    written memory against rag-raw and of each LLM memory against the extractive one."""
    by: dict[tuple[str, int], dict[tuple[str, int], dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by[(row["variant"], row["budget"])][(row["episode"], row["question"])] = row
    table = []
    for method in methods:
        for budget in budgets:
            group = list(by[(method, budget)].values())
            entry: dict[str, Any] = {"method": method, "budget": budget, "questions": len(group)}
            for metric in ("score", "turn_recall", "answer_present", "tokens_read"):
                values = [row[metric] for row in group if row[metric] is not None]
                entry[metric] = fmean(values) if values else None
            table.append(entry)
    pairs = [(m, RAG) for m in methods if m != RAG] + [
        (m, EXTRACTIVE) for m in methods if m not in (RAG, EXTRACTIVE)
    ]
    diffs = []
    for ours, control in pairs:
        for budget in budgets:
            mine, theirs = by[(ours, budget)], by[(control, budget)]
            paired = sorted(mine.keys() & theirs.keys())
            entry = {"method": ours, "control": control, "budget": budget, "questions": len(paired)}
            for metric in ("score", "turn_recall"):
                values = [
                    mine[q][metric] - theirs[q][metric]
                    for q in paired
                    if mine[q][metric] is not None and theirs[q][metric] is not None
                ]
                low, high = bootstrap_ci(values)
                entry[metric] = {
                    "mean": fmean(values) if values else None,
                    "ci95": [low, high],
                    "n": len(values),
                }
            diffs.append(entry)
    return {"table": table, "differences": diffs}


def _span(budgets: list[int]) -> str:
    def short(n: int) -> str:
        return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)

    return f"{short(min(budgets))}…{short(max(budgets))}"


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in result["methods"]:
        entries = [e for e in result["table"] if e["method"] == method]
        tokens = [e["tokens_read"] for e in entries]
        for ax, metric in zip(axes, ("turn_recall", "score"), strict=True):
            ax.plot(tokens, [e[metric] for e in entries], marker="o", label=method)
    for ax, title in zip(axes, ("gold-turn recall", "F1 (extractive answerer)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"tokens the answerer read per question (mean, budgets {_span(result['budgets'])})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    episodes = sorted({e["episode"] for e in result["episodes"]})
    questions = result["table"][0]["questions"]
    fig.suptitle(
        f"LoCoMo {', '.join(episodes)} ({questions} questions): LLM writers vs extractive vs rag-raw"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def markdown(result: dict[str, Any]) -> str:
    """The sweep's tables: what each writer stored, recall/F1 per budget, paired differences, examples."""
    lines = [
        (
            f"Chunking: {result['chunking']}; sessions: {result['sessions']}; rag-raw passages ≤ "
            f"{result['passage_tokens']} tokens; answerer: {result['answerer']}; token counter: {result['token_counter']}."
        ),
        "",
        (
            "| method | conversation | chunks written | input tokens | memory tokens | semantic | episodic | core tokens "
            "| calls | failed calls | parse errors | s per chunk | reply tokens per chunk |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result["episodes"]:
        latency = f"{e['latency_s_mean']:.1f}" if e["latency_s_mean"] is not None else "–"
        reply = f"{e['completion_tokens_mean']:.0f}" if e["completion_tokens_mean"] is not None else "–"
        lines.append(
            f"| {e['method']} | {e['episode']} | {e['chunks_written']}/{e['chunks']} | {e['input_tokens']} "
            f"| {e['memory_tokens']} | {e['semantic']} | {e['episodic']} | {e['core_tokens']} | {e['calls']} "
            f"| {e['failed_calls']} | {e['parse_errors']} | {latency} | {reply} |"
        )
    shares = ", ".join(f"{method} {share:.3f}" for method, share in result["stored_share"].items())
    lines += ["", f"Stored share of the input: {shares}.", ""]
    lines += [
        "| method | budget | questions | F1 | gold-turn recall | answer in context | tokens read |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["table"]:
        cells = [
            f"{e[m]:.3f}" if e[m] is not None else "–" for m in ("score", "turn_recall", "answer_present")
        ]
        lines.append(
            f"| {e['method']} | {e['budget']} | {e['questions']} | {' | '.join(cells)} | {e['tokens_read']:.0f} |"
        )
    lines += [
        "",
        "Paired differences (same questions), mean [95% bootstrap CI]:",
        "",
        "| method | control | budget | n | Δ F1 | Δ gold-turn recall |",
        "|---|---|---|---|---|---|",
    ]
    for d in result["differences"]:
        cells = []
        for metric in ("score", "turn_recall"):
            value = d[metric]
            cells.append(
                f"{value['mean']:+.3f} [{value['ci95'][0]:+.3f}, {value['ci95'][1]:+.3f}]"
                if value["mean"] is not None
                else "–"
            )
        lines.append(
            f"| {d['method']} | {d['control']} | {d['budget']} | {d['questions']} | {' | '.join(cells)} |"
        )
    lines += [
        "",
        "First stored items of each method (3 semantic, 3 episodic, the core, per conversation):",
        "",
    ]
    for method, items in result["examples"].items():
        lines.append(f"**{method}**")
        lines.append("")
        lines += [f"- {item}" for item in items]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate.llm_writer")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default="../shared/data")
    common.add_argument("--data-file", type=Path)
    common.add_argument("--conversations", default="conv-30,conv-26", help="LoCoMo sample ids, in order")
    common.add_argument(
        "--chunk-tokens", type=int, default=2048, help="a longer session is packed into more chunks"
    )
    common.add_argument(
        "--cache", type=Path, required=True, help="reply cache: <cache>/<writer>/<conversation>.jsonl"
    )
    common.add_argument("--tokenizer-file")
    common.add_argument(
        "--sessions", type=int, help="first N sessions of each conversation (and the questions about them)"
    )
    w = sub.add_parser("write", parents=[common], help="write (or resume writing) memories with one LLM")
    w.add_argument("--writer", required=True, help="method name in the sweep, e.g. memory-llm-1.5b")
    w.add_argument("--url", required=True, help="OpenAI-compatible base URL")
    w.add_argument("--model", required=True, help="the served model name")
    w.add_argument("--timeout-s", type=float, default=1800.0)
    w.add_argument("--max-tokens", type=int, default=Settings.model_fields["policy_max_tokens"].default)
    s = sub.add_parser(
        "sweep", parents=[common], help="sweep the cached memories against rag-raw and extractive"
    )
    s.add_argument("--writers", required=True, help="comma-separated writer names with caches")
    s.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    s.add_argument("--passage-tokens", type=int, default=128)
    s.add_argument(
        "--partial", action="store_true", help="sweep unfinished writes (uncached chunks unwritten)"
    )
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "write":
        return asyncio.run(write(args))
    result = asyncio.run(sweep(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = result.pop("rows")
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    plot(result, args.out.with_suffix(".png"))
    args.out.with_suffix(".tables.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
