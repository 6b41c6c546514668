"""Replay and shadow-diff: re-run a session's chunk log under another registered policy into a scratch
memory (in process memory, never the live one), then compare the two memories and their answers."""
