"""`memalpha worker` with a cProfile of its event loop's thread that signals switch on (SIGUSR1) and off
(SIGUSR2), written to FILE when the worker exits: `bench.ingest_throughput --profile-calls` counts only
the chunks it chooses, after the worker's start-up and warm-up.

    python -m bench.profiled_worker FILE [--cpu-clock] worker [options of `memalpha worker`]

`--cpu-clock` times the functions by the thread's CPU clock instead of the wall clock, so a function's own
time leaves out what it waited for and the time the thread was preempted (on a busy machine, a socket write
that wakes Postgres on the same core shows as milliseconds of wall time).
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time

from app.cli import main as cli_main


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    cpu_clock = argv[:1] == ["--cpu-clock"]
    profiler = cProfile.Profile(time.thread_time) if cpu_clock else cProfile.Profile()
    argv = argv[1:] if cpu_clock else argv
    # Python runs signal handlers in the main thread, the one that runs the worker's event loop.
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        return cli_main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
