"""`memalpha eval` end to end on small real episodes: report files, plots, determinism, method parsing;
and one run of an LLM policy (json tool format) on the local vLLM server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import DATA

from app.cli import main
from app.memory import WordTokenCounter
from app.settings import Settings
from trainer.episodes import QA, BuildConfig, Episode, save_episodes
from trainer.evaluate.harness import EvalConfig, evaluate
from trainer.evaluate.methods import parse_methods
from trainer.evaluate.report import write_report
from trainer.runner import QASettings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMINGS = ("write_s", "answer_s")


def eval_args(out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--data-dir",
        str(DATA),
        "--dataset",
        "locomo,squad,banking77",
        "--methods",
        "extractive,rag-raw,long-context,full-context",
        "--episodes",
        "1",
        "--questions",
        "6",
        "--sessions",
        "2",
        "--paragraphs",
        "3",
        "--labels",
        "5",
        "--chunk-tokens",
        "300",
        "--answer-budget",
        "1000",
        "--out",
        str(out),
        *extra,
    ]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMINGS} for row in rows]


def test_eval_cli_writes_report_tables_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(eval_args(out)) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert [(row["dataset"], row["method"]) for row in rows] == [
        (dataset, method)
        for dataset in ("locomo", "squad", "banking77")
        for method in ("extractive", "rag-raw", "long-context", "full-context")
    ]
    by = {(row["dataset"], row["method"]): row for row in rows}
    assert by[("squad", "extractive")]["questions"] == 6
    assert set(by[("locomo", "extractive")]["categories"]) <= {"1", "2", "3", "4"}
    assert by[("locomo", "extractive")]["categories"]
    assert by[("squad", "rag-raw")]["compression"] == 0.0
    assert by[("squad", "full-context")]["skipped"] == 1  # 3 articles × 3 paragraphs exceed 1,000 tokens
    assert by[("squad", "full-context")]["questions"] == 0
    assert 500 < by[("squad", "long-context")]["memory_tokens"] <= 1000
    assert by[("squad", "extractive")]["ops"]["ok"] > 0 and by[("squad", "extractive")]["llm_calls"] == 0
    assert report["token counter"] == "word-estimate"
    assert report["settings"]["settings"]["answer_context_tokens"] == 1000
    assert report["settings"]["build"]["seed"] == 0
    assert report["command"].startswith("memalpha eval --dataset locomo,squad,banking77 --data-dir")

    markdown = (out / "report.md").read_text()
    assert "| dataset | method | episodes | questions | score |" in markdown
    assert "| locomo | extractive |" in markdown and "cat 2" in markdown
    for name in ("score_vs_memory.png", "categories.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 12
    extractive = next(run for run in runs if run["method"] == "extractive" and run["dataset"] == "squad")
    assert extractive["memory"]["semantic"] and extractive["steps"][0]["results"]

    again = tmp_path / "again"
    assert main(eval_args(again)) == 0
    assert without_timings(json.loads((again / "report.json").read_text())["rows"]) == without_timings(rows)


def test_eval_cli_rejects_bad_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", "squad", "--methods", "extractive,bogus", "--out", str(tmp_path)]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err
    assert main(["eval", "--dataset", "squad", "--methods", "openai:json", "--out", str(tmp_path)]) == 2
    with pytest.raises(ValueError, match="unknown tool format"):
        parse_methods("openai:xml")
    assert [(m.kind, m.backend, m.tool_format) for m in parse_methods("openai:json,openai,rag-raw")] == [
        ("memory", "openai", "json"),
        ("memory", "openai", None),
        ("rag-raw", None, None),
    ]


def test_eval_reads_memalpha_parquet(tmp_path: Path) -> None:
    path = tmp_path / "toy.parquet"
    save_episodes(
        [
            Episode(
                "toy-1",
                "squad",
                ["Ada Lovelace wrote the first program in 1843."],
                [QA("Who wrote the first program?", ["Ada Lovelace"])],
            )
        ],
        path,
    )
    out = tmp_path / "out"
    assert (
        main(["eval", "--dataset", f"parquet:{path}", "--methods", "extractive,rag-raw", "--out", str(out)])
        == 0
    )
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [(row["dataset"], row["method"], row["score"]) for row in rows] == [
        ("toy", "extractive", 1.0),
        ("toy", "rag-raw", 1.0),
    ]


@pytest.mark.llm
async def test_openai_json_policy_writes_memory_through_the_harness(
    local_llm: tuple[str, str], tmp_path: Path
) -> None:
    url, model = local_llm
    path = tmp_path / "one.jsonl"
    save_episodes(
        [
            Episode(
                "one",
                "squad",
                [
                    "[3 May 2024] Priya: I just moved to Lisbon for a job at a robotics startup called Tidewell.",
                ],
                [QA("Which startup does Priya work for?", ["Tidewell"])],
            )
        ],
        path,
    )
    settings = Settings(
        _env_file=None,
        policy_url=url,
        policy_model=model,
        policy_max_tokens=300,  # type: ignore[call-arg]
        policy_prompt_budget_tokens=3000,
    )
    counter = WordTokenCounter()
    config = EvalConfig(
        [f"jsonl:{path}"],
        parse_methods("openai:json,rag-raw"),
        BuildConfig(data_dir=DATA, counter=counter),
        QASettings(),
        settings,
    )
    results = await evaluate(config)
    rows = write_report(tmp_path / "out", results, ["openai:json", "rag-raw"], {"test": True}, {})
    run = results[0].runs[0]
    assert run.policy == "openai" and run.policy_calls == 1 and run.llm_calls == 1  # extractive answerer
    step = run.steps[0]
    assert step.error is None and step.prompt_tokens > 0 and step.model
    assert step.calls, step.parse_errors  # the json schema makes the reply parse into calls
    assert run.memory_tokens > 0 and rows[0].ops["ok"] >= 1


def test_merge_joins_reports_of_separate_runs(tmp_path: Path) -> None:
    from trainer.evaluate.merge import merge

    for name, extra in (("squad", ["--paragraphs", "2"]), ("locomo", ["--sessions", "1"])):
        assert (
            main(
                [
                    "eval",
                    "--data-dir",
                    str(DATA),
                    "--dataset",
                    name,
                    "--episodes",
                    "1",
                    "--questions",
                    "3",
                    "--methods",
                    "extractive,rag-raw",
                    "--out",
                    str(tmp_path / name),
                    *extra,
                ]
            )
            == 0
        )
    rows = merge([tmp_path / "squad", tmp_path / "locomo"], tmp_path / "merged")
    assert [(row.dataset, row.method) for row in rows] == [
        ("squad", "extractive"),
        ("squad", "rag-raw"),
        ("locomo", "extractive"),
        ("locomo", "rag-raw"),
    ]
    assert rows[2].categories and all(isinstance(category, int) for category in rows[2].categories)
    text = (tmp_path / "merged" / "report.md").read_text()
    assert (
        "- run 1: `memalpha eval --dataset squad" in text
        and "- run 2: `memalpha eval --dataset locomo" in text
    )
    assert "| locomo | rag-raw |" in text
    assert (tmp_path / "merged" / "categories.png").read_bytes().startswith(PNG_MAGIC)


def test_eval_answers_through_the_service_default_path_unless_told(tmp_path: Path) -> None:
    """The default is the service's answer path (a budget of matching items, Lucene BM25); the paper's
    top-k per kind with rank-bm25's Okapi stays selectable, and reads the unrelated chunk too."""
    episodes = tmp_path / "toy.parquet"
    save_episodes(
        [
            Episode(
                "toy-1",
                "squad",
                ["Ada Lovelace wrote the first program in 1843.", "The weather in Paris was mild all week."],
                [QA("Who wrote the first program?", ["Ada Lovelace"])],
            )
        ],
        episodes,
    )
    read = {}
    for name, flags in (("default", []), ("paper", ["--answer-context", "top-k", "--scorer", "okapi"])):
        out = tmp_path / name
        assert (
            main(
                [
                    "eval",
                    "--dataset",
                    f"parquet:{episodes}",
                    "--methods",
                    "rag-raw",
                    "--out",
                    str(out),
                    *flags,
                ]
            )
            == 0
        )
        report = json.loads((out / "report.json").read_text())
        [run] = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        [answer] = run["answers"]
        assert answer["score"] == 1.0
        read[name] = (report["answer context / scorer / k / budget"], answer["k"], answer["context_tokens"])
    assert read["default"][:2] == ("budget / lucene / – / 4096", 1)
    assert read["paper"][:2] == ("top-k / okapi / 20 / 4096", 20)
    assert read["default"][2] < read["paper"][2]  # the weather chunk is not read
