"""Which backend runs a registered policy version in a replay.

A row's manifest may name its own backend: `{"backend": "extractive"}`, or `{"backend": "openai",
"base_url": …, "model": …, "tool_format": …}` (a model served elsewhere, e.g. a candidate on its own vLLM).
Without one, the row is what the service's own backend serves under the row's name (a LoRA adapter on
the same vLLM), and the row seeded from settings is the service's configured policy itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from app.backends import make_policy
from app.errors import BadRequest
from app.policy.backend import PolicyBackend
from app.settings import Settings, ToolFormat
from app.store.policies import SETTINGS_SOURCE


@dataclass
class ReplayPolicy:
    name: str
    backend: PolicyBackend
    model: str | None  # passed to `propose`; None: the backend's configured model
    owned: bool  # built for this replay, closed after it


def resolve(
    name: str, manifest: dict[str, Any] | None, service_policy: PolicyBackend, settings: Settings
) -> ReplayPolicy:
    manifest = manifest or {}
    backend = manifest.get("backend")
    if manifest.get("source") == SETTINGS_SOURCE:
        return ReplayPolicy(name, service_policy, None, owned=False)
    if backend is None:
        return ReplayPolicy(name, service_policy, name, owned=False)
    if backend == "extractive":
        return ReplayPolicy(
            name, make_policy(settings.model_copy(update={"policy_backend": "extractive"})), None, True
        )
    if backend == "openai":
        url, tool_format = manifest.get("base_url"), manifest.get("tool_format", settings.policy_tool_format)
        if not isinstance(url, str) or not url:
            raise BadRequest(f"policy {name!r}: an openai manifest needs base_url")
        if tool_format not in get_args(ToolFormat):
            raise BadRequest(f"policy {name!r}: tool_format must be one of {', '.join(get_args(ToolFormat))}")
        overrides = {
            "policy_backend": "openai",
            "policy_url": url,
            "policy_model": str(manifest.get("model") or name),
            "policy_tool_format": tool_format,
        }
        return ReplayPolicy(name, make_policy(settings.model_copy(update=overrides)), None, owned=True)
    raise BadRequest(f"policy {name!r}: unknown backend {backend!r} in its manifest (extractive or openai)")
