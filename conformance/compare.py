#!/usr/bin/env python3
"""Replays conformance/recordings.json (Thumbor 7.8.0's answers) against a running imgedge
and reports, per group, how many cases agree on status, output size and (loosely) the
8x8 colour fingerprint. A measuring tool, not the test: the test is tests/it/thumbor.rs
(part of `cargo test`), which also honours conformance/differences.toml.

    python3 conformance/compare.py [--binary target/debug/imgedge] [--group align] [-v]

Starts the binary on free loopback ports over a temporary data directory into which the
fixture images are imported as public files (keys = their paths under images/). Needs
Pillow for the fingerprint (the conformance venv has it); without Pillow only status and
size are compared.
"""
import argparse
import http.client
import urllib.parse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from PIL import Image
except ImportError:  # status and size only
    Image = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint(body):
    img = Image.open(io.BytesIO(body))
    img.seek(0)
    img = img.convert("RGBA").resize((8, 8), Image.BOX)
    data = img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata()
    return [list(p) for p in data]


def distance(a, b):
    """Mean absolute difference per channel over the 8x8 grid (0-255)."""
    total = sum(abs(x - y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    return total / (64 * 4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/debug/imgedge")
    ap.add_argument("--group", action="append")
    ap.add_argument("--tolerance", type=float, default=12.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    recorded = json.load(open(os.path.join(HERE, "recordings.json")))["cases"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGEDGE_")}
    data = tempfile.mkdtemp(prefix="imgedge-conformance-")
    subprocess.run(
        [args.binary, "import", os.path.join(HERE, "images"), "--visibility", "public",
         "--data-dir", data],
        check=True, env=env, stdout=subprocess.DEVNULL)
    cdn, api = free_port(), free_port()
    env.update(IMGEDGE_CDN_ADDR=f"127.0.0.1:{cdn}", IMGEDGE_API_ADDR=f"127.0.0.1:{api}",
               IMGEDGE_SECURITY_KEY="conformance-key", IMGEDGE_DERIVATIVE_SIZES="")
    log = open(os.path.join(data, "server.log"), "w")
    server = subprocess.Popen([args.binary, "serve", "--data-dir", data], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api}/readyz", timeout=1)
                break
            except Exception:
                if server.poll() is not None:
                    sys.exit(f"imgedge did not start: see {log.name}")
                time.sleep(0.1)
        tally = defaultdict(lambda: [0, 0])
        for case in recorded:
            if args.group and case["group"] not in args.group:
                continue
            path = case["path"] if case["path"].startswith("/") else "/" + case["path"]
            path = urllib.parse.quote(path, safe="".join(chr(c) for c in range(33, 127)))
            conn = http.client.HTTPConnection("127.0.0.1", cdn, timeout=30)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                status, body = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:
                status, body = 0, str(e).encode()
            finally:
                conn.close()
            why = []
            if status != case["status"]:
                why.append(f"status {status} vs {case['status']}")
            elif status == 200 and case.get("image") and Image is not None:
                try:
                    img = Image.open(io.BytesIO(body))
                    size = img.size
                    want = (case["image"]["width"], case["image"]["height"])
                    if size != want:
                        why.append(f"size {size[0]}x{size[1]} vs {want[0]}x{want[1]}")
                    else:
                        d = distance(fingerprint(body), case["image"]["fingerprint"])
                        if d > args.tolerance:
                            why.append(f"pixels differ by {d:.1f}")
                except Exception as e:  # not an image
                    why.append(f"not an image: {e}")
            t = tally[case["group"]]
            t[1] += 1
            if not why:
                t[0] += 1
            elif args.verbose:
                print(f"{case['id']:40} {case['path']}: {'; '.join(why)}")
        total = [sum(t[0] for t in tally.values()), sum(t[1] for t in tally.values())]
        print(f"{'group':12} agree/cases")
        for group in sorted(tally):
            print(f"{group:12} {tally[group][0]}/{tally[group][1]}")
        print(f"{'all':12} {total[0]}/{total[1]}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
