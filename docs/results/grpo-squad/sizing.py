"""Sizing before the run (PREREGISTRATION.md), for one tool format and response budget.

    sizing.py FORMAT BUDGET [EPISODES]   greedy replies of the base model on EPISODES held-out episodes (evenly
                                         spaced; default 3): per reply its chunk, length and truncation; per
                                         episode r1; CPU and wall seconds
    sizing.py FORMAT BUDGET iteration    one GRPO iteration of the experiment's config (rollouts + update):
                                         seconds, peak resident memory, what the rollouts did

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python docs/results/grpo-squad/sizing.py json 384
Further arguments KEY=VALUE override the config as `memalpha train run --set` does (e.g. model.path=DIR).
`json` is sampled under the service's schema constraint (trainer/sampling/constraint.py).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

from app.settings import Settings
from trainer.commands.train import _overrides
from trainer.config import load_config
from trainer.loop import Trainer
from trainer.runner import StepRecord


def _trainer(fmt: str, budget: int, kind: str, extra: dict[str, object]) -> Trainer:
    overrides: dict[str, object] = {
        **extra,
        "run.out_dir": f"/tmp/memalpha-sizing-{fmt}-{budget}-{kind}",
        "rollout.tool_format": fmt,
        "rollout.max_new_tokens": budget,
    }
    return Trainer(
        load_config("trainer/configs/cpu-squad-experiment.toml", overrides),
        Settings(_env_file=None),  # type: ignore[call-arg]
        progress=False,
    )


def _reply(step: StepRecord) -> dict[str, Any]:
    """One chunk step: its length and cut in sampled tokens (None: the policy failed), and the whole text."""
    sample = step.extras
    return {
        "chunk": step.index,
        "tokens": len(sample.completion_ids) if sample else None,
        "truncated": sample.truncated if sample else None,
        "repeat_stopped": sample.repeat_stopped if sample else None,
        "calls": len(step.calls),
        "text": step.raw_text,
    }


async def greedy(fmt: str, budget: int, count: int, extra: dict[str, object]) -> dict[str, Any]:
    trainer = _trainer(fmt, budget, "greedy", extra)
    held_out = trainer.split.held_out
    episodes = held_out[:: max(1, len(held_out) // count)][:count]  # revision 1: 304 // 5 = every 60th
    wall, cpu = time.perf_counter(), time.process_time()
    groups = await trainer.rollouts(episodes, group_size=1, temperature=0.0, label="sizing")
    steps = [step for group in groups for step in group.steps if step.sample]
    runs = [run for group in groups for run in group.runs]
    await trainer.aclose()
    return {
        "format": fmt,
        "budget": budget,
        "frequency_penalty": trainer.config.rollout.frequency_penalty,
        "repeat_stop_chars": trainer.config.rollout.repeat_stop_chars,
        "episodes": [episode.instance_id for episode in episodes],
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "completion_tokens": [len(step.sample.completion_ids) for step in steps if step.sample],
        "truncated": [step.sample.truncated for step in steps if step.sample],
        "repeat_stopped": [step.sample.repeat_stopped for step in steps if step.sample],
        "r1": [run.score for run in runs],
        "memory_tokens": [run.memory_tokens for run in runs],
        "input_tokens": [run.input_tokens for run in runs],
        "replies": [[_reply(step) for step in run.steps] for run in runs],
    }


async def iteration(fmt: str, budget: int, extra: dict[str, object]) -> dict[str, Any]:
    trainer = _trainer(fmt, budget, "iteration", extra)
    wall, cpu = time.perf_counter(), time.process_time()
    result = await trainer.iteration()
    await trainer.aclose()
    return {
        "format": fmt,
        "budget": budget,
        "frequency_penalty": trainer.config.rollout.frequency_penalty,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "row": result.row,
    }


if __name__ == "__main__":
    fmt, budget, mode = sys.argv[1], int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "3")
    extra = _overrides(sys.argv[4:])
    job = iteration(fmt, budget, extra) if mode == "iteration" else greedy(fmt, budget, int(mode), extra)
    print(json.dumps(asyncio.run(job), default=str), flush=True)
