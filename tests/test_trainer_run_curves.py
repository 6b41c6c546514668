"""Two runs' rollout rewards paired by iteration. Known answers: iteration 1 (the base model in both runs) is
left out whatever it holds; a constant lead over 6 iterations has the exact sign-flip p 2/2^6; identical runs
differ by nothing; the files are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.run_curves import CURVES_JSON, CURVES_PLOT, CURVES_TABLE, load_history, main, paired_by_iteration


def _history(r1: list[float], repeat: float = 0.1) -> dict[int, dict[str, float]]:
    return {
        index + 1: {"iteration": index + 1, "r1": value, "r2": 0.9, "repeat_stop_rate": repeat}
        for index, value in enumerate(r1)
    }


def test_a_constant_lead_is_found_and_the_first_iteration_is_left_out() -> None:
    control = [0.9, 0.3, 0.5, 0.4, 0.6, 0.35, 0.45]
    treatment = [0.0] + [value + 0.1 for value in control[1:]]  # iteration 1 differs only here
    result = paired_by_iteration(_history(treatment), _history(control), "r1")
    assert result.episodes == 6
    assert result.delta == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1) and result.ci_high == pytest.approx(0.1)
    assert result.p_value == pytest.approx(2 / 2**6)


def test_identical_runs_differ_by_nothing() -> None:
    history = _history([0.3, 0.5, 0.4, 0.6])
    result = paired_by_iteration(history, dict(history), "r1")
    assert (result.delta, result.p_value) == (0.0, 1.0)


def test_only_iterations_of_both_runs_are_paired() -> None:
    result = paired_by_iteration(_history([0.3, 0.5, 0.4, 0.6, 0.7]), _history([0.3, 0.4, 0.4]), "r1")
    assert result.episodes == 2 and result.unpaired == 2
    assert result.delta == pytest.approx(0.05)


def test_the_command_writes_the_table_json_and_plot(tmp_path: Path) -> None:
    for name, values, repeat in (("t", [0.3, 0.6, 0.7], 0.05), ("s", [0.3, 0.4, 0.5], 0.2)):
        rows = _history(values, repeat).values()
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_history(tmp_path / "t.jsonl")[3]["r1"] == 0.7
    assert (
        main(
            [
                "--treatment",
                str(tmp_path / "t.jsonl"),
                "--control",
                str(tmp_path / "s.jsonl"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "out" / CURVES_JSON).read_text())
    assert [row["name"] for row in written] == ["r1", "r2", "repeat_stop_rate"]
    assert written[0]["delta"] == pytest.approx(0.2) and written[2]["delta"] == pytest.approx(-0.15)
    table = (tmp_path / "out" / CURVES_TABLE).read_text()
    assert "| 3 | 0.700 / 0.500 |" in table
    assert (tmp_path / "out" / CURVES_PLOT).stat().st_size > 10_000
