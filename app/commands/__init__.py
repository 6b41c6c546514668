"""Subcommands of the `memalpha` CLI; each module has `register(subparsers)`."""
