#!/usr/bin/env python3
"""Record Thumbor 7.8.0's answers to every case in cases.py into recordings.json.

    conformance/setup.sh && conformance/.venv/bin/python conformance/record.py

Starts the venv's `thumbor` on 127.0.0.1 (a free port) with conformance/thumbor.conf,
requests each case over plain HTTP/1.1 to 127.0.0.1 only, describes each response,
writes recordings.json (deterministic: case order, sorted keys, no timestamps) and
stops Thumbor. Thumbor's log goes to conformance/thumbor.log.

Options:
    --only SUBSTR   record only cases whose id contains SUBSTR (prints, does not write)
    --out PATH      write somewhere other than conformance/recordings.json
"""

import argparse
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases as cases_mod  # noqa: E402

from PIL import Image, ImageCms  # noqa: E402

Image.MAX_IMAGE_PIXELS = None  # Thumbor's answers may be huge (err-huge)
BIG = 20_000_000  # above this many pixels, fingerprint a JPEG from a DCT-scaled draft

HOST = "127.0.0.1"  # never anything else
TIMEOUT = 180
BODY_SNIPPET = 300


# ------------------------------------------------------------------ Thumbor process
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Thumbor:
    def __init__(self, log_path):
        self.log_path = log_path
        self.proc = None
        self.port = None
        self.log_fh = None

    def start(self):
        exe = os.path.join(HERE, ".venv", "bin", "thumbor")
        if not os.path.exists(exe):
            sys.exit(f"{exe} not found: run conformance/setup.sh first")
        self.port = free_port()
        env = dict(os.environ, CONFORMANCE_DIR=HERE, PYTHONUNBUFFERED="1")
        self.log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [exe, "-c", os.path.join(HERE, "thumbor.conf"), "-i", HOST, "-p", str(self.port),
             "-l", "warning"],
            cwd=HERE, env=env, stdout=self.log_fh, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"thumbor exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _, _ = self.get("/healthcheck", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"thumbor did not become healthy; see {self.log_path}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log_fh:
            self.log_fh.close()
            self.log_fh = None

    def get(self, path, headers=None, timeout=TIMEOUT):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()


# ------------------------------------------------------------------ description
def rgba_of(im):
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")
    elif im.mode == "F":
        im = im.convert("L")
    return im.convert("RGBA")


def fingerprint(im, size=8):
    small = rgba_of(im).resize((size, size), Image.Resampling.BOX)
    flat = small.get_flattened_data() if hasattr(small, "get_flattened_data") else small.getdata()
    return [list(p) for p in flat]


def describe_image(body):
    im = Image.open(io.BytesIO(body))
    info = {
        "format": im.format,
        "mode": im.mode,
        "width": im.size[0],
        "height": im.size[1],
        "n_frames": getattr(im, "n_frames", 1),
        "has_alpha": "A" in im.mode or "transparency" in im.info,
    }
    icc = im.info.get("icc_profile")
    info["icc"] = None
    if icc:
        try:
            desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
        except Exception:  # noqa: BLE001
            desc = "unparsable"
        info["icc"] = desc
    exif = im.getexif()
    info["exif_tags"] = len(exif)
    info["exif_orientation"] = exif.get(0x0112)
    if im.format == "JPEG":
        info["progressive"] = bool(im.info.get("progressive") or im.info.get("progression"))
    if im.format == "JPEG" and im.size[0] * im.size[1] > BIG:
        im.draft("RGB", (im.size[0] // 8, im.size[1] // 8))
        info["fingerprint_from_draft"] = list(im.size)
    if info["n_frames"] > 1:
        info["loop"] = im.info.get("loop")
        frames = []
        for i in range(info["n_frames"]):
            im.seek(i)
            im.load()
            fr = {"duration": im.info.get("duration"), "width": im.size[0], "height": im.size[1]}
            extent = getattr(im, "dispose_extent", None)
            if extent is not None:
                fr["extent"] = list(extent)
            fr["mean"] = fingerprint(im, 1)[0]
            frames.append(fr)
        info["frames"] = frames
        im.seek(0)
        im.load()
    info["fingerprint"] = fingerprint(im)
    return info


LOG_NOISE = re.compile(r"^[A-Z]+ tornado\.access ")  # access lines carry timings
HEX_ADDR = re.compile(r"0x[0-9a-f]{6,}")
LOG_KEEP = re.compile(r"^(CRITICAL|ERROR|WARNING) |^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def clean_log(text):
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line or LOG_NOISE.match(line) or not LOG_KEEP.match(line):
            continue
        line = HEX_ADDR.sub("0x?", line.replace(HERE, "<conformance>"))
        out.append(line[:300])
    return out


def record_case(th, case):
    rec = {"id": case["id"], "group": case["group"], "path": case["path"]}
    if case.get("headers"):
        rec["headers"] = case["headers"]
    if case.get("note"):
        rec["note"] = case["note"]
    log_start = os.path.getsize(th.log_path)
    try:
        status, headers, body = th.get(case["path"], case.get("headers"))
    except (OSError, http.client.HTTPException) as e:
        rec.update(status=None, error=f"{type(e).__name__}: {e}")
        if not th.alive():
            rec["error"] += " (thumbor died; restarted)"
            th.stop()
            th.start()
        return rec
    # A cheap round trip through Thumbor's event loop so that anything it logs
    # for this request has been written before we read the log.
    try:
        th.get("/healthcheck", timeout=10)
    except OSError:
        pass
    with open(th.log_path, "rb") as fh:
        fh.seek(log_start)
        log = clean_log(fh.read().decode("utf-8", "replace"))

    ctype = headers.get("content-type")
    rec.update(status=status, content_type=ctype, bytes=len(body))
    if headers.get("cache-control"):
        rec["cache_control"] = headers["cache-control"]
    if headers.get("vary"):
        rec["vary"] = headers["vary"]
    if status == 200 and ctype and ctype.startswith("application/json"):
        try:
            rec["json"] = json.loads(body)
        except ValueError:
            rec["body"] = body[:BODY_SNIPPET].decode("utf-8", "replace")
    elif status == 200 and body:
        try:
            rec["image"] = describe_image(body)
        except Exception as e:  # noqa: BLE001 - not an image: keep a snippet
            rec["image_error"] = HEX_ADDR.sub("0x?", f"{type(e).__name__}: {e}")
            rec["body"] = body[:BODY_SNIPPET].decode("utf-8", "replace")
    elif body:
        rec["body"] = body[:BODY_SNIPPET].decode("utf-8", "replace")
    if log:
        rec["log"] = log
    return rec


# ------------------------------------------------------------------ JSON output
def dump(obj, indent=0):
    """Pretty JSON where lists of scalars sit on one line and a list of
    [r,g,b,a] lists is printed 8 per line (one fingerprint row per line)."""
    pad = "  " * indent
    pad1 = "  " * (indent + 1)

    def scalar(x):
        return not isinstance(x, (dict, list))

    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {dump(v, indent + 1)}" for k, v in sorted(obj.items())]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(scalar(x) for x in obj):
            return json.dumps(obj, ensure_ascii=False)
        if all(isinstance(x, list) and all(scalar(y) for y in x) for x in obj):
            rows = [", ".join(json.dumps(x) for x in obj[i:i + 8]) for i in range(0, len(obj), 8)]
            return "[\n" + ",\n".join(pad1 + r for r in rows) + "\n" + pad + "]"
        return "[\n" + ",\n".join(pad1 + dump(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def versions():
    import importlib.metadata as md

    out = {}
    for pkg in ["thumbor", "Pillow", "opencv-python-headless", "libthumbor", "tornado"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--out", default=os.path.join(HERE, "recordings.json"))
    args = ap.parse_args()

    selected = [c for c in cases_mod.CASES if not args.only or args.only in c["id"]]
    log_path = os.path.join(HERE, "thumbor.log")
    open(log_path, "wb").close()
    th = Thumbor(log_path)
    th.start()
    records = []
    t0 = time.time()
    try:
        for i, case in enumerate(selected, 1):
            rec = record_case(th, case)
            records.append(rec)
            img = rec.get("image") or {}
            print(f"[{i:3d}/{len(selected)}] {rec['status']} {case['id']:40s} "
                  f"{img.get('format', '') or ''} {img.get('width', '')}x{img.get('height', '')}",
                  flush=True)
    finally:
        th.stop()

    if args.only:
        print(dump(records))
        return
    doc = {
        "about": "Thumbor 7.8.0 answers to conformance/cases.py; see conformance/README.md",
        "versions": versions(),
        "config": {
            "SECURITY_KEY": cases_mod.SECURITY_KEY, "QUALITY": 80, "AUTO_WEBP": False,
            "RESPECT_ORIENTATION": True, "STORAGE": "no_storage", "RESULT_STORAGE": None,
            "DETECTORS": ["face_detector", "feature_detector"], "LOADER": "file_loader(images/)",
        },
        "fingerprint": "image (first frame) converted to RGBA, resized to 8x8 with Pillow BOX; row-major [r,g,b,a]",
        "cases": records,
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(dump(doc) + "\n")

    st = Counter(str(r["status"]) for r in records)
    print(f"\n{len(records)} cases in {time.time() - t0:.0f}s -> {args.out}")
    print("statuses:", dict(sorted(st.items())))
    groups = sorted({r["group"] for r in records})
    codes = sorted(st)
    print("\n| group | cases | " + " | ".join(codes) + " |")
    print("|---|---:|" + "---:|" * len(codes))
    for g in groups:
        c = Counter(str(r["status"]) for r in records if r["group"] == g)
        print(f"| {g} | {sum(c.values())} | " + " | ".join(str(c.get(k, 0)) for k in codes) + " |")
    print(f"| **total** | {len(records)} | " + " | ".join(str(st[k]) for k in codes) + " |")


if __name__ == "__main__":
    main()
