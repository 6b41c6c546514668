#!/usr/bin/env python3
"""Checks of deploy/validate.sh that need a few lines of Python (standard library + PyYAML).

dockerfiles   every COPY source of both Dockerfiles exists and is not excluded by .dockerignore
envdocs       every setting of app/settings.py and every ${VAR} of docker-compose.yml is documented
              in .env.example, and every setting reaches the compose containers
dashboard     the Grafana dashboard is valid JSON whose queries name only metrics the service
              defines (app/metrics.py) or vLLM / Prometheus ones; writes the queries as a rules file
              for `promtool check rules` (PromQL syntax)
smoke         starts the service exactly as the compose `api` container does (same command and
              environment, only the database URL and port changed) against a real Postgres, runs
              the Dockerfile's HEALTHCHECK command until it passes, checks auth with the bootstrap
              key, and starts `memalpha worker` as the compose worker does
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def fail(errors: list[str]) -> int:
    for error in errors:
        print(f"  ERROR   {error}")
    return 1 if errors else 0


# ---------------------------------------------------------------------------------------------- dockerfiles


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def glob_regex(pattern: str) -> str:
    """Go filepath.Match syntax plus Docker's `**` (any number of directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory
    excludes everything below it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in patterns:
        regex = glob_regex(pattern)
        if any(re.fullmatch(regex, p) for p in prefixes):
            result = not negate
    return result


def copy_sources(dockerfile: Path) -> list[list[str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    groups = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        groups.append(args[:-1])
    return groups


def check_dockerfiles(_: argparse.Namespace) -> int:
    errors = []
    patterns = dockerignore_patterns()
    for dockerfile in (ROOT / "Dockerfile", ROOT / "trainer" / "Dockerfile"):
        for sources in copy_sources(dockerfile):
            matched_any = False
            for source in sources:
                hits = glob.glob(str(ROOT / source))
                if not hits and not glob.has_magic(source):
                    errors.append(f"{dockerfile.relative_to(ROOT)}: COPY source {source} does not exist")
                for hit in hits:
                    rel = os.path.relpath(hit, ROOT)
                    if ignored(rel, patterns):
                        errors.append(
                            f"{dockerfile.relative_to(ROOT)}: COPY source {rel} is excluded by .dockerignore"
                        )
                    matched_any = True
            if not matched_any:
                errors.append(f"{dockerfile.relative_to(ROOT)}: COPY {' '.join(sources)} matches nothing")
            print(f"  copy    {dockerfile.relative_to(ROOT)}: {' '.join(sources)}")
    for secret_like in (".env", ".git", ".venv"):
        if not ignored(secret_like, patterns):
            errors.append(f".dockerignore must exclude {secret_like}")
    return fail(errors)


# ---------------------------------------------------------------------------------------------- envdocs


def settings_fields() -> list[str]:
    tree = ast.parse((ROOT / "app" / "settings.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return [
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            ]
    raise SystemExit("app/settings.py: class Settings not found")


def check_envdocs(_: argparse.Namespace) -> int:
    errors = []
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    compose_text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(compose_text)
    shared_env = compose["x-memalpha-env"]
    fields = settings_fields()
    for field in fields:
        var = f"MEMALPHA_{field.upper()}"
        if var not in documented:
            errors.append(f".env.example does not document {var} (app/settings.py: {field})")
        if var not in shared_env and var not in {"MEMALPHA_HOST", "MEMALPHA_PORT"}:
            errors.append(f"docker-compose.yml x-memalpha-env does not pass {var} to the containers")
    for var in shared_env:
        if var.startswith("MEMALPHA_") and var[len("MEMALPHA_") :].lower() not in fields:
            errors.append(f"docker-compose.yml passes {var}, which app/settings.py does not define")
    # The CPU profile's override file uses variables of its own (read as text: its `!reset` tag is
    # Compose v2 syntax that a plain YAML loader rejects).
    all_text = compose_text + (ROOT / "docker-compose.cpu.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", all_text))
    for var in sorted(used - documented):
        errors.append(f"docker-compose files use ${{{var}}}, which .env.example does not document")
    for var in sorted(documented - used - {f"MEMALPHA_{f.upper()}" for f in fields}):
        if not re.search(rf"^\s+{var}:", all_text, flags=re.MULTILINE):  # passed through by name
            errors.append(f".env.example documents {var}, which nothing uses")
    print(f"  env     {len(fields)} settings and {len(used)} compose variables documented in .env.example")
    return fail(errors)


# ---------------------------------------------------------------------------------------------- dashboard


def check_dashboard(args: argparse.Namespace) -> int:
    errors = []
    dashboard = json.loads(Path(args.dashboard).read_text())
    defined = set(re.findall(r'"(memalpha_[a-z_]+)"', (ROOT / "app" / "metrics.py").read_text()))
    queries = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                queries.append((panel.get("title", "?"), target["expr"]))

    walk(dashboard.get("panels", []))
    for title, expr in queries:
        for name in re.findall(r"\b(memalpha_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            if name not in defined and base not in defined:
                errors.append(f"dashboard panel {title!r}: metric {name} is not defined in app/metrics.py")
    for name in sorted(defined):
        if not any(name in expr for _, expr in queries):
            errors.append(f"metric {name} (app/metrics.py) is on no dashboard panel")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    Path(args.rules_out).write_text(yaml.safe_dump(rules))
    print(f"  panels  {len(queries)} queries over {len(defined)} service metrics")
    return fail(errors)


# ---------------------------------------------------------------------------------------------- smoke


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthcheck_command() -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, flags=re.MULTILINE)
    if not match:
        raise SystemExit("Dockerfile: no HEALTHCHECK CMD [...] found")
    return json.loads(match.group(1))


def http(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_smoke(args: argparse.Namespace) -> int:
    venv_bin = Path(args.venv) / "bin"
    compose = yaml.safe_load(Path(args.compose_config).read_text())["services"]
    api = compose["api"]
    command = (api.get("entrypoint") or []) + (api.get("command") or [])
    env_file = {k: str(v) for k, v in (api.get("environment") or {}).items() if v is not None}
    admin_url = args.postgres
    database = f"memalpha_validate_{os.getpid()}"
    db_url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{database}"
    port = free_port()
    # The container's environment, with the two values that must differ on a shared machine.
    env = {
        "PATH": f"{venv_bin}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        **env_file,
        "MEMALPHA_DATABASE_URL": db_url,
        "MEMALPHA_PORT": str(port),
    }
    admin = [
        str(venv_bin / "python"),
        "-c",
        "import sys, psycopg; c = psycopg.connect(sys.argv[1], autocommit=True); c.execute(sys.argv[2])",
        admin_url,
    ]
    errors: list[str] = []
    subprocess.run(admin + [f'CREATE DATABASE "{database}"'], check=True)
    print(f"  db      created {database} on {admin_url.split('@')[-1]}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    server = worker = None
    try:
        print(f"  start   {shlex.join(command)}   (MEMALPHA_PORT={port}, env from docker-compose config)")
        # The child keeps its own descriptor of the log; the parent's is closed at once.
        with open(workdir / "api.log", "wb") as log:
            server = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        probe = healthcheck_command()
        probe[0] = str(venv_bin / probe[0]) if (venv_bin / probe[0]).exists() else probe[0]
        deadline = time.monotonic() + args.timeout
        healthy = False
        while time.monotonic() < deadline and server.poll() is None:
            if subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0:
                healthy = True
                break
            time.sleep(1)
        if not healthy:
            errors.append(
                f"Dockerfile HEALTHCHECK did not pass within {args.timeout}s "
                f"(server exit code {server.poll()}); log: {workdir / 'api.log'}"
            )
        else:
            print(f"  health  Dockerfile HEALTHCHECK passed: {shlex.join(probe[:2])} ...")
            base = f"http://127.0.0.1:{port}"
            key = env_file.get("MEMALPHA_BOOTSTRAP_API_KEY")
            checks = [
                ("GET /sessions without a key", http(f"{base}/sessions"), 401),
                ("GET /sessions with the bootstrap key", http(f"{base}/sessions", key), 200),
                ("GET /metrics", http(f"{base}/metrics"), 200),
            ]
            for what, got, want in checks:
                print(f"  http    {what}: {got}")
                if got != want:
                    errors.append(f"{what}: HTTP {got}, expected {want}")
        # The compose worker: same image entrypoint (`memalpha`) and environment, command `worker`.
        with open(workdir / "worker.log", "wb") as worker_log:
            worker = subprocess.Popen(
                [str(venv_bin / "memalpha"), "worker"],
                env=env,
                cwd=workdir,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        time.sleep(5)
        if worker.poll() is not None:
            errors.append(f"memalpha worker exited with {worker.returncode}; log: {workdir / 'worker.log'}")
        else:
            print("  worker  memalpha worker still running after 5 s")
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if server is not None:
            graceful = "Finished server process" in (workdir / "api.log").read_text(errors="replace")
            # uvicorn re-raises the signal after a graceful shutdown, hence -15 rather than 0.
            print(f"  stop    api: exit {server.returncode} on SIGTERM, graceful shutdown logged: {graceful}")
            if not graceful:
                errors.append("the api did not shut down gracefully on SIGTERM")
        if worker is not None:
            print(f"  stop    worker: exit {worker.returncode} on SIGTERM")
        subprocess.run(admin + [f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
    if errors:
        for name in ("api.log", "worker.log"):
            path = workdir / name
            if path.exists():
                print(f"  ---- last lines of {name}")
                print("\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return fail(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="check", required=True)
    sub.add_parser("dockerfiles").set_defaults(func=check_dockerfiles)
    sub.add_parser("envdocs").set_defaults(func=check_envdocs)
    dash = sub.add_parser("dashboard")
    dash.add_argument(
        "--dashboard", default=str(ROOT / "deploy/components/monitoring/dashboards/memalpha.json")
    )
    dash.add_argument("--rules-out", required=True)
    dash.set_defaults(func=check_dashboard)
    smoke = sub.add_parser("smoke")
    smoke.add_argument(
        "--venv", required=True, help="clean venv with the service installed from constraints.txt"
    )
    smoke.add_argument("--compose-config", required=True, help="output of docker-compose config")
    smoke.add_argument(
        "--postgres", required=True, help="admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    smoke.add_argument("--workdir", required=True)
    smoke.add_argument("--timeout", type=int, default=60)
    smoke.set_defaults(func=check_smoke)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
