"""`memalpha worker` with a cProfile of its event loop's thread that signals switch on (SIGUSR1) and off
(SIGUSR2), written to FILE when the worker exits: `bench.ingest_throughput --profile-calls` counts only
the chunks it chooses, after the worker's start-up and warm-up.

    python -m bench.profiled_worker FILE worker [options of `memalpha worker`]
"""

from __future__ import annotations

import cProfile
import signal
import sys

from app.cli import main as cli_main


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()
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
