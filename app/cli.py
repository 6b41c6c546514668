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

from app.logs import configure_logging

COMMAND_MODULES = (
    "app.commands.serve",
    "app.commands.worker",
    "app.commands.migrate",
    "app.commands.keys",
    "trainer.commands.demo",
    "app.commands.mcp",
    "trainer.commands.replay",
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
    configure_logging(_log_level())
    result = args.func(args)
    return int(result or 0)


def _log_level() -> str:
    from app.settings import Settings

    try:
        return Settings().log_level
    except ValueError:  # invalid settings: the command itself reports them
        return "INFO"


if __name__ == "__main__":
    sys.exit(main())
