"""`memalpha train run|eval|publish`: GRPO training of the memory-writing policy on a LoRA adapter.

    memalpha train run --config trainer/configs/cpu-qwen0.5b.toml [--set run.iterations=4] [--no-resume]
    memalpha train eval --config CONFIG [--adapter runs/x/adapter [--skip-base]] [--label serving-]
    memalpha train publish --adapter runs/x/adapter --vllm-url http://127.0.0.1:8011/v1 \\
        --service-url http://127.0.0.1:8000 [--adapters-dir /adapters] [--admin-key KEY] \\
        [--canary-chunks 8] [--canary-margin 0.25] [--canary-episodes held-out.jsonl] [--force] [--no-canary]
    memalpha train publish --rollback --service-url http://127.0.0.1:8000 [--admin-key KEY]

`run` resumes from the newest checkpoint in run.out_dir unless --no-resume; it writes history.jsonl,
reward_curve.png, checkpoints/ and the final adapter/ (PEFT files + manifest.json), then registers the
adapter as a new policy version. `publish` copies the adapter into the write-once store
(--adapters-dir/<name>/, the directory vLLM's filesystem resolver reads), registers it, loads it on every
--vllm-url, runs the canary (K held-out chunks through the serving prompt path against the loaded
adapter, compared with the manifest's evaluation; see trainer/canary.py) and switches the service to it
only when the canary passes; re-running it after a crash completes it. It refuses an adapter whose
manifest's serving settings (tool format, response budget, prompt budget, token counter, max calls) differ
from those `GET /policy` reports; --force overrides both refusals and prints each difference it overrode
(every serving setting, trained vs served; every canary measure vs the manifest's). The admin key may also come from
MEMALPHA_ADMIN_KEY; the canary builds the serving policy from GET /policy's settings over this process's
MEMALPHA_* settings (temperature, memory limits: the service's configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_ADAPTERS_DIR = "runs/adapters"
# The publish canary (trainer/canary.py): K chunks, and how much worse than the manifest's evaluation its
# parse-error share and r2 may be. With 8 chunks one chunk moves either share by 0.125, and an honest
# adapter's 8-chunk sample scatters around its evaluation mean (the standard deviation of a share near 0.8
# over 8 chunks is 0.14): 0.25 — two chunks in eight, ~1.8 standard deviations — rarely refuses a good
# adapter, while what the canary is for (serving that differs from training: another prompt, format or
# budget; a broken adapter) moves parse errors and r2 by far more.
DEFAULT_CANARY_CHUNKS = 8
DEFAULT_CANARY_MARGIN = 0.25


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate and publish the memory-writing policy (GRPO)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="GRPO training run from a TOML config")
    _config_arguments(run)
    run.add_argument("--no-resume", action="store_true", help="start over even if out_dir has checkpoints")
    run.set_defaults(func=_run)

    evaluate = actions.add_parser("eval", help="held-out reward (r1, r2, …) of the base model and an adapter")
    _config_arguments(evaluate)
    evaluate.add_argument("--adapter", type=Path, help="adapter directory (default: the base model only)")
    evaluate.add_argument("--json", type=Path, help="also write the results here")
    evaluate.add_argument(
        "--label",
        default="",
        help="prefix of the per-episode record files (out_dir/evals/<label>base-greedy.jsonl)",
    )
    evaluate.add_argument(
        "--skip-base", action="store_true", help="evaluate the adapter only (the base model's records exist)"
    )
    evaluate.set_defaults(func=_eval)

    publish = actions.add_parser("publish", help="load an adapter into vLLM and make it the active policy")
    publish.add_argument("--adapter", type=Path, help="adapter directory with manifest.json")
    publish.add_argument("--name", help="served/registry name (default: the manifest's)")
    publish.add_argument(
        "--vllm-url", action="append", default=[], help="vLLM base URL …/v1; repeat per replica"
    )
    publish.add_argument(
        "--service-url", required=True, help="memory service base URL, e.g. http://127.0.0.1:8000"
    )
    publish.add_argument(
        "--admin-key",
        default=os.environ.get("MEMALPHA_ADMIN_KEY"),
        help="admin API key (default: $MEMALPHA_ADMIN_KEY)",
    )
    publish.add_argument(
        "--adapters-dir",
        type=Path,
        default=Path(DEFAULT_ADAPTERS_DIR),
        help="the write-once adapter store, at the same path as the vLLM servers see it (compose: /adapters)",
    )
    publish.add_argument("--rollback", action="store_true", help="switch back to the policy active before")
    publish.add_argument(
        "--canary-chunks",
        type=int,
        default=DEFAULT_CANARY_CHUNKS,
        help=f"held-out chunks the canary runs through the serving path (default {DEFAULT_CANARY_CHUNKS})",
    )
    publish.add_argument(
        "--canary-margin",
        type=float,
        default=DEFAULT_CANARY_MARGIN,
        help="how much worse than the manifest's evaluation parse errors (share of chunks) and r2 may be "
        f"(default {DEFAULT_CANARY_MARGIN}: two chunks in eight)",
    )
    publish.add_argument(
        "--canary-episodes",
        type=Path,
        help="canary set (.parquet/.jsonl episodes); default: the run's held-out episodes, rebuilt from the "
        "manifest's training config",
    )
    publish.add_argument(
        "--force",
        action="store_true",
        help="switch even if the service serves other settings than the adapter was trained under, or the "
        "canary fails (it still runs and is reported); prints each difference it overrode",
    )
    publish.add_argument(
        "--no-canary", action="store_true", help="switch without a canary (nothing checks the serving path)"
    )
    publish.set_defaults(func=_publish)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="TOML file (see trainer/configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. run.iterations=2 (value parsed as JSON if it can be)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _load(args: argparse.Namespace) -> Any:
    from trainer.config import load_config

    return load_config(args.config, _overrides(args.set))


def _run(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from trainer.loop import train

    result = train(_load(args), get_settings(), resume=not args.no_resume, progress=not args.no_progress)
    before, after = result.state.evals[0], result.state.evals[-1]
    print(f"adapter: {result.adapter_dir}  (policy name {result.name})")
    print(f"reward curve: {result.curve}")
    print(_table({"held-out before": before, "held-out after": after}))
    if result.registry_row is not None:
        print(f"registered policy {result.registry_row.name!r}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from trainer.loop import evaluate_adapter

    if args.skip_base and args.adapter is None:
        raise SystemExit("--skip-base needs --adapter")
    results = evaluate_adapter(
        _load(args),
        get_settings(),
        args.adapter,
        progress=not args.no_progress,
        label=args.label,
        include_base=not args.skip_base,
    )
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from app.policy.vllm_admin import VLLMAdminError
    from app.settings import get_settings
    from trainer.adapter_store import AdapterStoreError
    from trainer.canary import CanaryConfig
    from trainer.episodes.io import load_episodes
    from trainer.publish import CanaryRefused, PublishError, publish, rollback

    episodes = None
    if args.canary_episodes is not None:
        try:
            episodes = load_episodes(args.canary_episodes)
        except (OSError, ValueError, KeyError) as error:  # unreadable, unknown type, a row without a column
            print(
                f"memalpha train publish: --canary-episodes {args.canary_episodes}: {error!r}",
                file=sys.stderr,
            )
            return 2
    try:
        if args.rollback:
            switch = asyncio.run(rollback(service_url=args.service_url, admin_key=args.admin_key))
        else:
            if args.adapter is None or not args.vllm_url:
                raise SystemExit("publish needs --adapter and at least one --vllm-url")
            canary = None
            if not args.no_canary:
                canary = CanaryConfig(
                    settings=get_settings(),
                    chunks=args.canary_chunks,
                    margin=args.canary_margin,
                    force=args.force,
                    episodes=episodes,
                )
            switch = asyncio.run(
                publish(
                    args.adapter,
                    vllm_urls=args.vllm_url,
                    service_url=args.service_url,
                    admin_key=args.admin_key,
                    adapters_dir=args.adapters_dir,
                    canary=canary,
                    name=args.name,
                    force=args.force,
                )
            )
    except CanaryRefused as refused:
        print(json.dumps({"canary": refused.result.as_dict()}))
        print(f"memalpha train publish: {refused}", file=sys.stderr)
        return 1
    except (PublishError, VLLMAdminError, AdapterStoreError) as error:
        print(f"memalpha train publish: {error}", file=sys.stderr)
        return 1
    if switch.canary is not None:
        print(json.dumps({"canary": switch.canary.as_dict()}))
        print(switch.canary.summary())
    elif args.no_canary:
        print("no canary: the serving path was not checked before switching")
    if args.force and not args.rollback:
        if switch.overridden:
            print(f"--force overrode {len(switch.overridden)} failed check(s):")
            print("\n".join(f"  {line}" for line in switch.overridden))
        else:
            print("--force overrode nothing: every check passed")
    print(f"{switch.action}: active policy {switch.previous!r} → {switch.active!r}")
    return 0


def _table(rows: dict[str, dict[str, Any]]) -> str:
    keys = ["r1", "r2", "r3", "r4", "total", "episode_score"]
    keys += [
        key
        for key in ("sampled_r1", "sampled_r2", "sampled_total")
        if any(key in row for row in rows.values())
    ]
    lines = [f"{'':18}" + "".join(f"{key:>14}" for key in keys)]
    for label, row in rows.items():
        lines.append(f"{label:18}" + "".join(f"{row.get(key, float('nan')):>14.4f}" for key in keys))
    return "\n".join(lines)
