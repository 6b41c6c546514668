"""Hand a trained adapter to the serving side, and take it back.

publish runs ordered, idempotent steps, so that a crash between any two leaves nothing wedged and running
it again completes: (0) refuse unless the service serves the policy with the settings the adapter was
trained under (`GET /policy`'s `serving` against the manifest's; `force` accepts a mismatch) and every
vLLM server serves its base model; (1) copy the adapter into the write-once store `<adapters_dir>/<name>/` (what vLLM's filesystem
resolver reads, so restarted or new replicas find it); (2) register it (`POST /policies`: the same name
again just points the row at the store's copy); (3) on every vLLM server, load it where it is not listed,
check it is listed and answers a chat completion; (4) the canary (trainer/canary.py): K held-out chunks
through the serving prompt path against the loaded adapter, compared with the manifest's evaluation — a
failed canary refuses the switch (the adapter stays stored, registered and loaded; publish again with
`force`, or after fixing the adapter); (5) switch the service's active policy to it (`PUT /policy`, which
checks a replica serves it; switching to the active policy again changes nothing, and runs no canary).

rollback asks the service (`POST /policy/rollback`): the history of switches lives in its database
(`policy_activations`), and the service loads the target again where a restarted server forgot it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from app.client import AsyncMemoryClient, MemalphaError
from app.contracts.schemas import PolicyOut, PolicyRegistration
from app.policy.replicas import expand_replicas
from app.policy.vllm_admin import check_answers, ensure_served, served_models
from trainer.adapter_store import store_adapter
from trainer.canary import CanaryConfig, CanaryError, CanaryResult, run_canary
from trainer.manifest import read_manifest, serving_differences

_TIMEOUT_S = 600.0  # PUT /policy may load an adapter on every replica


class PublishError(RuntimeError):
    """Publishing or rolling back failed; nothing after the failing step was done."""


class CanaryRefused(PublishError):
    """The canary failed: the adapter is stored, registered and loaded, but the service was not switched."""

    def __init__(self, name: str, result: CanaryResult) -> None:
        super().__init__(
            f"{result.summary()}; {name!r} was not switched to (it stays stored, registered and loaded): "
            "publish a fixed adapter, or this one again with --force"
        )
        self.result = result


@dataclass(frozen=True)
class Switch:
    action: str  # publish | rollback
    previous: str
    active: str
    adapter_path: str | None
    canary: CanaryResult | None = None  # None: no canary ran (rollback, already active, or none asked)
    # What `force` overrode, one line per difference: "serving settings: <field>: trained X, served Y",
    # "canary: <measure> vs the manifest's"; empty: every check passed (or nothing was forced).
    overridden: tuple[str, ...] = ()


def _client(service_url: str, admin_key: str | None) -> AsyncMemoryClient:
    return AsyncMemoryClient(service_url, admin_key, timeout=_TIMEOUT_S)


async def served_policy(service_url: str, admin_key: str | None) -> PolicyOut:
    try:
        async with _client(service_url, admin_key) as client:
            return await client.get_policy()
    except MemalphaError as exc:
        raise PublishError(f"GET {service_url}/policy: {exc}") from exc


async def publish(
    adapter_dir: Path,
    *,
    vllm_urls: list[str],
    service_url: str,
    admin_key: str | None,
    adapters_dir: Path,
    canary: CanaryConfig | None,
    name: str | None = None,
    force: bool = False,
) -> Switch:
    """`canary` None publishes without one (say so to the operator: nothing checks the serving path)."""
    manifest = read_manifest(adapter_dir)
    vllm_urls = await asyncio.to_thread(expand_replicas, vllm_urls)  # `dns+` names: every pod
    name = name or str(manifest["name"])
    base = str(manifest["base_model"])
    current = await served_policy(service_url, admin_key)
    differences = serving_differences(manifest, current.serving.model_dump())
    overridden = [f"serving settings: {difference}" for difference in differences]
    if differences and not force:
        raise PublishError(
            f"{name} was trained under other prompt/decoding settings than {service_url} serves: "
            + "; ".join(differences)
            + " (serve it with the trained settings, or publish with --force to accept the mismatch)"
        )
    for url in vllm_urls:  # check every server before changing anything
        served = await served_models(url)
        if base not in served:
            raise PublishError(f"{url} serves {served}, not the adapter's base model {base!r}")
    stored = str(store_adapter(adapter_dir, adapters_dir, name, base).resolve())
    registration = PolicyRegistration(
        name=name,
        base_model=base,
        adapter_path=stored,
        metrics=dict(manifest.get("eval_metrics") or {}),
        manifest=manifest,
    )
    try:
        async with _client(service_url, admin_key) as client:
            await client.register_policy(registration)
            missing = sorted(set(vllm_urls) - set(await ensure_served(vllm_urls, name, stored)))
            if missing:
                raise PublishError(f"{name!r} could not be loaded on {missing}")
            for url in vllm_urls:
                await check_answers(url, name)
            result, report = None, None
            if canary is not None and current.name != name:
                try:
                    result = await run_canary(
                        canary, manifest=manifest, model=name, replica=vllm_urls[0], serving=current.serving
                    )
                except CanaryError as exc:
                    raise PublishError(
                        f"canary of {name!r} could not run: {exc}; nothing was switched"
                    ) from exc
                if not result.passed and not canary.force:
                    raise CanaryRefused(name, result)
                overridden += [f"canary: {failure}" for failure in result.failures]
                report = result.report(forced=canary.force)
            # the canary's result is stored with the switch (policy_activations.canary)
            await client.set_policy(name, report)
    except MemalphaError as exc:
        raise PublishError(f"{service_url}: {exc}") from exc
    return Switch(
        action="publish",
        previous=current.name,
        active=name,
        adapter_path=stored,
        canary=result,
        overridden=tuple(overridden),
    )


async def rollback(*, service_url: str, admin_key: str | None) -> Switch:
    try:
        async with _client(service_url, admin_key) as client:
            previous = (await client.get_policy()).name
            row = await client.rollback_policy()
    except MemalphaError as exc:
        raise PublishError(f"POST {service_url}/policy/rollback: {exc}") from exc
    return Switch(action="rollback", previous=previous, active=row.name, adapter_path=row.adapter_path)
