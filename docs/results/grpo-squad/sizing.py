"""Sizing before the run (PREREGISTRATION.md), for one tool format and response budget.

    sizing.py FORMAT BUDGET [EPISODES]   greedy replies of the base model on EPISODES held-out episodes (every
                                         60th; default 3): lengths, truncation, r1, CPU and wall seconds
    sizing.py FORMAT BUDGET iteration    one GRPO iteration of the experiment's config (rollouts + update):
                                         seconds, peak resident memory, what the rollouts did

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python docs/results/grpo-squad/sizing.py json 384
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
from trainer.config import load_config
from trainer.loop import Trainer


def _trainer(fmt: str, budget: int, kind: str) -> Trainer:
    overrides: dict[str, object] = {
        "run.out_dir": f"/tmp/memalpha-sizing-{fmt}-{budget}-{kind}",
        "rollout.tool_format": fmt,
        "rollout.max_new_tokens": budget,
    }
    return Trainer(
        load_config("trainer/configs/cpu-squad-experiment.toml", overrides),
        Settings(_env_file=None),  # type: ignore[call-arg]
        progress=False,
    )


async def greedy(fmt: str, budget: int, count: int) -> dict[str, Any]:
    trainer = _trainer(fmt, budget, "greedy")
    episodes = trainer.split.held_out[::60][:count]
    wall, cpu = time.perf_counter(), time.process_time()
    groups = await trainer.rollouts(episodes, group_size=1, temperature=0.0, label="sizing")
    steps = [step for group in groups for step in group.steps if step.sample]
    runs = [run for group in groups for run in group.runs]
    await trainer.aclose()
    return {
        "format": fmt,
        "budget": budget,
        "episodes": len(episodes),
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "completion_tokens": [len(step.sample.completion_ids) for step in steps if step.sample],
        "truncated": [step.sample.truncated for step in steps if step.sample],
        "r1": [run.score for run in runs],
        "reply_start": [run.steps[0].raw_text[:400] for run in runs],
    }


async def iteration(fmt: str, budget: int) -> dict[str, Any]:
    trainer = _trainer(fmt, budget, "iteration")
    wall, cpu = time.perf_counter(), time.process_time()
    result = await trainer.iteration()
    await trainer.aclose()
    return {
        "format": fmt,
        "budget": budget,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "row": result.row,
    }


if __name__ == "__main__":
    fmt, budget, mode = sys.argv[1], int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "3")
    job = iteration(fmt, budget) if mode == "iteration" else greedy(fmt, budget, int(mode))
    print(json.dumps(asyncio.run(job), default=str), flush=True)
