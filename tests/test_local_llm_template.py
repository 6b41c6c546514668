"""scripts/local_llm.py's chat-template fix for Qwen2.5-Coder-1.5B, and the GGUF header reader it uses.

The packaged template prints its tool-call example from inside a Jinja string literal, so the rendered
prompt shows `{{"name": …}}` and the model learns a doubled-brace call format. The template here is the
packaged tool section verbatim (the lines that differ from upstream Qwen2.5); it is rendered with Jinja
as llama-server and vLLM render it.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import ModuleType

import jinja2
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local_llm.py"

PACKAGED_TOOL_SECTION = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
    '\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- endif %}"
)


@pytest.fixture(scope="module")
def local_llm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memalpha_local_llm_template", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _example_line(template: str) -> str:
    rendered = jinja2.Environment().from_string(template).render(tools=[{"name": "memory_delete"}])
    return rendered.split("<tool_call>\n", 1)[1].split("\n</tool_call>", 1)[0]


def test_packaged_template_renders_double_braces(local_llm: ModuleType) -> None:
    assert _example_line(PACKAGED_TOOL_SECTION).startswith('{{"name"')


def test_fixed_template_renders_the_call_format_the_parsers_read(local_llm: ModuleType) -> None:
    line = _example_line(local_llm.fixed_tool_template(PACKAGED_TOOL_SECTION))
    assert line == '{"name": <function-name>, "arguments": <args-json-object>}'
    # With the placeholders filled in, the line is one JSON object: what the hermes parser reads.
    filled = line.replace("<function-name>", '"memory_delete"').replace(
        "<args-json-object>", '{"memory_type": "core_memory"}'
    )
    assert json.loads(filled) == {"name": "memory_delete", "arguments": {"memory_type": "core_memory"}}


def test_fix_refuses_a_template_without_the_bug(local_llm: ModuleType) -> None:
    with pytest.raises(local_llm.SetupError, match="double-brace pattern was not found"):
        local_llm.fixed_tool_template(local_llm.fixed_tool_template(PACKAGED_TOOL_SECTION))


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def test_gguf_reader_finds_the_template_after_other_keys(local_llm: ModuleType, tmp_path: Path) -> None:
    # A GGUF v3 header: scalars, an array of strings and an array of floats before the wanted key.
    entries = [
        _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("qwen2"),
        _gguf_string("qwen2.context_length") + struct.pack("<II", 4, 32768),
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, 3)
        + b"".join(_gguf_string(t) for t in ("a", "<|im_start|>", "é")),
        _gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", 0.5, -1.0),
        _gguf_string("general.flag") + struct.pack("<I?", 7, True),
        _gguf_string("tokenizer.chat_template") + struct.pack("<I", 8) + _gguf_string(PACKAGED_TOOL_SECTION),
    ]
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + b"".join(entries))
    assert local_llm.gguf_metadata_string(path, "tokenizer.chat_template") == PACKAGED_TOOL_SECTION
    assert local_llm.gguf_metadata_string(path, "general.architecture") == "qwen2"
    assert local_llm.gguf_metadata_string(path, "missing.key") is None


def _tokenizer_gguf(path: Path, pre: str) -> None:
    """A GGUF header with a tiny byte-level BPE vocabulary ("Ġ" is the space byte) and one control token."""
    tokens = ["a", "b", "Ġ", "ab", "Ġab", "<|im_start|>"]
    entries = [
        _gguf_string("tokenizer.ggml.model") + struct.pack("<I", 8) + _gguf_string("gpt2"),
        _gguf_string("tokenizer.ggml.pre") + struct.pack("<I", 8) + _gguf_string(pre),
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, len(tokens))
        + b"".join(_gguf_string(t) for t in tokens),
        _gguf_string("tokenizer.ggml.token_type")
        + struct.pack("<IIQ", 9, 5, len(tokens))
        + struct.pack(f"<{len(tokens)}i", 1, 1, 1, 1, 1, 3),
        _gguf_string("tokenizer.ggml.merges")
        + struct.pack("<IIQ", 9, 8, 2)
        + b"".join(_gguf_string(m) for m in ("a b", "Ġ ab")),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + b"".join(entries))


def test_tokenizer_json_is_rebuilt_from_the_gguf_vocabulary(
    local_llm: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenizers import Tokenizer

    monkeypatch.setenv("MEMALPHA_CACHE", str(tmp_path))
    source = local_llm.gguf_path("qwen0.5b")
    _tokenizer_gguf(source, "qwen2")
    # ensure_gguf takes a file whose recorded digest is the pinned one as verified (no download).
    source.with_name(source.name + ".sha256").write_text(local_llm.MODELS["qwen0.5b"].sha256)
    path = local_llm.ensure_tokenizer("qwen0.5b")
    tokenizer = Tokenizer.from_file(str(path))
    assert tokenizer.encode("ab ab", add_special_tokens=False).ids == [3, 4]
    assert tokenizer.encode("<|im_start|>ab", add_special_tokens=False).ids == [5, 3]


def test_tokenizer_refuses_another_pre_tokenizer(
    local_llm: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMALPHA_CACHE", str(tmp_path))
    source = local_llm.gguf_path("qwen0.5b")
    _tokenizer_gguf(source, "llama-bpe")
    source.with_name(source.name + ".sha256").write_text(local_llm.MODELS["qwen0.5b"].sha256)
    with pytest.raises(local_llm.SetupError, match="only Qwen2"):
        local_llm.ensure_tokenizer("qwen0.5b")
