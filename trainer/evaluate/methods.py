"""The methods an evaluation compares, parsed from `--methods extractive,openai:json,rag-raw,…`.

- `extractive`: our memory written by the extractive (fixed-rules) policy;
- `openai[:FORMAT]`: our memory written by an LLM over the OpenAI-compatible API in tool format
  FORMAT (`alpha`, `hermes`, `native`, `json`; default: the settings' format);
- `rag-raw`, `long-context`, `full-context`: the raw-stream baselines (`trainer.evaluate.baselines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from app.backends import make_policy
from app.policy import PolicyBackend
from app.settings import Settings, ToolFormat

Kind = Literal["memory", "rag-raw", "long-context", "full-context"]
BASELINES: tuple[Kind, ...] = ("rag-raw", "long-context", "full-context")
FORMATS: tuple[str, ...] = get_args(ToolFormat)


@dataclass(frozen=True)
class MethodSpec:
    name: str  # as given on the command line; the report's row label
    kind: Kind
    backend: Literal["extractive", "openai"] | None = None
    tool_format: ToolFormat | None = None

    def policy(self, settings: Settings) -> PolicyBackend:
        """The policy backend of a memory method, from the run's settings."""
        if self.kind != "memory" or self.backend is None:
            raise ValueError(f"{self.name} writes no memory")
        update: dict[str, object] = {"policy_backend": self.backend}
        if self.tool_format is not None:
            update["policy_tool_format"] = self.tool_format
        return make_policy(settings.model_copy(update=update))


def parse_method(text: str) -> MethodSpec:
    name = text.strip()
    if name in BASELINES:
        return MethodSpec(name, name)  # type: ignore[arg-type]
    if name == "extractive":
        return MethodSpec(name, "memory", "extractive")
    backend, _, fmt = name.partition(":")
    if backend == "openai":
        if fmt and fmt not in FORMATS:
            raise ValueError(f"unknown tool format {fmt!r} in {name!r}; choose from {', '.join(FORMATS)}")
        return MethodSpec(name, "memory", "openai", fmt or None)  # type: ignore[arg-type]
    raise ValueError(
        f"unknown method {name!r}; choose from extractive, openai[:{'|'.join(FORMATS)}], {', '.join(BASELINES)}"
    )


def parse_methods(text: str) -> list[MethodSpec]:
    specs = [parse_method(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("no method given")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"a method is listed twice: {text!r}")
    return specs
