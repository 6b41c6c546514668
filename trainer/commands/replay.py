"""`memalpha replay SESSION --policy NAME`: re-run a session's chunk log under a registered policy into a
scratch memory (the live memory is never touched) on a running service, and print the shadow diff:
items only in live / only in replay / changed, memory tokens, operations, parse errors, and answers from
both memories side by side. With `--data-source`, gold answers are scored here with that source's
scorer (evaluation code: the service only reports the answers). Needs an admin key when auth is on."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay a session under another policy and diff the memories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("session", help="the session to replay")
    parser.add_argument("--policy", required=True, help="a registered policy version")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the memalpha service")
    parser.add_argument("--key", default=os.environ.get("MEMALPHA_API_KEY"), help="admin API key")
    parser.add_argument("-q", "--question", action="append", default=[], help="a question (repeatable)")
    parser.add_argument(
        "--questions",
        type=Path,
        help='JSON file: [{"question", "answer"?, "category"?}, …] (category: LoCoMo\'s, for its scorer)',
    )
    parser.add_argument(
        "--data-source", help="score gold answers with this source's scorer (locomo, squad, …)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the replay")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class GoldQuestion:
    question: str
    answer: str | list[str] | None = None
    category: int | None = None


def run(args: argparse.Namespace) -> int:
    from app.client import MemalphaError, MemoryClient, ReplayQuestion, ReplayRequest
    from app.replay.report import render
    from trainer.evaluate.scorers import UnknownDataSource, score, scorer_name

    questions = [GoldQuestion(q) for q in args.question]
    if args.questions:
        questions += [_gold(entry) for entry in json.loads(args.questions.read_text())]
    scorer = None
    if args.data_source is not None:
        try:
            scorer = scorer_name(args.data_source)
        except UnknownDataSource as exc:
            print(f"memalpha replay: {exc}", file=sys.stderr)
            return 2
        if scorer == "locomo" and any(q.answer is not None and q.category is None for q in questions):
            print(
                "memalpha replay: LoCoMo scoring needs each gold-answered question's category",
                file=sys.stderr,
            )
            return 2
    request = ReplayRequest(
        policy=args.policy,
        questions=[ReplayQuestion(question=q.question, answer=q.answer) for q in questions],
    )
    try:
        with MemoryClient(args.url, args.key) as client:
            status = client.replay(args.session, request, timeout=args.timeout)
    except (MemalphaError, TimeoutError) as exc:
        print(f"memalpha replay: {exc}", file=sys.stderr)
        return 1
    scores: list[tuple[float, float] | None] = []
    if status.report is not None and args.data_source is not None:
        for question, pair in zip(questions, status.report.answers, strict=True):
            if question.answer is None:
                scores.append(None)
                continue
            live, replay = (
                score(args.data_source, text, question.answer, category=question.category)
                for text in (pair.live, pair.replay)
            )
            scores.append((live, replay))
    if args.json:
        document = status.model_dump(mode="json")
        if scores:
            document["scores"] = {"scorer": scorer, "pairs": [list(s) if s else None for s in scores]}
        print(json.dumps(document, indent=2))
    else:
        print(render(status, scores, scorer))
    return 0 if status.status == "done" else 1


def _gold(entry: dict[str, Any]) -> GoldQuestion:
    return GoldQuestion(entry["question"], entry.get("answer"), entry.get("category"))
