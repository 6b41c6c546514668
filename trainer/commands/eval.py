"""`memalpha eval`: compare memory methods and raw-stream baselines on the same episodes, with the same
answerer, and write a report (JSON, markdown, PNG plots) under --out.

Example (the local vLLM server as policy and answerer, small sizes for a CPU):
    memalpha eval --dataset locomo,squad --methods extractive,openai:json,rag-raw,long-context \\
        --policy-url http://127.0.0.1:8011/v1 --policy-model qwen2.5-coder-0.5b \\
        --answerer openai --episodes 2 --questions 10 --chunk-tokens 512 --out reports/local

Flags override the `MEMALPHA_*` settings (endpoints, limits); every setting of the run is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from app.settings import ToolFormat


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate memory methods against baselines on episodes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("episodes")
    data.add_argument(
        "--dataset",
        required=True,
        help="comma-separated: locomo, squad, hotpotqa, trec, trec-fine, banking77, clinc150, hwu64, "
        "parquet:PATH, jsonl:PATH",
    )
    data.add_argument("--data-dir", default="../shared/data", help="root of the shared data sets")
    data.add_argument("--episodes", type=int, help="episodes per data set (default: all the data gives)")
    data.add_argument("--questions", type=int, help="questions per episode, a seeded sample (default: all)")
    data.add_argument(
        "--chunk-tokens", type=int, help="max tokens per chunk (default 2048; classification 1024)"
    )
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--articles", type=int, default=3, help="SQuAD: articles per episode")
    data.add_argument("--paragraphs", type=int, help="SQuAD: first N paragraphs of each article")
    data.add_argument(
        "--records", type=int, default=10, help="HotpotQA: questions whose paragraphs form an episode"
    )
    data.add_argument("--labels", type=int, help="classification: labels per episode (default: all)")
    data.add_argument("--shots", type=int, default=5, help="classification: labelled samples per label")
    data.add_argument("--sessions", type=int, help="LoCoMo: first N sessions of each conversation")
    data.add_argument("--save-episodes", help="also write the built episodes to this .parquet or .jsonl file")

    methods = parser.add_argument_group("methods and models")
    methods.add_argument(
        "--methods",
        default="extractive,rag-raw,long-context",
        help="comma-separated: extractive, openai[:alpha|hermes|native|json], rag-raw, "
        "long-context, full-context",
    )
    methods.add_argument("--policy-url", help="OpenAI-compatible base URL of the policy model")
    methods.add_argument("--policy-model", help="served name of the policy model")
    methods.add_argument(
        "--tool-format", choices=get_args(ToolFormat), help="format of a bare `openai` method"
    )
    methods.add_argument("--policy-max-tokens", type=int, help="max new tokens per policy reply")
    methods.add_argument("--policy-prompt-budget", type=int, help="policy prompt budget in tokens")
    methods.add_argument(
        "--answerer",
        choices=("extractive", "openai"),
        help="answerer backend, the same for every method (default: the settings', i.e. extractive)",
    )
    methods.add_argument("--answerer-url", help="answerer base URL (default: the policy URL)")
    methods.add_argument(
        "--answerer-model", help="served name of the answering model (default: the policy model)"
    )
    methods.add_argument("--answerer-max-tokens", type=int)
    methods.add_argument(
        "--judge-url", help="an OpenAI-compatible LLM judge of answers (LoCoMo's J); off when unset"
    )
    methods.add_argument("--judge-model", help="served name of the judge model (default: the answerer model)")
    methods.add_argument("--tokenizer-file", help="tokenizer.json for token counts (default: word estimate)")

    qa = parser.add_argument_group("answering")
    qa.add_argument("--k", type=int, help="items per memory kind in the top-k context (default 20)")
    qa.add_argument(
        "--answer-budget", type=int, help="answer prompt budget in tokens (default: the settings', 4096)"
    )
    qa.add_argument(
        "--answer-context",
        choices=("budget", "top-k"),
        help="what the answerer reads: the service default 'budget' (matching items of both kinds by "
        "score up to the budget) or the paper's 'top-k' per kind (default: the settings', i.e. budget)",
    )
    qa.add_argument(
        "--scorer",
        choices=("lucene", "okapi"),
        help="BM25 scorer: the service default 'lucene' or the paper's rank-bm25 'okapi' (default: the settings')",
    )
    qa.add_argument("--concurrency", type=int, default=4, help="questions in flight at once")
    qa.add_argument(
        "--parallel-episodes",
        type=int,
        default=1,
        help="episodes of one method written and answered at once (an LLM server batches them)",
    )

    parser.add_argument(
        "--record-prompts", action="store_true", help="keep every policy prompt in runs.jsonl"
    )
    parser.add_argument("--out", required=True, help="report directory, e.g. reports/locomo-dev")
    parser.set_defaults(func=run)


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "policy_url": args.policy_url,
        "policy_model": args.policy_model,
        "policy_tool_format": args.tool_format,
        "policy_max_tokens": args.policy_max_tokens,
        "policy_prompt_budget_tokens": args.policy_prompt_budget,
        "answerer_backend": args.answerer,
        "answerer_url": args.answerer_url,
        "answerer_model": args.answerer_model or (args.policy_model if args.answerer == "openai" else None),
        "answerer_max_tokens": args.answerer_max_tokens,
        "tokenizer_file": args.tokenizer_file,
        "answer_top_k": args.k,
        "answer_context_tokens": args.answer_budget,
        "answer_context": args.answer_context,
        "retrieval_scorer": args.scorer,
    }
    return {key: value for key, value in values.items() if value is not None}


def command_line(args: argparse.Namespace) -> str:
    """The run as one explicit command: every option with its effective value, defaults included."""
    parts = ["memalpha", "eval"]
    for key, value in vars(args).items():
        if key in ("func", "command") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def run(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.tokens import make_token_counter
    from trainer.episodes import BuildConfig, build_episodes, save_episodes
    from trainer.evaluate.harness import EvalConfig, JudgeSettings, evaluate
    from trainer.evaluate.methods import parse_methods
    from trainer.evaluate.report import markdown, write_report
    from trainer.runner import QASettings

    try:
        settings = Settings(**setting_overrides(args))
        methods = parse_methods(args.methods)
        if any(spec.backend == "openai" for spec in methods) and not settings.policy_url:
            raise ValueError("an openai method needs --policy-url (or MEMALPHA_POLICY_URL)")
    except ValueError as exc:
        print(f"memalpha eval: {exc}", file=sys.stderr)
        return 2
    counter = make_token_counter(settings.tokenizer_file)
    build = BuildConfig(
        data_dir=Path(args.data_dir),
        episodes=args.episodes,
        questions=args.questions,
        chunk_tokens=args.chunk_tokens,
        seed=args.seed,
        counter=counter,
        articles=args.articles,
        paragraphs=args.paragraphs,
        records=args.records,
        labels=args.labels,
        shots=args.shots,
        sessions=args.sessions,
    )
    datasets = [name.strip() for name in args.dataset.split(",") if name.strip()]
    qa = QASettings(
        k=settings.answer_top_k,
        budget_tokens=settings.answer_context_tokens,
        concurrency=args.concurrency,
        mode=settings.answer_context,
    )
    judge = None
    if args.judge_url:
        judge = JudgeSettings(args.judge_url, args.judge_model or settings.answerer_model)
    if args.save_episodes:
        save_episodes([e for name in datasets for e in build_episodes(name, build)], args.save_episodes)

    config = EvalConfig(
        datasets, methods, build, qa, settings, judge, args.record_prompts, args.parallel_episodes
    )
    started = datetime.now(UTC)
    results = asyncio.run(evaluate(config))
    header = {
        "command": command_line(args),
        "started": started.isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "token counter": counter.name,
        "answerer": settings.answerer_model if settings.answerer_backend == "openai" else "extractive",
        "policy model": settings.policy_model if any(s.backend == "openai" for s in methods) else "–",
        "sizes": (
            f"episodes={args.episodes or 'all'}, questions/episode={args.questions or 'all'}, "
            f"chunk tokens={build.chunk_limit()}, seed={args.seed}"
        ),
        "answer context / scorer / k / budget": (
            f"{qa.mode} / {settings.retrieval_scorer} / {qa.k if qa.mode == 'top-k' else '–'} / {qa.budget_tokens}"
        ),
    }
    recorded = {
        "settings": settings.model_dump(mode="json"),
        "build": {key: value for key, value in vars(build).items() if key != "counter"},
        "judge": vars(judge) if judge else None,
        "methods": [vars(spec) for spec in methods],
        "datasets": datasets,
    }
    out = Path(args.out)
    rows = write_report(out, results, [spec.name for spec in methods], header, recorded)
    print(markdown(rows, header))
    print(f"report written to {out}/ (report.md, report.json, runs.jsonl, PNG plots)")
    return 0
