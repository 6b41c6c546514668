"""vLLM's runtime LoRA endpoints (server started with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), a smoke check that a served name answers, and `ensure_served`:
the load-where-missing step that publish, `PUT /policy`, rollback and the workers' self-heal share.

In `app` (not `trainer`) because the service reloads adapters itself; the trainer imports it from here."""

from __future__ import annotations

import asyncio
import logging

import httpx

_TIMEOUT = httpx.Timeout(600.0, connect=10.0)

log = logging.getLogger(__name__)


class VLLMAdminError(RuntimeError):
    """A LoRA load/unload or check failed; the message carries the server's answer."""


def _root(base_url: str) -> str:
    """`http://host:port/v1` → `http://host:port` (the LoRA endpoints live under /v1 of the root)."""
    return base_url.rstrip("/").removesuffix("/v1")


async def served_models(base_url: str) -> list[str]:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.get(f"{_root(base_url)}/v1/models")
    response.raise_for_status()
    return [model["id"] for model in response.json().get("data", [])]


async def load_lora_adapter(base_url: str, name: str, adapter_path: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(
            f"{_root(base_url)}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": adapter_path}
        )
    if response.status_code != 200:
        raise VLLMAdminError(
            f"{base_url}: load_lora_adapter {name!r} → HTTP {response.status_code}: {response.text[:2000]}"
        )


async def unload_lora_adapter(base_url: str, name: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(f"{_root(base_url)}/v1/unload_lora_adapter", json={"lora_name": name})
    if response.status_code != 200:
        raise VLLMAdminError(
            f"{base_url}: unload_lora_adapter {name!r} → HTTP {response.status_code}: {response.text[:2000]}"
        )


async def check_answers(base_url: str, name: str) -> str:
    """One short chat completion from `name`; its text (raises when the server does not answer)."""
    request = {
        "model": name,
        "messages": [{"role": "user", "content": "Say OK."}],
        "max_tokens": 8,
        "temperature": 0.0,
    }
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(f"{_root(base_url)}/v1/chat/completions", json=request)
    if response.status_code != 200:
        raise VLLMAdminError(
            f"{base_url}: {name!r} does not answer: HTTP {response.status_code}: {response.text[:2000]}"
        )
    choices = response.json().get("choices") or []
    if not choices:
        raise VLLMAdminError(f"{base_url}: {name!r} answered without choices")
    return str(choices[0].get("message", {}).get("content") or "")


async def _served_on(base_url: str, name: str, adapter_path: str | None) -> bool:
    """Whether `name` is listed by the server after loading it from `adapter_path` when it is not."""
    try:
        if name in await served_models(base_url):
            return True
        if adapter_path is None:
            return False
        try:
            await load_lora_adapter(base_url, name, adapter_path)
        except VLLMAdminError:
            # Another caller (or the filesystem resolver) may have loaded it meanwhile: the listing decides.
            log.info("%s: loading %r failed; checking the listing", base_url, name, exc_info=True)
        return name in await served_models(base_url)
    except (httpx.HTTPError, VLLMAdminError):
        log.warning("%s cannot serve %r", base_url, name, exc_info=True)
        return False


async def ensure_served(base_urls: list[str], name: str, adapter_path: str | None) -> list[str]:
    """Load `name` from `adapter_path` on every server that does not list it (a restarted one forgot its
    runtime adapters); the servers that list it afterwards. `adapter_path` None: a base model, check only."""
    results = await asyncio.gather(*(_served_on(url, name, adapter_path) for url in base_urls))
    return [url for url, ok in zip(base_urls, results, strict=True) if ok]
