"""Notifications from the triggers on `chunks` (migration 0007, Postgres): accepting chunks notifies
`work`, a chunk reaching its final status notifies `done` with its session, seq and status. Each
names the backend that sent it, one of the service's own pooled connections (`Database.backend_pids`),
which is how a process tells its own `work` apart and skips the claim it would cost."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy.engine import make_url
from store_helpers import running

from app.ingest.wakeups import CHANNEL, Wakeups
from app.service import ChunkIn

pytestmark = pytest.mark.postgres

T = "tenant-n"
SEP = "\x1f"


async def test_inserts_and_final_statuses_notify_from_the_service_backends(migrated_pg_url: str) -> None:
    conninfo = make_url(migrated_pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        async with running(migrated_pg_url) as service:
            outcome = await service.ingestion.ingest(
                T, "s", [ChunkIn("Fact 1: Zorg owns red boats."), ChunkIn("Fact 2: Zorg sails.")], wait=True
            )
            assert [chunk.status for chunk in outcome.chunks] == ["done", "done"]
            own = set(service.db.backend_pids)
        heard = []
        async with asyncio.timeout(10):
            async for notification in listener.notifies():
                heard.append((notification.payload, notification.pid))
                if notification.payload == SEP.join(("done", T, "s", "2", "done")):
                    break
    payloads = [payload for payload, _ in heard]
    # One `work` for the request's INSERT, then each chunk once, in order; nothing else. The session is
    # new: the one-statement ingest found no row and inserted nothing, but its INSERT's statement
    # trigger fired (one spurious `work`), before the transaction that created the session inserted.
    assert payloads == [
        "work",
        "work",
        SEP.join(("done", T, "s", "1", "done")),
        SEP.join(("done", T, "s", "2", "done")),
    ]
    assert own and all(pid in own for _, pid in heard)


def test_new_work_wakes_one_claim_loop_and_another_only_while_the_first_has_a_wake_up_pending() -> None:
    wakeups = Wakeups()
    with wakeups.worker() as first, wakeups.worker() as second:
        wakeups.work()
        assert first.is_set() and not second.is_set()
        wakeups.work()  # the first has not claimed since: the second looks too
        assert second.is_set()
        first.clear()  # the first claims (`WorkerPool._claim_loop`)
        wakeups.work()
        assert first.is_set()


def test_a_process_skips_its_own_work_notifications_but_not_others() -> None:
    wakeups = Wakeups()
    with wakeups.worker() as woken:
        wakeups.dispatch("work", own=True)
        assert not woken.is_set()
        wakeups.dispatch("work", own=False)
        assert woken.is_set()
    with wakeups.watch(("t", "s")) as watch:
        wakeups.dispatch(SEP.join(("done", "t", "s", "3", "done")), own=True)  # own or not: waiters hear it
        assert watch.take() == [(3, "done")]
