"""`EXPLAIN` of a SQLAlchemy statement as the service would send it, and the scans of `memory_items`
in a plan (the plan tests and `bench.target_plans`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ClauseElement, Executable
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler


class Explain(Executable, ClauseElement):
    """`EXPLAIN (<options>, FORMAT JSON)` of a statement, compiled and bound as the statement itself
    would be. Its one row holds the plan as JSON."""

    inherit_cache = False

    def __init__(self, statement: Executable, options: str = "") -> None:
        self.statement = statement
        self.options = options


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    options = f"{element.options}, " if element.options else ""
    return f"EXPLAIN ({options}FORMAT JSON) " + compiler.process(element.statement, **kw)


def item_scans(node: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every scan of `memory_items` in a plan: its node type, index and index condition (a bitmap scan
    once per index it reads)."""
    found = []
    if node.get("Relation Name") == "memory_items" and node["Node Type"] == "Bitmap Heap Scan":
        found += [
            (node["Node Type"], probe["Index Name"], probe["Index Cond"])
            for probe in _bitmap_index_scans(node)
        ]
    elif node.get("Relation Name") == "memory_items" and node["Node Type"].endswith("Scan"):
        found.append((node["Node Type"], node.get("Index Name", ""), node.get("Index Cond", "")))
    for child in node.get("Plans", []):
        found += item_scans(child)
    return found


def _bitmap_index_scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for child in node.get("Plans", []):
        found += [child] if child["Node Type"] == "Bitmap Index Scan" else _bitmap_index_scans(child)
    return found
