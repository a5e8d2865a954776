#!/usr/bin/env bash
# Installs the comparison peers for loadtest/compare.py, idempotently, with pinned versions:
#   - wrk from Debian (apt-get install -y wrk)
#   - Thumbor (+ OpenCV for `smart`) in a Python venv:   loadtest/.peers/thumbor-venv
#   - sharp (npm) for loadtest/peers/sharp-server.mjs:   loadtest/.peers/node_modules
# Target: Debian 12, Python 3.11, Node 20 + npm. Re-running is cheap: each step checks a stamp
# (the pinned versions) and skips itself when they already match.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="$HERE/.peers"
mkdir -p "$PEERS"

# Pinned versions (keep in sync with loadtest/README.md).
SHARP_VERSION="0.34.5"
# Thumbor and every package it pulls in are pinned in peers/thumbor-requirements.txt.
REQS="$HERE/peers/thumbor-requirements.txt"

log() { printf '[setup-peers] %s\n' "$*" >&2; }

# --- wrk -------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk from Debian"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
log "wrk: $(wrk --version 2>&1 | head -n1 | cut -c1-60)"

# --- Thumbor ---------------------------------------------------------------------------
VENV="$PEERS/thumbor-venv"
STAMP="$VENV/.pinned"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  log "installing Thumbor into $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv's ensurepip separately.
    log "python3 -m venv failed; installing python3-venv"
    SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade "pip==24.3.1"
  "$VENV/bin/pip" install -q --disable-pip-version-check --prefer-binary -r "$REQS"
  # The detectors need cv2; fail here rather than in the middle of a run.
  "$VENV/bin/python" -c 'import cv2, thumbor; print("thumbor", thumbor.__version__, "opencv", cv2.__version__)' >&2
  echo "$WANT" > "$STAMP"
fi
log "thumbor: $("$VENV/bin/python" -c 'import thumbor, cv2, PIL; print(thumbor.__version__, "opencv", cv2.__version__, "Pillow", PIL.__version__)')"

# --- sharp -----------------------------------------------------------------------------
if [ ! -f "$PEERS/node_modules/sharp/package.json" ] \
  || [ "$(node -p "require('$PEERS/node_modules/sharp/package.json').version")" != "$SHARP_VERSION" ]; then
  log "installing sharp@$SHARP_VERSION into $PEERS"
  if [ ! -f "$PEERS/package.json" ]; then
    printf '{ "name": "imgedge-loadtest-peers", "private": true }\n' > "$PEERS/package.json"
  fi
  (cd "$PEERS" && npm install --no-audit --no-fund --loglevel=error --save-exact "sharp@$SHARP_VERSION" >&2)
fi
log "sharp: $(cd "$PEERS" && node -e "const s=require('sharp'); console.log(require('sharp/package.json').version, 'libvips', s.versions.vips)")"
