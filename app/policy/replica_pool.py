"""The policy replicas a long-lived process calls: one pooled client per replica URL, taken in turn, with
`dns+` names (app/policy/replicas.py) resolved again every `refresh_s` while the process runs, so that a
Kubernetes Service scaled from one vLLM pod to three gets load without restarting API or worker pods.

Resolution is blocking and runs in a thread, at most once per interval, started by the call that finds it
due (an idle process has nothing to route); the other calls meanwhile go on with the current list. A
replica that leaves the list takes no new call but keeps its client until its calls in flight return. A
name that does not resolve at a refresh (a DNS blip, a Service scaled to zero) keeps the current list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.policy.chat_endpoint import ChatEndpoint
from app.policy.replicas import (
    DNS_PREFIX,
    ReplicaResolutionError,
    Resolver,
    expand_replicas,
    resolve_addresses,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Replica:
    url: str
    client: ChatEndpoint
    in_flight: int = 0


class ReplicaPool:
    def __init__(
        self,
        urls: Sequence[str],
        make_client: Callable[[str], ChatEndpoint],
        *,
        refresh_s: float,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        self._written = tuple(urls)
        self._make_client = make_client
        self._resolve = resolve
        self._refresh_s = refresh_s
        self._dynamic = refresh_s > 0 and any(url.startswith(DNS_PREFIX) for url in urls)
        # At start a name that does not resolve yet (vLLM still starting) stands as one URL of that name.
        expanded = expand_replicas(self._written, strict=False, resolve=resolve)
        self._replicas = [_Replica(url, make_client(url)) for url in expanded]
        self._retired: list[_Replica] = []  # left the list, closed when their last call returns
        self._turn = 0
        self._next_refresh = time.monotonic() + refresh_s
        self._refresh_lock = asyncio.Lock()

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self._replicas]

    @property
    def first(self) -> ChatEndpoint:
        """The first replica's client (health checks)."""
        return self._replicas[0].client

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[ChatEndpoint]:
        """The next replica's client in turn, held as in flight until the block ends."""
        await self._maybe_refresh()
        replica = self._replicas[self._turn % len(self._replicas)]
        self._turn += 1
        replica.in_flight += 1
        try:
            yield replica.client
        finally:
            replica.in_flight -= 1
            if replica.in_flight == 0 and replica in self._retired:
                self._retired.remove(replica)
                await replica.client.close()

    async def _maybe_refresh(self) -> None:
        if not self._dynamic or time.monotonic() < self._next_refresh or self._refresh_lock.locked():
            return
        async with self._refresh_lock:
            self._next_refresh = time.monotonic() + self._refresh_s
            try:
                urls = await asyncio.to_thread(expand_replicas, self._written, resolve=self._resolve)
            except ReplicaResolutionError as error:
                log.warning("policy replicas not re-resolved, keeping %s: %s", self.urls, error)
                return
            await self._replace(urls)

    async def _replace(self, urls: list[str]) -> None:
        current = {replica.url: replica for replica in self._replicas}
        if list(current) == urls:
            return
        self._replicas = [
            current.pop(url) if url in current else _Replica(url, self._make_client(url)) for url in urls
        ]
        for gone in current.values():
            if gone.in_flight:
                self._retired.append(gone)
            else:
                await gone.client.close()
        log.info("policy replicas re-resolved: %s", urls)

    async def aclose(self) -> None:
        for replica in [*self._replicas, *self._retired]:
            await replica.client.close()
