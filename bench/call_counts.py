"""Python function calls per chunk from a cProfile, for the benches' `--profile-calls`: in all, by
package or layer (the path of each function's file, first match), and the functions with the most own
time and the most calls. A call count is the same for the same code path however busy the machine is,
where CPU and wall time are not.

With `charge_callers` a function of no layer (a builtin such as `len` or a dict's `get`, or the standard
library's `typing`, `copy`, `enum`, … where no layer names them) is counted in the layers of the functions
that called it, split by their calls to it and followed up the callers until a layer's function: the
layers then say whose work it is.
"""

from __future__ import annotations

import pstats
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 15
# (name, parts of a file's path); `~` is a builtin's file.
Layers = tuple[tuple[str, tuple[str, ...]], ...]
PACKAGES: Layers = (
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core/engine", ("sqlalchemy/",)),
    ("psycopg", ("psycopg",)),
    ("asyncio", ("asyncio/",)),
    ("app", ("/app/",)),
    ("builtins", ("~",)),
)


def layer_of(file: str, layers: Layers) -> str:
    return next((name for name, parts in layers if any(part in file for part in parts)), "other")


def call_counts(
    stats: pstats.Stats, chunks: int, layers: Layers = PACKAGES, *, charge_callers: bool = False
) -> dict[str, Any]:
    """Calls per chunk (all, and primitive: not counting recursion), by layer, and the `TOP` functions
    by own time and by calls."""
    # {(file, line, name): (primitive, all, own s, cumulative s, {caller: (all, primitive, own, cum)})}
    entries = stats.stats  # type: ignore[attr-defined]
    by_layer = dict.fromkeys([*(name for name, _ in layers), "other"], 0.0)
    shares: dict[Any, dict[str, float]] = {}

    def share(function: Any, seen: frozenset[Any]) -> dict[str, float]:
        """The fraction of `function`'s calls each layer is charged."""
        if function in shares:
            return shares[function]
        layer = layer_of(function[0], layers)
        callers = {
            caller: calls[0]
            for caller, calls in entries[function][4].items()
            if calls[0] and caller not in seen
        }
        if layer != "other" or not charge_callers or not callers:
            return {layer: 1.0}
        total = sum(callers.values())
        charged: Counter[str] = Counter()
        for caller, calls in callers.items():
            for name, fraction in share(caller, seen | {function}).items():
                charged[name] += fraction * calls / total
        shares[function] = dict(charged)
        return shares[function]

    for function, entry in entries.items():
        for name, fraction in share(function, frozenset()).items():
            by_layer[name] += fraction * entry[1]
    own = sum(entry[2] for entry in entries.values())

    def rows(key: int) -> list[dict[str, Any]]:
        ranked = sorted(entries.items(), key=lambda item: item[1][key], reverse=True)[:TOP]
        return [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": entry[1] / chunks,
                "own_ms": entry[2] * 1000 / chunks,
                "share": entry[2] / own if own else 0.0,
            }
            for (file, line, name), entry in ranked
        ]

    return {
        "chunks": chunks,
        "calls": stats.total_calls / chunks,  # type: ignore[attr-defined]
        "primitive_calls": stats.prim_calls / chunks,  # type: ignore[attr-defined]
        "own_ms": own * 1000 / chunks,
        "packages": {name: calls / chunks for name, calls in by_layer.items()},
        "top": rows(2),
        "most_called": rows(1),
    }


def print_calls(trees: dict[str, dict[str, Any]], what: str, *, top: str = "top") -> None:
    """The counts of one or two trees side by side; `top`: "top" (by own time) or "most_called"."""
    names = list(trees)
    width = max(24, *(len(package) for package in trees[names[0]]["packages"]))
    print(f"Python function calls per chunk ({what}):")
    print("  " + " " * (width - 6) + "".join(f"{name:>14}" for name in names))
    for label, field_ in (("all calls", "calls"), ("primitive calls", "primitive_calls")):
        print(f"  {label:<{width - 6}}" + "".join(f"{trees[name][field_]:>14,.0f}" for name in names))
    for package in trees[names[0]]["packages"]:
        print(
            f"    {package:<{width}}"
            + "".join(f"{trees[name]['packages'][package]:>12,.0f}" for name in names)
        )
    if len(names) == 2:
        first, second = (trees[name]["calls"] for name in names)
        print(f"  {names[1]} / {names[0]}: {second / first:.3f}x calls")
    ranking = "own time" if top == "top" else "calls"
    for name in names:
        counted = trees[name]
        print(
            f"top {TOP} by {ranking}, {name} ({counted['own_ms']:.1f} ms own time per chunk under the profiler, "
            f"over {counted['chunks']} chunks):"
        )
        print(f"  {'calls':>8} {'own ms':>7} {'share':>6}  function")
        for row in counted[top]:
            print(f"  {row['calls']:8.1f} {row['own_ms']:7.3f} {row['share']:6.1%}  {row['function']}")
