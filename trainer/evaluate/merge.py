"""Merge several `memalpha eval` reports (e.g. one run per data set) into one table and one set of plots.

python -m trainer.evaluate.merge reports/llm-locomo reports/llm-squad --out docs/results/local-llm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trainer.evaluate.plots import plot_categories, plot_score_vs_memory
from trainer.evaluate.report import Row, markdown


def load_rows(report_dir: Path) -> tuple[dict[str, Any], list[Row]]:
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    rows = []
    for raw in report["rows"]:
        raw = dict(raw)
        for key in ("categories", "category_counts"):  # JSON object keys are strings
            raw[key] = {int(category): value for category, value in raw.get(key, {}).items()}
        rows.append(Row(**raw))
    return report, rows


def merge(report_dirs: list[Path], out: Path) -> list[Row]:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    header: dict[str, Any] = {}
    runs: dict[str, str] = {}
    shared = ("token counter", "answerer", "policy model", "answer context / scorer / k / budget")
    for n, report_dir in enumerate(report_dirs, start=1):
        report, found = load_rows(report_dir)
        rows += found
        runs[f"run {n}"] = (
            f"`{report['command']}` (started {report['started']}, commit {report.get('git_commit')})"
        )
        for key in shared:
            header.setdefault(key, report.get(key))
            if header[key] != report.get(key):
                header[key] = "differs per run (see each run's report.json)"
    header.update(runs)
    plots = [plot_score_vs_memory(rows, out / "score_vs_memory.png")]
    if any(row.categories for row in rows):
        plots.append(plot_categories(rows, out / "categories.png"))
    text = markdown(rows, header) + "\n" + "\n".join(f"![{path.stem}]({path.name})" for path in plots) + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reports", nargs="+", type=Path, help="report directories written by memalpha eval")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merge(args.reports, args.out)
    print((args.out / "report.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
