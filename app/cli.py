"""The `memalpha` console script: one entry, subcommands registered by their own modules.

The CLI is the composition root: it also loads the trainer's commands (`eval`, `train`) by module
name, so that `app` code itself never imports `trainer`. Command modules import their heavy
dependencies inside their run functions, keeping `memalpha --help` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "app.commands.serve",
    "app.commands.worker",
    "app.commands.migrate",
    "app.commands.keys",
    "app.commands.demo",
    "trainer.commands.eval",
    "trainer.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memalpha", description="Mem-alpha agent memory service")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name is not None and name.startswith(missing.name):
                continue  # that command is not part of this installation
            raise
        module.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
