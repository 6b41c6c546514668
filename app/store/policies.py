"""The policy registry: named policy versions, exactly one of them active, and the history of switches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts import schemas
from app.contracts.policy import PolicyServing
from app.store.models import Policy, PolicyActivation
from app.store.sql import insert_ignore

_ACTIVE = select(Policy).where(Policy.active.is_(True))


async def active(db: AsyncSession) -> Policy | None:
    return (await db.execute(_ACTIVE)).scalar_one_or_none()


@dataclass(frozen=True)
class Serving:
    """What a worker needs of the active policy for a chunk."""

    name: str
    from_settings: bool  # the row seeded from settings (see `SETTINGS_SOURCE`)


_POLICIES = cast(Table, Policy.__table__)
# The active policy's name and manifest as scalar subqueries, read for every chunk without a statement
# of its own: the statement that starts the chunk returns them beside its columns (`serving_of`).
SERVING_COLUMNS = tuple(
    select(_POLICIES.c[name]).where(_POLICIES.c.active.is_(True)).scalar_subquery()
    for name in ("name", "manifest")
)


def serving_of(name: str | None, manifest: dict[str, Any] | None) -> Serving | None:
    """What `SERVING_COLUMNS` returned (NULLs: no active policy) as the active policy's name, and
    whether it is the row seeded from settings."""
    if name is None:
        return None
    return Serving(name, (manifest or {}).get("source") == SETTINGS_SOURCE)


async def by_name(db: AsyncSession, name: str) -> Policy | None:
    return (await db.execute(select(Policy).where(Policy.name == name))).scalar_one_or_none()


# The manifest `source` of the row seeded from settings: workers then call the backend's configured
# model (MEMALPHA_POLICY_MODEL) rather than the row's name, so changing that setting needs no registry edit.
SETTINGS_SOURCE = "settings"


async def seed_default(db: AsyncSession, *, name: str, base_model: str, now: datetime) -> None:
    """An empty registry gets one active row, so workers always have a policy to name."""
    if (await db.execute(select(func.count()).select_from(Policy))).scalar_one():
        return
    # Two processes seeding at once collide on a unique index; the loser's insert does nothing.
    await insert_ignore(
        db,
        Policy,
        {
            "name": name,
            "base_model": base_model,
            "adapter_path": None,
            "metrics": {},
            "manifest": {"source": SETTINGS_SOURCE},
            "active": True,
            "created_at": now,
        },
    )


async def register(
    db: AsyncSession,
    *,
    name: str,
    base_model: str,
    adapter_path: str | None,
    metrics: dict[str, Any],
    manifest: dict[str, Any],
    now: datetime,
) -> Policy:
    row = Policy(
        name=name,
        base_model=base_model,
        adapter_path=adapter_path,
        metrics=metrics,
        manifest=manifest,
        active=False,
        created_at=now,
    )
    db.add(row)
    await db.flush()
    return row


SWITCH, ROLLBACK = "switch", "rollback"


async def activate(
    db: AsyncSession,
    row: Policy,
    *,
    actor: str,
    action: str,
    now: datetime,
    canary: dict[str, Any] | None = None,
) -> None:
    """Make `row` active and record the switch (with the canary it was made on); activating the active row
    again records nothing."""
    current = await active(db)
    if current is not None and current.id == row.id:
        return
    # Deactivate first: the partial unique index allows one active row at any moment.
    await db.execute(update(Policy).where(Policy.active.is_(True), Policy.id != row.id).values(active=False))
    await db.flush()
    row.active = True
    db.add(
        PolicyActivation(
            action=action,
            from_name=current.name if current is not None else None,
            to_name=row.name,
            actor=actor,
            at=now,
            canary=canary,
        )
    )
    await db.flush()


async def rollback_target(db: AsyncSession, current: str) -> str | None:
    """The policy that was active before the latest switch to `current` (None: none recorded). Rollbacks
    are not switches here, so rolling back twice steps back twice rather than undoing the first."""
    latest = (
        await db.execute(
            select(PolicyActivation)
            .where(PolicyActivation.to_name == current, PolicyActivation.action == SWITCH)
            .order_by(PolicyActivation.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return latest.from_name if latest is not None else None


async def activations(db: AsyncSession, *, limit: int) -> list[PolicyActivation]:
    """The latest switches, newest first."""
    query = select(PolicyActivation).order_by(PolicyActivation.id.desc()).limit(limit)
    return list((await db.execute(query)).scalars())


def activation_record(row: PolicyActivation) -> schemas.PolicyActivation:
    return schemas.PolicyActivation.model_validate(row, from_attributes=True)


def policy_out(row: Policy, *, backend: str, serving: PolicyServing) -> schemas.PolicyOut:
    """A registry row with the backend that runs it and the settings that shape its prompt."""
    return schemas.PolicyOut(
        name=row.name,
        base_model=row.base_model,
        adapter_path=row.adapter_path,
        metrics=row.metrics,
        manifest=row.manifest,
        active=row.active,
        created_at=row.created_at,
        backend=backend,
        serving=serving,
    )
