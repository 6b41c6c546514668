"""The pre-registered paired analysis: Δ r1 per episode, a cluster-bootstrap CI and a sign-flip p that
resample whole articles. Known answers: identical evaluations give Δ = 0 and p = 1; a uniform gain is
found; noise without a gain is not; a gain carried by one article is not mistaken for a general one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from trainer.paired import PAIRED_JSON, PAIRED_PLOT, PAIRED_TABLE, Episode, compare, load_episodes, main


def _evaluation(r1: dict[str, float]) -> dict[str, Episode]:
    return {key: Episode(cluster=key.split("-")[0], r1=value, questions=3) for key, value in r1.items()}


def _base(articles: int = 20, per_article: int = 10, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"a{a}-p{p}": rng.random() for a in range(articles) for p in range(per_article)}


def test_identical_evaluations_differ_by_nothing() -> None:
    base = _evaluation(_base())
    result = compare("base again", base, dict(base))
    assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (result.episodes, result.clusters, result.questions) == (200, 20, 600)


def test_a_uniform_gain_is_found_and_noise_is_not() -> None:
    scores = _base()
    rng = random.Random(1)
    gain = _evaluation({key: value + 0.05 + rng.gauss(0, 0.05) for key, value in scores.items()})
    noise = _evaluation({key: value + rng.gauss(0, 0.05) for key, value in scores.items()})
    found = compare("gain", _evaluation(scores), gain)
    assert found.delta == pytest.approx(0.05, abs=0.01)
    assert found.ci_low > 0.03 and found.ci_high < 0.07 and found.p_value < 0.001
    null = compare("noise", _evaluation(scores), noise)
    assert null.ci_low < 0 < null.ci_high and null.p_value > 0.05


def test_a_gain_of_one_article_is_not_a_general_gain() -> None:
    """All of the change in one of 20 articles: episode-level resampling would call it certain (its
    10 episodes look like 10 independent wins); resampling articles does not."""
    scores = _base()
    lucky = _evaluation(
        {key: value + (0.5 if key.startswith("a0-") else 0.0) for key, value in scores.items()}
    )
    result = compare("one article", _evaluation(scores), lucky)
    assert result.delta == pytest.approx(0.025)
    assert result.ci_low <= 0.0 and result.p_value > 0.05


def test_cli_pairs_records_files_and_leaves_out_dropped_rollouts(tmp_path: Path) -> None:
    def write(name: str, rows: list[dict[str, object]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    base = write(
        "base.jsonl",
        [
            {"instance_id": f"e{n}", "rollout": 0, "article": f"A{n % 3}", "r1": 0.5, "questions": [{}, {}]}
            for n in range(6)
        ],
    )
    trained = write(
        "trained.jsonl",
        [
            {"instance_id": f"e{n}", "rollout": 0, "article": f"A{n % 3}", "r1": 0.75, "questions": [{}, {}]}
            for n in range(5)
        ]
        + [{"instance_id": "e5", "dropped": "rollout endpoint: connection refused"}],
    )
    assert set(load_episodes(trained)) == {f"e{n}" for n in range(5)}
    assert main(["--base", str(base), "--compare", f"trained={trained}", "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / PAIRED_JSON).read_text())
    assert (row["episodes"], row["clusters"], row["unpaired"], row["questions"]) == (5, 3, 1, 10)
    assert row["delta"] == pytest.approx(0.25)
    assert "| trained | 5 (3) | 10 |" in (tmp_path / "out" / PAIRED_TABLE).read_text()
    assert (tmp_path / "out" / PAIRED_PLOT).stat().st_size > 0
    assert "| base r1 |" in (tmp_path / "out" / PAIRED_TABLE).read_text()
    raw = ["--base-name", "raw chunks", "--out", str(tmp_path / "raw")]
    assert main(["--base", str(base), "--compare", f"trained={trained}", *raw]) == 0
    assert "| raw chunks r1 |" in (tmp_path / "raw" / PAIRED_TABLE).read_text()


def test_few_clusters_get_the_exact_sign_flip_p() -> None:
    """Six articles, each +0.1: of the 64 sign patterns only all-plus and all-minus reach |Δ| = 0.1."""
    base = _evaluation(_base(articles=6, per_article=5))
    up = {key: Episode(e.cluster, e.r1 + 0.1, e.questions) for key, e in base.items()}
    result = compare("six articles", base, up)
    assert result.delta == pytest.approx(0.1) and result.p_value == pytest.approx(2 / 64)
