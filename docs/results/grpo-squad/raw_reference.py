"""The raw-chunk reference of the session of 2026-12-02 21:23 UTC (PREREGISTRATION.md, exploratory): the same
held-out episodes as every evaluation of the experiment, with memory = the episode's chunks verbatim
(`rag-raw`'s memory, no policy), answered through exactly r1's path (the trainer's engine: BM25Okapi, top k,
the context budget, the configured reader). Writes the evaluation record shape, so `trainer.paired` compares
it with any evaluation of the run:

    PYTHONPATH=$PWD .venv/bin/python docs/results/grpo-squad/raw_reference.py \\
        docs/results/grpo-squad/runs/raw-chunks/evals/raw-chunks-greedy.jsonl
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from app.settings import Settings
from app.tokens import make_token_counter
from trainer.config import load_config
from trainer.episodes import Episode
from trainer.evaluate.baselines import run_rag_raw
from trainer.loop import evaluated, split_episodes
from trainer.rollouts import Engine, InstanceGroup, episode_records, make_engine

CONFIG = "trainer/configs/cpu-squad-experiment.toml"


def held_out_setup() -> tuple[Engine, list[Episode]]:
    """r1's engine and the evaluated held-out episodes, exactly as the experiment's config builds them."""
    config = load_config(CONFIG)
    settings = Settings()
    engine = make_engine(config.reward, settings, make_token_counter(settings.tokenizer_file))
    split = split_episodes(config, engine.counter)
    return engine, evaluated(split.held_out, config.run.eval_per_group, config.data.eval_group)


async def main(out: Path) -> None:
    engine, held_out = held_out_setup()
    groups = []
    for episode in held_out:
        run = await run_rag_raw(
            episode,
            answerer=engine.answerer,
            qa=engine.qa,
            counter=engine.counter,
            retriever=engine.retriever,
        )
        groups.append(InstanceGroup(episode, [run], []))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(record, default=str) + "\n" for record in episode_records(groups)))
    print(f"{len(groups)} episodes → {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
