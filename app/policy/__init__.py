"""The memory-writing policy: tool schemas, the memorize prompt, the reply parser and the backends."""

from app.policy.backend import PolicyBackend, PolicyError, PolicyReply, Usage
from app.policy.extractive import ExtractivePolicy
from app.policy.openai_backend import OpenAIPolicy, OpenAIPolicyConfig
from app.policy.parser import ParseResult, ToolCall, parse_reply
from app.policy.prompt import PromptBuild, build_messages, prompt_sha256
from app.policy.tools import TOOL_NAMES, TOOL_SCHEMAS, openai_tools, tool_calls_json_schema

__all__ = [
    "TOOL_NAMES",
    "TOOL_SCHEMAS",
    "ExtractivePolicy",
    "OpenAIPolicy",
    "OpenAIPolicyConfig",
    "ParseResult",
    "PolicyBackend",
    "PolicyError",
    "PolicyReply",
    "PromptBuild",
    "ToolCall",
    "Usage",
    "build_messages",
    "openai_tools",
    "parse_reply",
    "prompt_sha256",
    "tool_calls_json_schema",
]
