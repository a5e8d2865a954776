#!/usr/bin/env bash
# Creates conformance/.venv with Thumbor 7.8.0 (the oracle for the differential
# conformance suite). Idempotent: re-running only installs what is missing.
#
#   conformance/setup.sh
#
# Thumbor 7.8.0 ships a manylinux wheel for CPython 3.11 and needs no system
# libraries beyond what Pillow's wheel bundles. The "opencv" extra is installed so
# that `smart/` crops use real detectors (face + feature) as a stock deployment
# would; pycurl (HTTP loader only) is not needed because the file loader is used.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
want="7.8.0"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $($python --version 2>&1)"
    "$python" -m venv "$venv"
fi

have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("thumbor"))' 2>/dev/null || true)"
have_cv="$("$venv/bin/python" -c 'import cv2; print("ok")' 2>/dev/null || true)"
have_pil="$("$venv/bin/python" -c 'import PIL; print(PIL.__version__)' 2>/dev/null || true)"
want_pil="$(sed -n 's/^[Pp]illow==//p' "$here/constraints.txt")"
if [ "$have" != "$want" ] || [ "$have_cv" != "ok" ] || [ "$have_pil" != "$want_pil" ]; then
    echo "setup: installing thumbor[opencv]==$want"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # constraints.txt pins every dependency to the versions recordings.json was
    # made with (Pillow's codecs decide the pixels), so re-recording is reproducible.
    "$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "thumbor[opencv]==$want"
fi

"$venv/bin/python" - <<'PY'
import importlib.metadata as m
import PIL, cv2
print("setup: thumbor", m.version("thumbor"), "| Pillow", PIL.__version__, "| opencv", cv2.__version__)
PY
