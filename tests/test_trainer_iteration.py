"""A full GRPO iteration on a tiny random Qwen2 on CPU: rollouts through the app's engine → SPEC §6
rewards → PPO-clip update of a LoRA adapter → adapter + manifest → a new `policies` row.

The update must move the model in the direction of the advantages: completions with a positive
advantage gain log-probability, completions with a negative one lose it. Resuming from a checkpoint
must land on the very same weights as an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft.utils import get_peft_model_state_dict

from app.service import MemoryService
from app.settings import Settings
from trainer.config import TrainConfig
from trainer.episodes import QA, Episode, save_episodes
from trainer.eval_progress import PARTIAL_DIR, FinishedEpisodes
from trainer.grpo import completion_logprobs
from trainer.loop import InfrastructureFailure, Trainer
from trainer.manifest import read_manifest
from trainer.models import load_policy
from trainer.rollouts import InstanceGroup

pytestmark = pytest.mark.slow

FACTS = [
    ("Paris is the capital of France.", "What is the capital of France?", "Paris"),
    ("Berlin is the capital of Germany.", "What is the capital of Germany?", "Berlin"),
    ("Rome is the capital of Italy.", "What is the capital of Italy?", "Rome"),
    ("Madrid is the capital of Spain.", "What is the capital of Spain?", "Madrid"),
]


def _episodes(path: Path) -> Path:
    episodes = []
    for number in range(4):
        first, second = FACTS[number], FACTS[(number + 1) % len(FACTS)]
        episodes.append(
            Episode(
                f"capitals-{number}",
                "squad",
                [first[0], second[0]],
                [QA(first[1], first[2]), QA(second[1], second[2])],
            )
        )
    save_episodes(episodes, path)
    return path


def _config(tmp_path: Path, out: str, iterations: int, eval_episodes: int = 1) -> TrainConfig:
    data = f"jsonl:{_episodes(tmp_path / 'episodes.jsonl')}"
    return TrainConfig.model_validate(
        {
            "model": {"source": "tiny", "name": "tiny-qwen2", "path": str(tmp_path / "tiny-base")},
            "lora": {"r": 4, "alpha": 8},
            "data": {"train": [data], "eval": [data], "eval_episodes": eval_episodes},
            "rollout": {"group_size": 4, "instances_per_iteration": 2, "max_new_tokens": 12},
            "grpo": {"learning_rate": 0.01, "kl_coef": 0.01, "warmup_ratio": 0.0},
            "run": {"out_dir": str(tmp_path / out), "iterations": iterations, "seed": 7},
        }
    )


def _settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")


async def test_one_iteration_moves_log_probs_with_the_advantages_and_registers(tmp_path: Path) -> None:
    config = _config(tmp_path, "run", iterations=1)
    settings = _settings(tmp_path)
    trainer = Trainer(config, settings, progress=False)
    try:
        trainer.state.evals.append(await trainer.evaluate())
        result = await trainer.iteration()
        samples = result.samples
        assert len(samples) == 2 * 4 * 2  # instances × G × chunks: every chunk step is a sample
        positive = [s for s in samples if s.advantage > 0.1]
        negative = [s for s in samples if s.advantage < -0.1]
        assert positive and negative, "the rewards of a group must differ for GRPO to learn"
        with torch.no_grad():
            delta = {
                id(s): float(completion_logprobs(trainer.loaded.model, s).sum() - sum(s.old_logprobs))
                for s in samples
            }
        gained = sum(delta[id(s)] for s in positive) / len(positive)
        lost = sum(delta[id(s)] for s in negative) / len(negative)
        assert gained > 0 > lost, f"mean Δlog-prob: positive advantage {gained:+.4f}, negative {lost:+.4f}"
        assert sum(s.advantage * delta[id(s)] for s in samples) > 0
        assert result.row["samples"] == 16 and result.row["optimizer_steps"] == 1

        trainer.state.evals.append(await trainer.evaluate())
        finished = await trainer.finish()
    finally:
        await trainer.aclose()

    manifest = read_manifest(finished.adapter_dir)
    assert manifest["name"] == finished.name and manifest["base_model"] == "tiny-qwen2"
    assert len(manifest["chat_template_sha256"]) == 64
    assert manifest["reward_curve"][0]["iteration"] == 1 and manifest["config"]["grpo"]["clip_eps"] == 0.2
    assert "off" in manifest["r4"]
    assert [row["iteration"] for row in manifest["eval"]] == [0, 1]
    assert finished.registry_row is not None and finished.registry_row.name == finished.name

    # The saved adapter reproduces the trained model's log-probs.
    reloaded = load_policy(
        config.model,
        config.lora,
        adapter_dir=finished.adapter_dir,
        trainable=False,
        tiny_dir=Path(config.model.path or ""),
    )
    with torch.no_grad():
        for sample in samples[:3]:
            assert torch.allclose(
                completion_logprobs(reloaded.model, sample),
                completion_logprobs(trainer.loaded.model, sample),
                atol=1e-5,
            )

    service = MemoryService(settings)
    await service.start(run_workers=False)
    try:
        switched = await service.policies.set_policy(finished.name)
        assert switched.name == finished.name
        assert (await service.policies.get_policy()).name == finished.name
    finally:
        await service.stop()


async def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    def adapter_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.loaded.model).items()}

    straight = Trainer(_config(tmp_path, "straight", iterations=2), _settings(tmp_path), progress=False)
    for _ in range(2):
        await straight.iteration()
    expected = adapter_weights(straight)
    await straight.aclose()

    first = Trainer(_config(tmp_path, "resumed", iterations=2), _settings(tmp_path), progress=False)
    await first.iteration()
    from trainer.checkpoint import save_checkpoint

    save_checkpoint(first.out_dir, first.loaded.model, first.optimizer, first.scheduler, first.state)
    await first.aclose()

    second = Trainer(_config(tmp_path, "resumed", iterations=2), _settings(tmp_path), progress=False)
    assert second.resume() and second.state.iteration == 1
    await second.iteration()
    got = adapter_weights(second)
    await second.aclose()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key
    history = [json.loads(line) for line in (second.out_dir / "history.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in history] == [1, 2]


def test_cli_run_writes_curve_adapter_and_registry_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    config = _config(tmp_path, "cli", iterations=2)
    path = tmp_path / "train.toml"
    path.write_text(
        "[model]\nsource = 'tiny'\nname = 'tiny-qwen2'\n"
        f"path = '{config.model.path}'\n"
        "[lora]\nr = 4\nalpha = 8\n"
        f"[data]\ntrain = ['{config.data.train[0]}']\neval = ['{config.data.eval[0]}']\neval_episodes = 1\n"
        "[rollout]\ngroup_size = 2\ninstances_per_iteration = 1\nmax_new_tokens = 8\n"
        f"[run]\nout_dir = '{config.run.out_dir}'\niterations = 5\n"
    )
    monkeypatch.setenv("MEMALPHA_DATABASE_URL", _settings(tmp_path).database_url)
    from app.settings import get_settings

    get_settings.cache_clear()
    try:
        assert (
            main(["train", "run", "--config", str(path), "--set", "run.iterations=2", "--no-progress"]) == 0
        )
    finally:
        get_settings.cache_clear()
    out = Path(config.run.out_dir)
    assert (out / "reward_curve.png").stat().st_size > 10_000
    assert [json.loads(line)["iteration"] for line in (out / "history.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]
    manifest = read_manifest(out / "adapter")
    assert [row["iteration"] for row in manifest["eval"]] == [0, 2]
    assert f"registered policy {manifest['name']!r}" in capsys.readouterr().out

    # `train eval --skip-base` evaluates the final adapter alone and reproduces the run's last evaluation.
    get_settings.cache_clear()
    try:
        args = ["train", "eval", "--config", str(path), "--adapter", str(out / "adapter"), "--no-progress"]
        assert main([*args, "--skip-base", "--label", "again-"]) == 0
    finally:
        get_settings.cache_clear()
    assert not (out / "evals" / "again-base-greedy.jsonl").exists()
    again = (out / "evals" / "again-adapter-greedy.jsonl").read_text().splitlines()
    final = (out / "evals" / "iter0002-greedy.jsonl").read_text().splitlines()
    assert [json.loads(line)["r1"] for line in again] == [json.loads(line)["r1"] for line in final]
    assert [json.loads(line)["raw_text"] for line in again] == [
        json.loads(line)["raw_text"] for line in final
    ]
    contexts = {
        (json.loads(line)["answer_context"], json.loads(line)["answer_context_tokens"]) for line in again
    }
    assert contexts == {("top-k", 30_000)}  # what r1 was read at, for analyses that rebuild the memory
    with pytest.raises(SystemExit, match="--skip-base needs --adapter"):
        main(["train", "eval", "--config", str(path), "--skip-base"])


async def test_run_stops_when_the_infrastructure_fails_too_many_rollouts(tmp_path: Path) -> None:
    """An unreachable answerer (real HTTP, closed port): every rollout is dropped, the iteration stops
    before the update, nothing is trained and nothing is logged as if the policy had scored 0."""
    config = _config(tmp_path, "down", iterations=1)
    config.reward.answerer, config.reward.answerer_url, config.reward.answerer_model = (
        "openai",
        "http://127.0.0.1:9/v1",
        "m",
    )
    trainer = Trainer(config, _settings(tmp_path), progress=False)
    try:
        with pytest.raises(InfrastructureFailure, match="100% of the rollouts"):
            await trainer.iteration()
    finally:
        await trainer.aclose()
    assert trainer.state.optimizer_steps == 0 and trainer.state.history == []
    assert not (tmp_path / "down" / "history.jsonl").exists()


async def test_an_evaluation_cut_short_resumes_with_the_episodes_it_had_not_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held-out evaluation keeps each episode as it finishes: a new process rolls out only the others and
    writes the same records as an unbroken evaluation; for other weights nothing kept is reused."""

    def records(trainer: Trainer, label: str) -> list[tuple[str, float | None, list[str]]]:
        lines = (trainer.out_dir / "evals" / f"{label}-greedy.jsonl").read_text().splitlines()
        return [(r["instance_id"], r["r1"], r["raw_text"]) for r in map(json.loads, lines)]

    def new_trainer() -> Trainer:
        return Trainer(_config(tmp_path, "cut", 1, eval_episodes=3), _settings(tmp_path), progress=False)

    async def cut_short(label: str) -> list[str]:
        """Evaluate until the first episode is kept, then die (the task is cancelled mid-evaluation)."""
        trainer = new_trainer()
        kept: list[str] = []
        keep = FinishedEpisodes.keep

        def keep_then_die(progress: FinishedEpisodes, group: InstanceGroup) -> None:
            keep(progress, group)
            kept.append(group.episode.instance_id)
            task.cancel()

        with monkeypatch.context() as patch:
            patch.setattr(FinishedEpisodes, "keep", keep_then_die)
            task = asyncio.ensure_future(trainer.evaluate(label))
            with pytest.raises(asyncio.CancelledError):
                await task
        await trainer.aclose()
        assert not (trainer.out_dir / "evals" / f"{label}-greedy.jsonl").exists()
        return kept

    async def resume(trainer: Trainer, label: str) -> list[str]:
        """Evaluate; the episodes it rolled out."""
        rolled: list[str] = []
        rollouts = trainer.rollouts

        async def spy(episodes: list[Episode], **settings: Any) -> list[InstanceGroup]:
            rolled.extend(episode.instance_id for episode in episodes)
            return await rollouts(episodes, **settings)

        with monkeypatch.context() as patch:
            patch.setattr(trainer, "rollouts", spy)
            await trainer.evaluate(label)
        await trainer.aclose()
        return rolled

    unbroken = Trainer(_config(tmp_path, "unbroken", 1, eval_episodes=3), _settings(tmp_path), progress=False)
    await unbroken.evaluate("final")
    await unbroken.aclose()
    expected = records(unbroken, "final")
    assert len(expected) == 3

    kept = await cut_short("final")
    assert len(kept) == 1
    resumed = new_trainer()
    rolled = await resume(resumed, "final")
    assert sorted(rolled) == sorted({instance for instance, _, _ in expected} - set(kept))
    assert records(resumed, "final") == expected  # greedy: what the unbroken evaluation wrote, in its order
    assert not (resumed.out_dir / "evals" / PARTIAL_DIR).exists()

    # The control: a cut evaluation, then other weights. Nothing kept for the first weights is reused.
    kept = await cut_short("other")
    changed = new_trainer()
    with torch.no_grad():
        next(p for n, p in changed.loaded.model.named_parameters() if "lora_B" in n).add_(0.05)
    rolled = await resume(changed, "other")
    assert sorted(rolled) == sorted(instance for instance, _, _ in expected)
    assert not (changed.out_dir / "evals" / PARTIAL_DIR).exists()  # the stale episodes are gone too


async def test_a_run_stopped_after_its_rollouts_resumes_with_the_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stopped between an iteration's rollouts and its checkpoint: the next one updates on
    the kept rollouts and lands, two iterations on, on the very weights of an uninterrupted run (the random
    number generators continue from where the rollouts left them). The `json` format's masks:
    test_trainer_constraint.py, `test_kept_rollouts_leave_the_masks_out_and_replay_them`."""

    def new_trainer(out: str) -> Trainer:
        return Trainer(_config(tmp_path, out, iterations=3), _settings(tmp_path), progress=False)

    def adapter_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.loaded.model).items()}

    straight = new_trainer("straight")
    rows = [(await straight.iteration()).row for _ in range(3)]
    expected = adapter_weights(straight)
    await straight.aclose()

    first = new_trainer("resumed")
    await first.iteration()
    first._checkpoint()

    def stopped(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt("the session ended")

    with monkeypatch.context() as patch:
        patch.setattr("trainer.loop.grpo_update", stopped)
        with pytest.raises(KeyboardInterrupt):
            await first.iteration()
    await first.aclose()
    pending = first.out_dir / "checkpoints" / "rollouts-000002.pt"
    assert pending.exists()

    second = new_trainer("resumed")
    assert second.resume() and second.state.iteration == 1
    rolled: list[int] = []
    rollouts = second.rollouts

    async def spy(episodes: list[Episode], **settings: Any) -> list[InstanceGroup]:
        rolled.append(len(episodes))
        return await rollouts(episodes, **settings)

    monkeypatch.setattr(second, "rollouts", spy)
    resumed = (await second.iteration()).row
    assert rolled == [], "the kept rollouts were used"
    for key in ("r1", "total", "samples", "trained_samples", "truncation_rate"):
        assert resumed[key] == rows[1][key], key
    second._checkpoint()
    assert not pending.exists()
    await second.iteration()
    assert rolled == [2]
    got = adapter_weights(second)
    await second.aclose()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


async def test_a_sampled_evaluation_leaves_the_random_generators_as_it_found_them(tmp_path: Path) -> None:
    """Training after an evaluation does not depend on how much of it ran in this process."""
    config = _config(tmp_path, "sampled", 1)
    config.run.eval_samples = 2
    trainer = Trainer(config, _settings(tmp_path), progress=False)
    before = torch.get_rng_state()
    try:
        row = await trainer.evaluate()
    finally:
        await trainer.aclose()
    assert "sampled_r1" in row
    assert torch.equal(torch.get_rng_state(), before)
