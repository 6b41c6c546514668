"""Aggregate episode runs per data set × method and write the report: `report.json` (settings + rows),
`runs.jsonl` (every episode run: answers, steps, final memory), `report.md` (tables) and PNG plots.

Averaging rule (stated in every report): a row's score, evidence recall and judge score are means over
all its answered questions (micro average); memory and input tokens are means per episode; compression
is 1 − Σ memory / Σ input over the row's episodes; calls, tokens and wall time are totals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.memory import LIST_KINDS
from trainer.evaluate.harness import DatasetRuns, dataset_label
from trainer.runner import EpisodeRun

AVERAGING = (
    "score, evidence recall and judge: mean over all questions of the row (micro); memory/input tokens: mean per "
    "episode; compression: 1 - sum(memory)/sum(input); LLM calls/tokens and wall time: totals"
)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Row:
    dataset: str
    method: str
    episodes: int
    skipped: int
    questions: int
    score: float | None
    evidence_recall: float | None
    judge: float | None
    categories: dict[int, float] = field(default_factory=dict)
    category_counts: dict[int, int] = field(default_factory=dict)
    memory_tokens: float = 0.0
    input_tokens: float = 0.0
    compression: float = 0.0
    llm_calls: int = 0
    llm_tokens: int = 0
    policy_calls: int = 0
    policy_failures: int = 0  # chunks whose policy call failed after retries (nothing written)
    ops: dict[str, int] = field(default_factory=dict)  # ok / skipped / error over all steps
    parse_errors: int = 0
    answer_errors: int = 0  # questions the answerer could not be reached for (scored 0)
    write_s: float = 0.0
    answer_s: float = 0.0


def summarize(dataset: str, method: str, runs: Sequence[EpisodeRun]) -> Row:
    done = [run for run in runs if run.skipped is None]
    answers = [answer for run in done for answer in run.answers]
    by_category: dict[int, list[float]] = defaultdict(list)
    for answer in answers:
        if answer.category is not None:
            by_category[answer.category].append(answer.score)
    ops: dict[str, int] = {"ok": 0, "skipped": 0, "error": 0}
    for run in done:
        for step in run.steps:
            for result in step.results:
                ops[result.status] += 1
    judged = [a.judged for a in answers if a.judged is not None]
    total_input = sum(run.input_tokens for run in done)
    total_memory = sum(run.memory_tokens for run in done)
    return Row(
        dataset=dataset,
        method=method,
        episodes=len(done),
        skipped=len(runs) - len(done),
        questions=len(answers),
        score=_mean([a.score for a in answers]),
        evidence_recall=_mean([a.evidence_recall for a in answers]),
        judge=_mean(judged),
        categories={category: sum(v) / len(v) for category, v in sorted(by_category.items())},
        category_counts={category: len(v) for category, v in sorted(by_category.items())},
        memory_tokens=total_memory / len(done) if done else 0.0,
        input_tokens=total_input / len(done) if done else 0.0,
        compression=1 - total_memory / total_input if total_input else 0.0,
        llm_calls=sum(run.llm_calls for run in done),
        llm_tokens=sum(run.llm_tokens for run in done),
        policy_calls=sum(run.policy_calls for run in done),
        policy_failures=sum(1 for run in done for step in run.steps if step.error is not None),
        ops=ops,
        parse_errors=sum(len(step.parse_errors) for run in done for step in run.steps),
        answer_errors=sum(1 for answer in answers if answer.error is not None),
        write_s=sum(run.write_s for run in done),
        answer_s=sum(run.answer_s for run in done),
    )


def rows_of(results: Sequence[DatasetRuns], methods: Sequence[str]) -> list[Row]:
    rows = []
    for result in results:
        for method in methods:
            runs = [run for run in result.runs if run.method == method]
            rows.append(summarize(dataset_label(result.dataset), method, runs))
    return rows


def run_record(dataset: str, run: EpisodeRun) -> dict[str, Any]:
    """One episode run as JSON: answers, steps and the final memory (when the method wrote one)."""
    memory = None
    if run.state is not None:
        memory = {
            "core": run.state.core,
            **{
                kind.value: [{"id": item.id, "content": item.content} for item in run.state.items(kind)]
                for kind in LIST_KINDS
            },
        }
    steps = [
        {
            "index": step.index,
            "chunk_tokens": step.chunk_tokens,
            "memory_tokens_before": step.memory_tokens_before,
            "calls": [{"name": call.name, "arguments": call.arguments} for call in step.calls],
            "results": [asdict(result) for result in step.results],
            "raw_text": step.raw_text,
            "parse_errors": step.parse_errors,
            "prompt_tokens": step.prompt_tokens,
            "completion_tokens": step.completion_tokens,
            "latency_s": round(step.latency_s, 4),
            "visible_items": step.visible_items,
            "model": step.model,
            "error": step.error,
            "messages": step.messages,
        }
        for step in run.steps
    ]
    return {
        "dataset": dataset,
        "instance_id": run.instance_id,
        "data_source": run.data_source,
        "method": run.method,
        "skipped": run.skipped,
        "score": run.score,
        "input_tokens": run.input_tokens,
        "memory_tokens": run.memory_tokens,
        "compression": run.compression,
        "llm_calls": run.llm_calls,
        "llm_tokens": run.llm_tokens,
        "write_s": run.write_s,
        "answer_s": run.answer_s,
        "answers": [asdict(answer) for answer in run.answers],
        "steps": steps,
        "memory": memory,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[Row], header: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {', '.join(sorted({row.dataset for row in rows}))}", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [f"- averaging: {AVERAGING}", ""]
    has_judge = any(row.judge is not None for row in rows)
    columns = [
        "dataset",
        "method",
        "episodes",
        "questions",
        "score",
        *(["judge"] if has_judge else []),
        "evidence recall",
        "memory tok/ep",
        "input tok/ep",
        "compression",
        "LLM calls",
        "LLM tokens",
        "ops ok/skip/err",
        "failed policy/parse/answer",
        "write s",
        "answer s",
    ]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        episodes = f"{row.episodes}" + (f" (+{row.skipped} skipped)" if row.skipped else "")
        cells = [
            row.dataset,
            row.method,
            episodes,
            str(row.questions),
            _fmt(row.score),
            *([_fmt(row.judge)] if has_judge else []),
            _fmt(row.evidence_recall),
            f"{row.memory_tokens:,.0f}",
            f"{row.input_tokens:,.0f}",
            f"{row.compression:.3f}",
            str(row.llm_calls),
            f"{row.llm_tokens:,}",
            f"{row.ops.get('ok', 0)}/{row.ops.get('skipped', 0)}/{row.ops.get('error', 0)}",
            f"{row.policy_failures}/{row.parse_errors}/{row.answer_errors}",
            f"{row.write_s:.1f}",
            f"{row.answer_s:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    categorised = [row for row in rows if row.categories]
    if categorised:
        categories = sorted({c for row in categorised for c in row.categories})
        lines += [
            "",
            (
                "Per category (LoCoMo: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop; token F1, "
                "questions in brackets):"
            ),
            "",
        ]
        lines += [
            "| dataset | method | " + " | ".join(f"cat {c}" for c in categories) + " |",
            "|" + "---|" * (len(categories) + 2),
        ]
        for row in categorised:
            cells = [f"{_fmt(row.categories.get(c))} ({row.category_counts.get(c, 0)})" for c in categories]
            lines.append(f"| {row.dataset} | {row.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    results: Sequence[DatasetRuns],
    methods: Sequence[str],
    header: dict[str, Any],
    settings: dict[str, Any],
) -> list[Row]:
    from trainer.evaluate.plots import plot_categories, plot_score_vs_memory

    out.mkdir(parents=True, exist_ok=True)
    rows = rows_of(results, methods)
    with open(out / "runs.jsonl", "w", encoding="utf-8") as stream:
        for result in results:
            stream.writelines(
                json.dumps(run_record(dataset_label(result.dataset), run), ensure_ascii=False, default=str)
                + "\n"
                for run in result.runs
            )
    plots = [plot_score_vs_memory(rows, out / "score_vs_memory.png")]
    if any(row.categories for row in rows):
        plots.append(plot_categories(rows, out / "categories.png"))
    report = {
        **header,
        "averaging": AVERAGING,
        "settings": settings,
        "rows": [asdict(row) for row in rows],
        "plots": [path.name for path in plots],
    }
    (out / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    (out / "report.md").write_text(
        markdown(rows, header) + "\n" + "\n".join(f"![{path.stem}]({path.name})" for path in plots) + "\n",
        encoding="utf-8",
    )
    return rows
