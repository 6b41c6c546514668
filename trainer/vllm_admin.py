"""vLLM's runtime LoRA endpoints (server started with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) and a smoke check that a served name answers."""

from __future__ import annotations

import httpx

_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


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
        response = await client.post(f"{_root(base_url)}/v1/load_lora_adapter",
                                     json={"lora_name": name, "lora_path": adapter_path})
    if response.status_code != 200:
        raise VLLMAdminError(f"{base_url}: load_lora_adapter {name!r} → HTTP {response.status_code}: "
                             f"{response.text[:2000]}")


async def unload_lora_adapter(base_url: str, name: str) -> None:
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(f"{_root(base_url)}/v1/unload_lora_adapter", json={"lora_name": name})
    if response.status_code != 200:
        raise VLLMAdminError(f"{base_url}: unload_lora_adapter {name!r} → HTTP {response.status_code}: "
                             f"{response.text[:2000]}")


async def check_answers(base_url: str, name: str) -> str:
    """One short chat completion from `name`; its text (raises when the server does not answer)."""
    request = {"model": name, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 8,
               "temperature": 0.0}
    async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
        response = await client.post(f"{_root(base_url)}/v1/chat/completions", json=request)
    if response.status_code != 200:
        raise VLLMAdminError(f"{base_url}: {name!r} does not answer: HTTP {response.status_code}: "
                             f"{response.text[:2000]}")
    choices = response.json().get("choices") or []
    if not choices:
        raise VLLMAdminError(f"{base_url}: {name!r} answered without choices")
    return str(choices[0].get("message", {}).get("content") or "")
