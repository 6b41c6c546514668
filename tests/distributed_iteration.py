"""Training iterations of a config under `torchrun`: every process writes its adapter weights and the
history rows to `<out>/rank<N>.pt`. Run by tests/test_trainer_distributed.py with one and with several
CPU processes (DDP over gloo)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict

from app.settings import Settings
from trainer.config import TrainConfig
from trainer.loop import Trainer


async def main(config_file: Path, iterations: int, out: Path) -> None:
    config = TrainConfig.model_validate_json(config_file.read_text())
    trainer = Trainer(config, Settings(), progress=False)
    try:
        rows = [(await trainer.iteration()).row for _ in range(iterations)]
    finally:
        await trainer.aclose()
    weights = {
        name: tensor.detach().clone()
        for name, tensor in get_peft_model_state_dict(trainer.loaded.model).items()
    }
    accelerator = trainer.accelerator
    torch.save(
        {"world": accelerator.num_processes, "rows": rows, "weights": weights},
        out / f"rank{accelerator.process_index}.pt",
    )


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
