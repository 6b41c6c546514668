"""Prompt tokens per chunk at chunk 10 vs chunk 1,000 of one session.

One session reads a long real stream (SQuAD paragraphs and LoCoMo turns, packed into chunks); the
extractive policy writes its memory (instant, deterministic) through the engine's Applier. At chunks 10
and 1,000 the policy prompt for the next chunk is built exactly as the `openai` backend builds it
(`app.policy.build_messages`, every tool format), and its tokens are counted next to the memory's total
tokens: the prompt stays flat (only the 5 most recent items per kind are shown) while memory grows.

    python -m bench.prompt_tokens --data-dir ../shared/data [--chunk-tokens 256] [--tokenizer-file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from tqdm import tqdm

from app.memory import Applier, MemoryLimits, MemoryState
from app.policy import ExtractivePolicy, build_messages
from app.settings import Settings, ToolFormat
from app.tokens import make_token_counter
from bench.text_pool import load_pool
from trainer.episodes.packing import pack_units
from trainer.runner import memory_tokens

CHECKPOINTS = (10, 1000)


async def main_async(args: argparse.Namespace) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    counter = make_token_counter(args.tokenizer_file)
    pool = load_pool(args.data_dir)
    chunks = pack_units(pool.paragraphs, args.chunk_tokens, counter)
    distinct = len(chunks)
    while len(chunks) <= max(CHECKPOINTS):  # the stream must reach chunk 1,000 (+1 to prompt for)
        chunks += chunks
    limits = MemoryLimits(settings.core_token_limit, settings.max_item_tokens, settings.max_items_per_kind)
    applier, policy, state = Applier(limits, counter), ExtractivePolicy(counter, limits), MemoryState()
    measured: dict[int, dict[str, int]] = {}
    for index in tqdm(range(max(CHECKPOINTS)), desc="chunks", unit="chunk"):
        reply = await policy.propose(state, chunks[index])
        applier.apply_calls(state, reply.calls, now=datetime.now(UTC), seq=index + 1)
        done = index + 1
        if done in CHECKPOINTS:
            nxt = chunks[done]
            row = {
                "memory": memory_tokens(state, counter),
                "items": len(state.semantic) + len(state.episodic),
                "chunk": counter.count(nxt),
            }
            for fmt in get_args(ToolFormat):
                build = build_messages(
                    state, nxt, fmt, counter, settings.policy_prompt_budget_tokens, settings.policy_max_tokens
                )
                row[fmt] = build.prompt_tokens
                row[f"{fmt}_without_chunk"] = build.prompt_tokens - counter.count(nxt)
            measured[done] = row
    first, last = (measured[c] for c in CHECKPOINTS)
    repeats = " (the stream repeats: too little text)" if distinct <= max(CHECKPOINTS) else ""
    print(
        f"token counter: {counter.name}; chunks of <= {args.chunk_tokens} tokens, {distinct} in the stream{repeats}; "
        "extractive writer"
    )
    print(f"{'':>28} | {'chunk 10':>10} | {'chunk 1,000':>11} | ratio 1,000/10")
    print(
        f"{'memory tokens':>28} | {first['memory']:>10,} | {last['memory']:>11,} | {last['memory'] / first['memory']:.1f}x"
    )
    print(
        f"{'memory items':>28} | {first['items']:>10,} | {last['items']:>11,} | {last['items'] / first['items']:.1f}x"
    )
    for fmt in get_args(ToolFormat):
        key = f"{fmt}_without_chunk"
        print(
            f"{'prompt tokens (' + fmt + ')':>28} | {first[fmt]:>10,} | {last[fmt]:>11,} | "
            f"{last[fmt] / first[fmt]:.2f}x   (without the chunk: {first[key]:,} -> {last[key]:,}, "
            f"{last[key] / first[key]:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--tokenizer-file", help="the policy model's tokenizer.json (default: word estimate)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
