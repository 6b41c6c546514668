"""`memalpha demo`: the memory engine without the service.

Reads a LoCoMo file (one conversation) or a plain text file, feeds it chunk by chunk through the very
same path the service uses (policy → parser → `Applier.apply_calls`), prints the memory,
answers `--ask` questions and, for LoCoMo, a seeded sample of its scored QA items with token F1.
No database and no HTTP server are involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay inside `run` so that `memalpha --help` is instant
    from app.memory import Applier, MemoryState, TokenCounter
    from app.policy.backend import PolicyBackend
    from app.qa import AnswerResult
    from app.settings import Settings
    from trainer.corpus import QAItem


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo",
        help="ingest a text or LoCoMo file into memory and answer questions from it (no service)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="a LoCoMo JSON file or a plain text file")
    policy = parser.add_argument_group("policy (memory writer)")
    policy.add_argument("--policy", choices=("extractive", "openai"), help="backend (default: settings)")
    policy.add_argument("--policy-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8011/v1")
    policy.add_argument("--policy-model", help="model name the server answers to")
    policy.add_argument("--tool-format", choices=("alpha", "hermes", "native", "json"))
    answerer = parser.add_argument_group("answerer")
    answerer.add_argument("--answerer", choices=("extractive", "openai"), help="backend (default: settings)")
    answerer.add_argument("--answerer-url", help="OpenAI-compatible base URL (default: the policy URL)")
    answerer.add_argument("--answerer-model")
    answerer.add_argument("--k", type=int, help="items retrieved per kind (default: settings, 20)")
    answerer.add_argument("--answer-budget", type=int, help="token budget of the answer prompt")
    source = parser.add_argument_group("input")
    source.add_argument("--conversation", help="LoCoMo sample id, e.g. conv-26 (default: the first)")
    source.add_argument("--sessions", type=int, help="LoCoMo: only the first N sessions (and their QA items)")
    source.add_argument("--chunk-tokens", type=int, help="max tokens per chunk (default: settings)")
    source.add_argument(
        "--tokenizer-file", help="HF tokenizer.json for token counts (default: word estimate)"
    )
    parser.add_argument(
        "--ask", action="append", default=[], metavar="QUESTION", help="a question; repeatable"
    )
    parser.add_argument(
        "--sample-qa",
        type=int,
        default=0,
        metavar="N",
        help="LoCoMo: answer N sampled QA items of categories 1-4 and report token F1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the QA sample")
    parser.add_argument(
        "--show-items",
        type=int,
        default=10,
        metavar="N",
        help="print the N most recent items of each kind (-1: all)",
    )
    parser.add_argument("--json-out", metavar="PATH", help="write a machine-readable summary here")
    parser.set_defaults(func=run)


@dataclass
class IngestStats:
    chunks: int = 0
    input_tokens: int = 0
    seconds: float = 0.0
    failed_chunks: int = 0
    parse_errors: int = 0
    calls: int = 0
    operations: Counter[str] = field(default_factory=Counter)  # by OpResult status
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


def run(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("nltk") is None:  # the LoCoMo F1 scorer's stemmer (the eval extra)
        print("memalpha demo needs the eval extra: pip install 'memalpha[eval]'", file=sys.stderr)
        return 2
    from pydantic import ValidationError

    from app.errors import ServiceError
    from app.settings import Settings

    overrides = {
        "policy_backend": args.policy,
        "policy_url": args.policy_url,
        "policy_model": args.policy_model,
        "policy_tool_format": args.tool_format,
        "answerer_backend": args.answerer,
        "answerer_url": args.answerer_url,
        "answerer_model": args.answerer_model,
        "answer_top_k": args.k,
        "answer_context_tokens": args.answer_budget,
        "max_chunk_tokens": args.chunk_tokens,
        "tokenizer_file": args.tokenizer_file,
    }
    try:
        settings = Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        print(f"memalpha demo: invalid settings: {error}", file=sys.stderr)
        return 2
    if not Path(args.file).is_file():
        print(f"memalpha demo: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args, settings))
    except ServiceError as error:  # e.g. the answering model is unreachable
        print(f"memalpha demo: {error.message}", file=sys.stderr)
        return 1


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from app.backends import make_answerer, make_policy
    from app.memory import Applier, MemoryLimits, MemoryState
    from app.qa import answer_question
    from app.retrieval import Retriever
    from app.tokens import make_token_counter
    from trainer.corpus import is_locomo_file, load_conversation, load_locomo, read_text_chunks

    counter = make_token_counter(settings.tokenizer_file)
    qa_items: list[QAItem] = []
    source: dict[str, Any] = {"file": str(args.file)}
    if is_locomo_file(args.file):
        try:
            conversation = (
                load_conversation(args.file, args.conversation)
                if args.conversation
                else load_locomo(args.file)[0]
            )
        except KeyError as error:
            print(f"memalpha demo: {error.args[0]}", file=sys.stderr)
            return 2
        if args.sessions:
            conversation = conversation.first_sessions(args.sessions)
        chunks = conversation.chunks(settings.max_chunk_tokens, counter)
        qa_items = [qa for qa in conversation.qa if qa.scored]
        source |= {
            "format": "locomo",
            "conversation": conversation.sample_id,
            "sessions": conversation.session_count,
            "turns": len(conversation.turns),
        }
    else:
        chunks = read_text_chunks(args.file, settings.max_chunk_tokens, counter)
        source |= {"format": "text"}
    if args.sample_qa and not qa_items:
        print("memalpha demo: --sample-qa needs a LoCoMo file with scored QA items", file=sys.stderr)
        return 2

    policy = make_policy(settings)
    answerer = make_answerer(settings)
    retriever = Retriever(settings.retrieval_cache_entries, settings.retrieval_scorer)
    limits = MemoryLimits(
        core_tokens=settings.core_token_limit,
        max_item_tokens=settings.max_item_tokens,
        max_items_per_kind=settings.max_items_per_kind,
    )
    applier = Applier(limits, counter)
    state = MemoryState()
    print(
        f"{source['file']}: {len(chunks)} chunks of at most {settings.max_chunk_tokens} tokens "
        f"(token counter: {counter.name}); policy: {settings.policy_backend}"
        + (
            f" {settings.policy_model} ({settings.policy_tool_format})"
            if settings.policy_backend == "openai"
            else ""
        )
    )
    try:
        stats = await _ingest(policy, applier, state, chunks, counter)
        memory_tokens = _print_memory(state, counter, args.show_items)
        _print_stats(stats, memory_tokens)

        async def ask(question: str) -> AnswerResult:
            return await answer_question(
                state,
                question,
                retriever=retriever,
                answerer=answerer,
                k=settings.answer_top_k,
                budget_tokens=settings.answer_context_tokens,
                counter=counter,
            )

        asked = []
        for question in args.ask:
            asked.append(await ask(question))
            _print_answer(asked[-1])
        sampled = await _sample_qa(ask, qa_items, args.sample_qa, args.seed)
    finally:
        await policy.aclose()
        await answerer.aclose()

    if args.json_out:
        summary = {
            "source": source,
            "settings": {
                "policy_backend": settings.policy_backend,
                "policy_model": settings.policy_model,
                "tool_format": settings.policy_tool_format,
                "answerer_backend": settings.answerer_backend,
                "answerer_model": settings.answerer_model
                if settings.answerer_backend == "openai"
                else "extractive",
                "chunk_tokens": settings.max_chunk_tokens,
                "k": settings.answer_top_k,
                "answer_budget": settings.answer_context_tokens,
                "token_counter": counter.name,
            },
            "ingest": asdict(stats)
            | {"chunks_per_s": stats.chunks_per_s, "operations": dict(stats.operations)},
            "memory": {
                "semantic_items": len(state.semantic),
                "episodic_items": len(state.episodic),
                "core_tokens": counter.count(state.core),
                "memory_tokens": memory_tokens,
                "core": state.core,
            },
            "asks": [asdict(result) for result in asked],
            "qa": sampled,
        }
        Path(args.json_out).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"summary written to {args.json_out}")
    return 0


async def _ingest(
    policy: PolicyBackend, applier: Applier, state: MemoryState, chunks: list[str], counter: TokenCounter
) -> IngestStats:
    from tqdm import tqdm

    from app.policy.backend import PolicyError

    stats = IngestStats(input_tokens=sum(counter.count(chunk) for chunk in chunks))
    started = time.perf_counter()
    progress = tqdm(chunks, desc="ingest", unit="chunk", file=sys.stderr)
    for seq, chunk in enumerate(progress):
        try:
            reply = await policy.propose(state, chunk)
        except PolicyError as error:  # the demo goes on with the next chunk; the service would retry
            stats.failed_chunks += 1
            tqdm.write(f"chunk {seq}: policy failed: {error}", file=sys.stderr)
            continue
        stats.parse_errors += len(reply.parse_errors)
        stats.calls += len(reply.calls)
        stats.prompt_tokens += reply.usage.prompt_tokens
        stats.completion_tokens += reply.usage.completion_tokens
        for result in applier.apply_calls(state, reply.calls, now=datetime.now(UTC), seq=seq + 1):
            stats.operations[result.status] += 1
        progress.set_postfix(semantic=len(state.semantic), episodic=len(state.episodic))
    stats.chunks = len(chunks)
    stats.seconds = time.perf_counter() - started
    return stats


def _print_memory(state: MemoryState, counter: TokenCounter, show: int) -> int:
    """Print core, counts and the most recent items; return the memory's size in tokens."""
    from app.memory import LIST_KINDS

    print("\n== core memory ==")
    print(state.core or "(empty)")
    total = counter.count(state.core)
    for kind in LIST_KINDS:
        items = state.items(kind)
        tokens = sum(counter.count(item.content) for item in items)
        total += tokens
        shown = items if show < 0 else items[-show:] if show > 0 else []
        print(
            f"\n== {kind.value} memory: {len(items)} items, {tokens} tokens"
            + (f" (the {len(shown)} most recent)" if 0 < len(shown) < len(items) else "")
            + " =="
        )
        for item in shown:
            print(f"[{item.id}] {item.content}")
    return total


def _print_stats(stats: IngestStats, memory_tokens: int) -> None:
    ops = ", ".join(f"{status} {count}" for status, count in sorted(stats.operations.items())) or "none"
    print(
        f"\ningested {stats.chunks} chunks ({stats.input_tokens} tokens) in {stats.seconds:.1f} s: "
        f"{stats.chunks_per_s:.2f} chunks/s; {stats.calls} tool calls (operations: {ops}); "
        f"{stats.parse_errors} parse errors; {stats.failed_chunks} failed chunks"
    )
    ratio = 1 - memory_tokens / stats.input_tokens if stats.input_tokens else 0.0
    print(f"memory: {memory_tokens} tokens (compression 1 - memory/input = {ratio:.3f})")


def _print_answer(result: AnswerResult) -> None:
    print(f"\nQ: {result.question}\nA: {result.answer}")
    top = sorted([*result.semantic, *result.episodic], key=lambda e: -e.score)[:3]
    for evidence in top:
        print(f"   evidence [{evidence.id}] {evidence.score:.2f}: {evidence.content[:160]}")


async def _sample_qa(
    ask: Callable[[str], Awaitable[AnswerResult]], qa_items: list[QAItem], count: int, seed: int
) -> dict[str, Any] | None:
    from trainer.evaluate.scorers import locomo_f1

    if count <= 0:
        return None
    sample = random.Random(seed).sample(qa_items, min(count, len(qa_items)))
    rows = []
    print(f"\n== {len(sample)} sampled QA items (categories 1-4, seed {seed}) ==")
    for number, qa in enumerate(sample, start=1):
        result = await ask(qa.question)
        f1 = locomo_f1(result.answer, qa.answer or "", qa.category)
        rows.append(
            {
                "question": qa.question,
                "gold": qa.answer,
                "category": qa.category,
                "prediction": result.answer,
                "f1": f1,
                "latency_s": result.latency_s,
            }
        )
        print(
            f"{number:3d}. [cat {qa.category}] F1 {f1:.3f}  Q: {qa.question}\n"
            f"     gold: {qa.answer}\n     pred: {result.answer[:200]}"
        )
    by_category: dict[int, list[float]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row["f1"])
    mean = sum(row["f1"] for row in rows) / len(rows)
    per_category = {str(c): sum(v) / len(v) for c, v in sorted(by_category.items())}
    print(
        f"mean F1 over {len(rows)} items: {mean:.3f}; by category: "
        + ", ".join(f"{c}: {v:.3f} ({len(by_category[int(c)])})" for c, v in per_category.items())
    )
    return {"items": rows, "mean_f1": mean, "by_category": per_category, "seed": seed}
