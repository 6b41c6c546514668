"""Running a chunk log through a policy into a scratch memory: the worker's per-chunk step without the
database, leases or audit log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.memory import Applier, MemoryState, Operation, OpResult
from app.policy.backend import PolicyError, PolicyReply
from app.replay.models import ChunkFailure
from app.replay.policies import ReplayPolicy

_PARSE_ERROR_SAMPLES = 10


def apply_reply(
    applier: Applier, state: MemoryState, reply: PolicyReply, *, now: datetime, source_seq: int
) -> list[OpResult]:
    """A policy reply's tool calls applied in order: the worker's commit step (app/ingest/worker.py),
    the one place a replay applies a reply."""
    ops = [Operation.from_call(call.name, call.arguments) for call in reply.calls]
    return applier.apply_all(state, ops, now=now, source_seq=source_seq)


@dataclass
class Replayed:
    state: MemoryState = field(default_factory=MemoryState)
    results: list[OpResult] = field(default_factory=list)
    parse_errors: int = 0
    parse_error_samples: list[str] = field(default_factory=list)
    failures: list[ChunkFailure] = field(default_factory=list)
    model: str | None = None
    latency_s: float = 0.0


async def replay_chunks(
    policy: ReplayPolicy,
    chunks: Sequence[tuple[int, str, datetime]],
    applier: Applier,
    *,
    timeout_s: float,
    progress: Callable[[int], None],
) -> Replayed:
    """`chunks`: (seq, content, accepted_at) in seq order. A chunk the policy fails on is recorded and
    leaves the memory as it was, as a failed chunk does in the live session."""
    out = Replayed()
    for done, (seq, content, accepted_at) in enumerate(chunks, start=1):
        started = time.perf_counter()
        try:
            view = await asyncio.to_thread(out.state.copy)  # CPU grows with the memory: off the event loop
            reply = await asyncio.wait_for(
                policy.backend.propose(view, content, model=policy.model), timeout=timeout_s
            )
        except (PolicyError, TimeoutError) as exc:
            out.failures.append(
                ChunkFailure(seq=seq, error=str(exc) or f"policy timed out after {timeout_s:.0f} s")
            )
        else:
            out.model = reply.model
            out.parse_errors += len(reply.parse_errors)
            room = _PARSE_ERROR_SAMPLES - len(out.parse_error_samples)
            out.parse_error_samples += [f"chunk {seq}: {error}" for error in reply.parse_errors[:room]]
            out.results += await asyncio.to_thread(
                apply_reply, applier, out.state, reply, now=accepted_at, source_seq=seq
            )
        out.latency_s += time.perf_counter() - started
        progress(done)
    return out
