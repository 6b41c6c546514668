"""Replay and shadow-diff over real HTTP: a live session replayed under registered policies into a scratch
memory, the live memory untouched, the report's diff, stats and answers checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from shared_data import LOCOMO, require

from app.client import (
    ConflictError,
    MemoryClient,
    NotFoundError,
    PermissionDeniedError,
    PolicyRegistration,
    ReplayQuestion,
    ReplayRequest,
)
from app.tokens import make_token_counter
from trainer.corpus.locomo import load_locomo
from trainer.evaluate.scorers import scorer_name

ROOT = Path(__file__).resolve().parent.parent


def _conversation() -> Any:
    return load_locomo(require(LOCOMO))[0]


def _questions(conversation: Any, sessions: int) -> list[ReplayQuestion]:
    cut = conversation.first_sessions(sessions)
    return [ReplayQuestion(question=qa.question, answer=qa.answer) for qa in cut.qa if qa.scored][:6]


def test_replay_under_the_same_policy_is_an_empty_diff_and_another_policy_differs(
    live_api: Any, scripted_llm: Any
) -> None:
    conversation = _conversation()
    chunks = conversation.first_sessions(1).chunks(128, make_token_counter(None))[:4]
    admin_key, reader_key = live_api.key("acme", admin=True), live_api.key("acme")
    with MemoryClient(live_api.url, admin_key) as admin:
        assert admin.ingest("caroline", chunks).complete
        before = admin.get_memory("caroline")
        operations_before = admin.list_operations("caroline", limit=1000)

        # control: the extractive policy again (its own registry row) must rebuild the same memory
        admin.register_policy(
            PolicyRegistration(
                name="extractive-copy", base_model="extractive", manifest={"backend": "extractive"}
            )
        )
        questions = _questions(conversation, 1)
        assert questions
        same = admin.replay(
            "caroline",
            ReplayRequest(policy="extractive-copy", questions=questions),
            timeout=120,
        )
        assert same.status == "done", same.error
        report = same.report
        assert report is not None and report.chunks_replayed == len(chunks) and report.chunks_skipped == 0
        assert report.diff.only_live == report.diff.only_replay == report.diff.changed == []
        assert not report.diff.core_changed and report.diff.same == len(before.semantic) + len(
            before.episodic
        )
        assert report.live == report.replay  # tokens, item counts and operations per kind
        assert report.live.memory_tokens == admin.get_session("caroline").memory_tokens
        assert report.parse_errors == 0 and report.policy_failures == []
        assert len(report.answers) == len(questions)
        assert [(pair.question, pair.gold) for pair in report.answers] == [
            (q.question, q.answer) for q in questions
        ]
        assert all(pair.live == pair.replay for pair in report.answers)

        # a different policy: the scripted LLM inserts each chunk verbatim as one semantic item
        admin.register_policy(
            PolicyRegistration(
                name="echo-llm",
                base_model=scripted_llm.model,
                manifest={"backend": "openai", "base_url": scripted_llm.url, "model": scripted_llm.model},
            )
        )
        echo = admin.replay(
            "caroline", ReplayRequest(policy="echo-llm", questions=questions[:2]), timeout=120
        )
        assert echo.status == "done", echo.error
        report = echo.report
        assert report is not None and report.model == scripted_llm.model
        assert report.replay.items == {"semantic": len(chunks), "episodic": 0}
        assert report.replay.operations == {"new_memory_insert/ok": len(chunks)}
        assert sorted(item.content for item in report.diff.only_replay) == sorted(chunks)
        assert len(report.diff.only_live) == len(before.semantic) + len(before.episodic)
        assert report.diff.core_changed and report.diff.replay_core == ""
        assert [pair.question for pair in report.answers] == [q.question for q in questions[:2]]

        # the live memory and its log are exactly as before; the replays are listed newest first
        assert admin.get_memory("caroline") == before
        assert admin.list_operations("caroline", limit=1000) == operations_before
        listed = admin.list_replays("caroline").replays
        assert [r.id for r in listed] == [echo.id, same.id]

        # bad requests change nothing and say why
        with pytest.raises(NotFoundError):
            admin.start_replay("caroline", ReplayRequest(policy="no-such-policy"))
        with pytest.raises(NotFoundError):
            admin.start_replay("nobody", ReplayRequest(policy="echo-llm"))
        with pytest.raises(ConflictError):
            admin.register_policy(PolicyRegistration(name="echo-llm", base_model="x"))

    with MemoryClient(live_api.url, reader_key) as reader:
        with pytest.raises(PermissionDeniedError):  # replay runs a policy: admin only
            reader.start_replay("caroline", ReplayRequest(policy="echo-llm"))
        assert reader.get_replay("caroline", echo.id).report == echo.report  # reading is for the tenant
    with MemoryClient(live_api.url, live_api.key("umbrella", admin=True)) as stranger:
        with pytest.raises(NotFoundError):
            stranger.get_replay("caroline", echo.id)
        with pytest.raises(NotFoundError):
            stranger.start_replay("caroline", ReplayRequest(policy="echo-llm"))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_replay_command_prints_the_diff(live_api: Any, scripted_llm: Any, tmp_path: Path) -> None:
    admin_key = live_api.key("acme", admin=True)
    with MemoryClient(live_api.url, admin_key) as admin:
        admin.ingest("s", ["Alice: I moved to Lisbon last spring.", "Bob: my sister Carol is a nurse."])
        manifest = {"backend": "openai", "base_url": scripted_llm.url, "model": scripted_llm.model}
        admin.register_policy(PolicyRegistration(name="echo", base_model="echo", manifest=manifest))
    command = [sys.executable, "-m", "app.cli", "replay", "s", "--policy", "echo", "--url", live_api.url]
    command += ["--key", admin_key, "-q", "Where does Alice live?"]
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "only in replay" in done.stdout and "+ replay sem" in done.stdout
    assert "Q: Where does Alice live?" in done.stdout
    failed = subprocess.run(
        [*command[:6], "nope", *command[7:]],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert failed.returncode == 1 and "not_found" in failed.stderr

    # gold answers are scored by the command (the service only reports both memories' answers)
    gold = tmp_path / "questions.json"
    gold.write_text(json.dumps([{"question": "Which city did Alice move to?", "answer": "Lisbon"}]))
    scored = subprocess.run(
        [*command, "--questions", str(gold), "--data-source", "squad"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert scored.returncode == 0, scored.stderr
    assert f"answers ({scorer_name('squad')}):" in scored.stdout
    assert "gold: Lisbon" in scored.stdout and "mean score over 1 gold questions: live" in scored.stdout
    for extra, message in (
        (["--questions", str(gold), "--data-source", "locomo"], "category"),  # LoCoMo's scorer needs it
        (["--data-source", "no-such-source"], "no plain scorer"),
    ):
        refused = subprocess.run(
            [*command, *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert refused.returncode == 2 and message in refused.stderr


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_replays_queue_one_at_a_time_and_the_bound_answers_429(live_api: Any) -> None:
    """A replay is CPU work in the API process: they run one at a time, at most MAX_ACTIVE wait or run,
    the next start is refused with 429 and Retry-After (nothing started), and the service keeps
    answering while they run (CI once saw a replay start take 10 s behind earlier replays)."""
    from scripted_llm import Delay, ScriptedLLM

    from app.replay.jobs import MAX_ACTIVE

    admin_key = live_api.key("acme", admin=True)
    headers = {"Authorization": f"Bearer {admin_key}"}
    # 1.5 s per policy call: the first replay must still be running when the refused start arrives,
    # even on a loaded machine (0.3 s let it finish first there)
    with ScriptedLLM(default=Delay(1.5)) as slow, MemoryClient(live_api.url, admin_key) as admin:
        admin.ingest("s", ["Alice: I moved to Lisbon last spring.", "Bob: my sister Carol is a nurse."])
        manifest = {"backend": "openai", "base_url": slow.url, "model": slow.model}
        admin.register_policy(PolicyRegistration(name="slow", base_model="slow", manifest=manifest))
        with httpx.Client(base_url=live_api.url, headers=headers, timeout=30) as http:
            started = [http.post("/sessions/s/replay", json={"policy": "slow"}) for _ in range(MAX_ACTIVE)]
            assert [r.status_code for r in started] == [202] * MAX_ACTIVE
            assert {r.json()["status"] for r in started} == {"queued"}
            refused = http.post("/sessions/s/replay", json={"policy": "slow"})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "busy"
            assert int(refused.headers["Retry-After"]) > 0
            assert len(admin.list_replays("s").replays) == MAX_ACTIVE  # the refused one started nothing
            # one runs, the others wait; the service answers meanwhile
            assert http.get("/healthz").status_code == 200
            states = [r.status for r in admin.list_replays("s").replays]
            assert states.count("running") <= 1 and states.count("queued") >= MAX_ACTIVE - 2, states
        ids = [r.json()["id"] for r in started]
        finished = [admin.replay("s", ReplayRequest(policy="slow"), timeout=60)]  # queues behind them
        finished += [admin.get_replay("s", replay_id) for replay_id in ids]
        assert [r.status for r in finished] == ["done"] * (MAX_ACTIVE + 1), [r.error for r in finished]
