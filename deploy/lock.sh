#!/usr/bin/env bash
# Regenerate deploy/requirements.lock: every runtime dependency of pyproject.toml and
# the build backend (build-requirements.in), pinned with the sha256 of each file.
# Needs pip-tools (pip install pip-tools) in the Python that runs it (PYTHON).
#
#   deploy/lock.sh                 after changing dependencies in pyproject.toml
#
# Run it with the oldest Python the package targets (Debian 12: 3.11), so that the
# pins resolve for it. install.sh and build-deb.sh install from the lock only.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
cd "$REPO"
CUSTOM_COMPILE_COMMAND=deploy/lock.sh exec "$PYTHON" -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-find-links --no-emit-index-url \
    -o deploy/requirements.lock pyproject.toml deploy/build-requirements.in
