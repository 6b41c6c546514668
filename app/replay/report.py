"""A replay report as plain text (the CLI's output)."""

from __future__ import annotations

from collections.abc import Sequence

from app.replay.models import ReplayStatus

_WIDTH = 100


def _clip(text: str, width: int = _WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(
    status: ReplayStatus, scores: Sequence[tuple[float, float] | None] = (), scorer: str | None = None
) -> str:
    """`scores`: (live, replay) per answer pair, None for a pair without a gold answer; `scorer` names
    the scorer that gave them (the CLI scores gold answers; the service does not)."""
    if status.report is None:
        return f"replay {status.id} of {status.session_id} under {status.policy}: {status.status} {status.error or ''}"
    report, diff = status.report, status.report.diff
    lines = [
        (
            f"replay {status.id}: session {status.session_id!r} under policy {report.policy!r} "
            f"(model {report.model}); {report.chunks_replayed} chunks replayed, {report.chunks_skipped} skipped, "
            f"{report.policy_latency_s:.1f} s in the policy"
        ),
        "",
        f"{'':22}{'live':>12}{'replay':>12}",
        f"{'memory tokens':22}{report.live.memory_tokens:>12}{report.replay.memory_tokens:>12}",
    ]
    for kind in ("semantic", "episodic"):
        lines.append(
            f"{kind + ' items':22}{report.live.items.get(kind, 0):>12}{report.replay.items.get(kind, 0):>12}"
        )
    for op in sorted(set(report.live.operations) | set(report.replay.operations)):
        lines.append(
            f"{op:22}{report.live.operations.get(op, 0):>12}{report.replay.operations.get(op, 0):>12}"
        )
    lines.append(f"{'parse errors':22}{'':>12}{report.parse_errors:>12}")
    lines.append(f"{'failed chunks':22}{'':>12}{len(report.policy_failures):>12}")
    lines += [
        "",
        f"diff: {diff.same} identical items, {len(diff.only_live)} only in live, "
        f"{len(diff.only_replay)} only in replay, {len(diff.changed)} changed; core "
        + ("changed" if diff.core_changed else "identical"),
    ]
    if diff.core_changed:
        lines += [f"  core live:   {_clip(diff.live_core)}", f"  core replay: {_clip(diff.replay_core)}"]
    lines += [f"  - live   {i.kind[:3]} {i.id}: {_clip(i.content)}" for i in diff.only_live]
    lines += [f"  + replay {i.kind[:3]} {i.id}: {_clip(i.content)}" for i in diff.only_replay]
    lines += [
        f"  ~ {c.kind[:3]} {c.live_id}→{c.replay_id}: {_clip(c.live, 45)} → {_clip(c.replay, 45)}"
        for c in diff.changed
    ]
    for sample in report.parse_error_samples:
        lines.append(f"  parse error: {_clip(sample)}")
    for failure in report.policy_failures:
        lines.append(f"  failed chunk {failure.seq}: {_clip(failure.error)}")
    if report.answers:
        lines += ["", f"answers ({scorer or 'no gold scorer'}):"]
        paired = list(scores) + [None] * (len(report.answers) - len(scores))
        for pair, pair_scores in zip(report.answers, paired, strict=True):
            lines.append(f"  Q: {pair.question}" + (f"   gold: {pair.gold}" if pair.gold is not None else ""))
            for index, (side, text) in enumerate((("live", pair.live), ("replay", pair.replay))):
                shown = "" if pair_scores is None else f" [{pair_scores[index]:.2f}]"
                lines.append(f"    {side:6}{shown} {_clip(text, 90)}")
        scored = [s for s in paired if s is not None]
        if scored:
            live = sum(s[0] for s in scored) / len(scored)
            replay = sum(s[1] for s in scored) / len(scored)
            lines.append(
                f"  mean score over {len(scored)} gold questions: live {live:.3f}, replay {replay:.3f}"
            )
    return "\n".join(lines)
