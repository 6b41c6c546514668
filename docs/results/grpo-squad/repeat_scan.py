"""Revision 9's pre-gate check (PREREGISTRATION.md): which stored replies the repeat stop would cut.

    PYTHONPATH=$PWD .venv/bin/python docs/results/grpo-squad/repeat_scan.py [WINDOW] > repeat-scan/scan-256.json

Every reply kept in this repository: the gate replies of revisions 2–7 (`sizing-*.json`, greedy, SQuAD) and
the LLM writer's replies (`docs/results/sweep/llm-writer-cache/`, LoCoMo). Per reply that the rule cuts: where,
how many characters it keeps and drops, whether the reply ran to its budget, and the text around the cut,
so each can be read and classified (a loop, or a legitimate duplicate followed by new calls)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.policy.parser import parse_reply
from app.policy.repeats import applied_text

HERE = Path(__file__).parent
CACHE = HERE.parent / "sweep" / "llm-writer-cache"


def _replies() -> list[dict[str, Any]]:
    out = []
    for path in sorted(HERE.glob("sizing-*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data.get("replies"), list):  # revision 1's file kept the replies' starts only
            continue
        for episode, run in zip(data.get("episodes", []), data.get("replies", []), strict=False):
            for reply in run:
                if reply.get("text") is not None:
                    source = f"{path.name}:{episode}:chunk{reply['chunk']}"
                    out.append({"source": source, "text": reply["text"], "cut_at_budget": reply["truncated"]})
    for path in sorted(CACHE.glob("*/*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines()):
            reply = json.loads(line)
            budget_cut = any("cut at max_tokens" in error for error in reply.get("parse_errors", []))
            source = f"{path.parent.name}/{path.name}:{number}"
            out.append({"source": source, "text": reply["raw_text"], "cut_at_budget": budget_cut})
    return out


def _content(arguments: dict[str, Any]) -> str:
    return str(arguments.get("content") or arguments.get("new_content") or "").strip()


def _dropped_new_contents(text: str, kept: str) -> list[str]:
    """Contents of the calls after the cut (the last kept call may be the cut one) that the kept text does
    not hold, neither whole nor their first 60 characters: what the stop may lose, to be read."""
    full, applied = parse_reply(text).calls, parse_reply(kept).calls
    dropped = [_content(call.arguments) for call in full[max(0, len(applied) - 1) :]]
    new = [c for c in dropped if c and c not in kept and c[:60] not in kept]
    return list(dict.fromkeys(new))


def main(window: int) -> dict[str, Any]:
    replies = _replies()
    cut = []
    for reply in replies:
        text = reply["text"]
        kept, note = applied_text(text, window)
        if note is None:
            continue
        cut.append(
            {
                **{k: reply[k] for k in ("source", "cut_at_budget")},
                "kept_chars": len(kept),
                "dropped_chars": len(text) - len(kept),
                "calls_before": len(parse_reply(text).calls),
                "calls_after": len(parse_reply(kept).calls),
                "dropped_new_contents": _dropped_new_contents(text, kept),
                "around_cut": text[max(0, len(kept) - 120) : len(kept) + 160],
            }
        )
    return {
        "window": window,
        "replies": len(replies),
        "cut_by_budget": sum(bool(r["cut_at_budget"]) for r in replies),
        "stopped": len(cut),
        "stopped_and_cut_by_budget": sum(bool(c["cut_at_budget"]) for c in cut),
        "cuts": cut,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 256), indent=1, ensure_ascii=False))
