"""Where the tests find the real public data: `MEMALPHA_DATA_DIR`, else `../shared/data` beside the
checkout (where CI has it). Missing data fails the test: these tests exist to run on real text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("MEMALPHA_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
LOCOMO = DATA / "locomo" / "locomo_dev.json"
SQUAD = DATA / "squad" / "squad_dev_v1.1_articles_00-23.json"
HOTPOTQA = DATA / "hotpotqa" / "hotpot_dev_distractor_first50.json"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (set MEMALPHA_DATA_DIR or put shared/ beside the checkout)")
    return path
