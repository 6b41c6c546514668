"""`memalpha` subcommands that live with the trainer (`eval`, `train`); app/cli.py loads them by name."""
