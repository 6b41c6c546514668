"""Hand a trained adapter to the serving side, and take it back.

publish: on every vLLM server, `POST /v1/load_lora_adapter` under the adapter's versioned name (refused if
the server already has that name: a name is never reused, so a name always means one set of weights),
check that the name answers a chat completion, then switch the service's active policy to it
(`PUT /policy`, admin key). rollback: switch the service back to the policy that was active before the
last publish of the currently active one. Every switch is appended to a journal (JSON lines), which is
what rollback reads: the registry keeps which row is active, not the order they were activated in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from trainer.manifest import read_manifest
from trainer.vllm_admin import check_answers, load_lora_adapter, served_models

_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class PublishError(RuntimeError):
    """Publishing or rolling back failed; nothing after the failing step was done."""


@dataclass(frozen=True)
class Switch:
    at: str
    action: str  # publish | rollback
    previous: str
    active: str
    servers: list[str]


async def _service(method: str, service_url: str, admin_key: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.request(method, f"{service_url.rstrip('/')}/policy", json=body, headers=headers)
    if response.status_code != 200:
        raise PublishError(f"{method} {service_url}/policy → HTTP {response.status_code}: {response.text[:1000]}")
    payload: dict[str, Any] = response.json()
    return payload


async def active_policy(service_url: str, admin_key: str | None) -> str:
    return str((await _service("GET", service_url, admin_key))["name"])


async def switch_policy(service_url: str, admin_key: str | None, name: str) -> dict[str, Any]:
    return await _service("PUT", service_url, admin_key, {"name": name})


def _append(journal: Path, switch: Switch) -> None:
    journal.parent.mkdir(parents=True, exist_ok=True)
    with open(journal, "a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(switch)) + "\n")


def read_journal(journal: Path) -> list[Switch]:
    if not journal.exists():
        return []
    return [Switch(**json.loads(line)) for line in journal.read_text().splitlines() if line.strip()]


async def publish(adapter_dir: Path, *, vllm_urls: list[str], service_url: str, admin_key: str | None,
                  journal: Path, name: str | None = None) -> Switch:
    manifest = read_manifest(adapter_dir)
    name = name or str(manifest["name"])
    base = str(manifest["base_model"])
    path = str(adapter_dir.resolve())
    for url in vllm_urls:  # check every server before changing any
        served = await served_models(url)
        if base not in served:
            raise PublishError(f"{url} serves {served}, not the adapter's base model {base!r}")
        if name in served:
            raise PublishError(f"{url} already serves {name!r}; a published name is never reused")
    for url in vllm_urls:
        await load_lora_adapter(url, name, path)
        await check_answers(url, name)
    previous = await active_policy(service_url, admin_key)
    await switch_policy(service_url, admin_key, name)
    switch = Switch(at=datetime.now(UTC).isoformat(), action="publish", previous=previous, active=name,
                    servers=list(vllm_urls))
    _append(journal, switch)
    return switch


async def rollback(*, service_url: str, admin_key: str | None, journal: Path) -> Switch:
    current = await active_policy(service_url, admin_key)
    publishes = [s for s in read_journal(journal) if s.action == "publish" and s.active == current]
    if not publishes:
        raise PublishError(f"the journal {journal} has no publish of the active policy {current!r}")
    target = publishes[-1].previous
    await switch_policy(service_url, admin_key, target)
    switch = Switch(at=datetime.now(UTC).isoformat(), action="rollback", previous=current, active=target,
                    servers=publishes[-1].servers)
    _append(journal, switch)
    return switch
