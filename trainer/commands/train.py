"""`memalpha train run|eval|publish`: GRPO training of the memory-writing policy on a LoRA adapter.

    memalpha train run --config trainer/configs/cpu-qwen0.5b.toml [--set run.iterations=4] [--no-resume]
    memalpha train eval --config CONFIG [--adapter runs/x/adapter]
    memalpha train publish --adapter runs/x/adapter --vllm-url http://127.0.0.1:8011/v1 \\
        --service-url http://127.0.0.1:8000 [--admin-key KEY]
    memalpha train publish --rollback --service-url http://127.0.0.1:8000 [--admin-key KEY]

`run` resumes from the newest checkpoint in run.out_dir unless --no-resume; it writes history.jsonl,
reward_curve.png, checkpoints/ and the final adapter/ (PEFT files + manifest.json), then registers the
adapter as a new policy version. The admin key may also come from MEMALPHA_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_JOURNAL = "runs/publish-journal.jsonl"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="train, evaluate and publish the memory-writing policy (GRPO)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="GRPO training run from a TOML config")
    _config_arguments(run)
    run.add_argument("--no-resume", action="store_true", help="start over even if out_dir has checkpoints")
    run.set_defaults(func=_run)

    evaluate = actions.add_parser("eval", help="held-out reward (r1, r2, …) of the base model and an adapter")
    _config_arguments(evaluate)
    evaluate.add_argument("--adapter", type=Path, help="adapter directory (default: the base model only)")
    evaluate.add_argument("--json", type=Path, help="also write the results here")
    evaluate.set_defaults(func=_eval)

    publish = actions.add_parser("publish", help="load an adapter into vLLM and make it the active policy")
    publish.add_argument("--adapter", type=Path, help="adapter directory with manifest.json")
    publish.add_argument("--name", help="served/registry name (default: the manifest's)")
    publish.add_argument("--vllm-url", action="append", default=[], help="vLLM base URL …/v1; repeat per replica")
    publish.add_argument("--service-url", required=True, help="memory service base URL, e.g. http://127.0.0.1:8000")
    publish.add_argument("--admin-key", default=os.environ.get("MEMALPHA_ADMIN_KEY"),
                         help="admin API key (default: $MEMALPHA_ADMIN_KEY)")
    publish.add_argument("--journal", type=Path, default=Path(DEFAULT_JOURNAL), help="record of policy switches")
    publish.add_argument("--rollback", action="store_true", help="switch back to the policy active before")
    publish.set_defaults(func=_publish)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="TOML file (see trainer/configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. run.iterations=2 (value parsed as JSON if it can be)")
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
        print(f"registered policy {result.registry_row.get('name', result.name)!r}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from app.settings import get_settings
    from trainer.loop import evaluate_adapter

    results = evaluate_adapter(_load(args), get_settings(), args.adapter, progress=not args.no_progress)
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from trainer.publish import PublishError, publish, rollback
    from trainer.vllm_admin import VLLMAdminError

    try:
        if args.rollback:
            switch = asyncio.run(rollback(service_url=args.service_url, admin_key=args.admin_key,
                                          journal=args.journal))
        else:
            if args.adapter is None or not args.vllm_url:
                raise SystemExit("publish needs --adapter and at least one --vllm-url")
            switch = asyncio.run(publish(args.adapter, vllm_urls=args.vllm_url, service_url=args.service_url,
                                         admin_key=args.admin_key, journal=args.journal, name=args.name))
    except (PublishError, VLLMAdminError) as error:
        print(f"memalpha train publish: {error}", file=sys.stderr)
        return 1
    print(f"{switch.action}: active policy {switch.previous!r} → {switch.active!r}")
    return 0


def _table(rows: dict[str, dict[str, Any]]) -> str:
    keys = ["r1", "r2", "r3", "r4", "total", "episode_score"]
    keys += [key for key in ("sampled_r1", "sampled_r2", "sampled_total") if any(key in row for row in rows.values())]
    lines = [f"{'':18}" + "".join(f"{key:>14}" for key in keys)]
    for label, row in rows.items():
        lines.append(f"{label:18}" + "".join(f"{row.get(key, float('nan')):>14.4f}" for key in keys))
    return "\n".join(lines)
