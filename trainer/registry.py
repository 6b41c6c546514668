"""Register a trained adapter as a new row of the `policies` registry, through the service facade
(`MemoryService.policies.register_policy`) on the configured database; the service need not be running."""

from __future__ import annotations

from typing import Any

from app.contracts.schemas import PolicyOut
from app.service import MemoryService
from app.settings import Settings


async def register_adapter(
    settings: Settings,
    *,
    name: str,
    base_model: str,
    adapter_path: str,
    metrics: dict[str, Any],
    manifest: dict[str, Any],
) -> PolicyOut:
    service = MemoryService(settings)
    await service.start(run_workers=False)
    try:
        return await service.policies.register_policy(name, base_model, adapter_path, metrics, manifest)
    finally:
        await service.stop()
