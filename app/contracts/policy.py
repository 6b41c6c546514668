"""The policy's serving shape: how it emits tool calls and the settings that shape its prompt and decoding
as this service serves it. `GET /policy` exposes them, the trainer records the same fields in an
adapter's manifest, and publishing refuses an adapter trained under different ones (the prompt states the
response budget, the token counter decides what the prompt budget keeps, the tool format decides what the
model writes, the frequency penalty changes the distribution replies are decoded from, the repeat stop what of a reply
is applied, and the prompt's
wording, as a digest, is what the model was trained to read)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

ToolFormat = Literal["alpha", "hermes", "native", "json"]


class PolicyServing(BaseModel):
    tool_format: ToolFormat
    max_new_tokens: int
    prompt_budget_tokens: int
    token_counter: str
    # The `json` format's schema constraint allows at most this many tool calls per reply; None for the
    # other formats, which it does not shape (an adapter is not refused over a setting that changes nothing).
    max_calls: int | None = None
    # OpenAI's frequency penalty on the reply's own tokens (MEMALPHA_POLICY_FREQUENCY_PENALTY; 0: none).
    frequency_penalty: float = 0.0
    # The repeat stop's window in characters (MEMALPHA_POLICY_REPEAT_STOP_CHARS; 0: off): it decides what
    # of a reply is applied, so what a policy is rewarded for.
    repeat_stop_chars: int = 0
    # sha256 of the memorize prompt's wording for this format and core limit (`app.policy.prompt_sha256`).
    prompt_sha256: str


def format_max_calls(tool_format: ToolFormat, max_calls: int) -> int | None:
    """`PolicyServing.max_calls` for a format: the setting where it shapes decoding, else None."""
    return max_calls if tool_format == "json" else None
