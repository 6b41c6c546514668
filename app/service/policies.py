"""The policy registry: the active version, switching to a registered one, registering one."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.backends import policy_serving
from app.contracts.schemas import CanaryReport, PolicyActivation, PolicyOut
from app.errors import Conflict, NotFound
from app.policy.replicas import ReplicaResolutionError, expand_replicas
from app.policy.vllm_admin import ensure_served
from app.store import policies
from app.store.models import Policy
from app.store.types import utcnow

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Policies:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def get_policy(self) -> PolicyOut:
        async with self.service.db.read() as session:
            row = await policies.active(session)
            if row is None:
                raise NotFound("no active policy")
            return self._policy_out(row)

    def _policy_out(self, row: Policy, backend: str | None = None) -> PolicyOut:
        return policies.policy_out(
            row,
            backend=self.service.settings.policy_backend if backend is None else backend,
            serving=policy_serving(self.service.settings, self.service.counter),
        )

    async def set_policy(
        self,
        name: str,
        *,
        actor: str = "admin",
        action: str = policies.SWITCH,
        canary: CanaryReport | None = None,
    ) -> PolicyOut:
        """Switch to a registered version that a policy replica serves (a forgotten adapter is loaded
        again from its registered path first), recording the publish canary's result with the switch;
        switching to the active one again changes nothing."""
        settings = self.service.settings
        async with self.service.db.read() as session:
            row = await policies.by_name(session, name)
            if row is None:
                raise NotFound(f"no registered policy named {name!r}")
            model, adapter_path = self._served_model(row), row.adapter_path
        if model is not None:
            # Outside the transaction: loading an adapter can take a while.
            try:
                replicas = await asyncio.to_thread(expand_replicas, settings.policy_replicas)
            except ReplicaResolutionError as error:  # no replica to check: as if none served it
                raise Conflict(f"no policy replica serves {model!r}: {error}") from error
            serving = await ensure_served(replicas, model, adapter_path)
            if not serving:
                raise Conflict(
                    f"no policy replica serves {model!r}",
                    {"replicas": replicas, "adapter_path": adapter_path},
                )
        async with self.service.db.write() as session:
            row = await policies.by_name(session, name)
            if row is None:  # registry rows are never deleted
                raise NotFound(f"no registered policy named {name!r}")
            await policies.activate(
                session,
                row,
                actor=actor,
                action=action,
                now=utcnow(),
                canary=None if canary is None else canary.model_dump(),
            )
            return self._policy_out(row)

    def _served_model(self, row: Policy) -> str | None:
        """The model id the replicas must list for `row`; None when no replica is involved."""
        settings = self.service.settings
        if settings.policy_backend != "openai":
            return None
        return settings.policy_model if row.manifest.get("source") == policies.SETTINGS_SOURCE else row.name

    async def rollback_policy(self, *, actor: str = "admin") -> PolicyOut:
        """Back to the policy active before the latest switch to the current one (checked and loaded
        like any switch)."""
        async with self.service.db.read() as session:
            current = await policies.active(session)
            target = await policies.rollback_target(session, current.name) if current else None
        if target is None:
            raise Conflict("no recorded switch to the active policy to roll back")
        return await self.set_policy(target, actor=actor, action=policies.ROLLBACK)

    async def policy_activations(self, limit: int = 50) -> list[PolicyActivation]:
        async with self.service.db.read() as session:
            rows = await policies.activations(session, limit=limit)
        return [policies.activation_record(row) for row in rows]

    async def register_policy(
        self,
        name: str,
        base_model: str,
        adapter_path: str | None,
        metrics: dict[str, Any],
        manifest: dict[str, Any],
    ) -> PolicyOut:
        """Registering a name again (a re-run publish) returns its row; a new adapter path replaces the
        old one, because publish registers the store's write-once copy of an adapter that its run
        registered from out_dir (names carry the content digest). Another base model is a conflict."""
        async with self.service.db.write() as session:
            row = await policies.by_name(session, name)
            if row is not None:
                if row.base_model != base_model:
                    raise Conflict(f"a policy named {name!r} is already registered; names are never reused")
                if adapter_path is not None:
                    row.adapter_path = adapter_path
            else:
                row = await policies.register(
                    session,
                    name=name,
                    base_model=base_model,
                    adapter_path=adapter_path,
                    metrics=metrics,
                    manifest=manifest,
                    now=utcnow(),
                )
            # A registered version runs on its manifest's backend (replays), else on the service's.
            backend = str(row.manifest.get("backend", self.service.settings.policy_backend))
            return self._policy_out(row, backend)
