"""Rollouts over a pool of vLLM servers: each policy call goes to the next live server in turn (round
robin), and a server that fails at the transport level (refused, reset, timed out, 5xx) leaves the pool
for the rest of the pass, its call retried on the next one. A pool is built per rollout pass (one
iteration's or evaluation's), so a server that came back is used again on the next pass. Errors that
are the request's (4xx) are raised as they are: another server would refuse them alike."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import openai

from app.memory import MemoryState
from app.policy.backend import PolicyBackend, PolicyError, PolicyReply

log = logging.getLogger(__name__)

# What says "this server is unwell" rather than "this request is wrong".
_SERVER_DOWN = (openai.APIConnectionError, openai.InternalServerError)


def server_down(error: PolicyError) -> bool:
    return isinstance(error.__cause__, _SERVER_DOWN)


class SamplerPool:
    def __init__(self, members: Mapping[str, PolicyBackend]) -> None:
        if not members:
            raise ValueError("a sampler pool needs at least one server")
        self.name = next(iter(members.values())).name  # records name the backend, not the pooling
        self._members = dict(members)
        self._order = list(members)
        self._turn = 0
        self.dropped: dict[str, str] = {}  # url → why it left the pool

    @property
    def live(self) -> list[str]:
        return [url for url in self._order if url not in self.dropped]

    def drop(self, url: str, reason: str) -> None:
        if url not in self.dropped:
            log.warning("rollout server %s left the pool: %s", url, reason)
            self.dropped[url] = reason

    def _next(self) -> str:
        live = self.live
        if not live:
            raise PolicyError(f"every rollout server failed: {self.dropped}")
        url = live[self._turn % len(live)]
        self._turn += 1
        return url

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        while True:
            url = self._next()
            try:
                return await self._members[url].propose(state, chunk, model=model)
            except PolicyError as error:
                if not server_down(error):
                    raise
                self.drop(url, str(error))

    async def health(self) -> bool:
        return any([await self._members[url].health() for url in self.live])

    async def aclose(self) -> None:
        for member in self._members.values():
            await member.aclose()
