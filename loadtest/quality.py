#!/usr/bin/env python3
"""Quality benchmark: bytes at equal perceived quality, imgedge vs sharp vs Thumbor.

    python3 loadtest/quality.py                 # full sweep (about 10 minutes on 2 cores)
    python3 loadtest/quality.py --quick         # 3 photos per target, quality step 10
    python3 loadtest/quality.py --targets W3 --no-thumbor --qualities 40:95:1   # every quality
    python3 loadtest/quality.py --targets W3 --no-thumbor --imgedge-env IMGEDGE_WEBP_SHARP_YUV=true

For the W1 and W2 JPEG targets and the W3 WebP target of loadtest/compare.py, every server
(imgedge from originals, imgedge from its reduced copies, sharp with its defaults, sharp
with `mozjpeg: true`, Thumbor) renders each photo
of the target over a quality sweep, plus a lossless PNG of the same URL. Each lossy output
is scored with SSIMULACRA2 (`imgedge score`, the fast-ssim2 crate) two ways:

  own  - against the same server's lossless render: what the encoding lost;
  ref  - against a reference resize of the original (Pillow Lanczos to the output's size):
         what resampling and encoding lost together.

and, for the default-quality runs, with butteraugli (`butteraugli_main` from Debian's
libjxl-devtools; its 3-norm) as a second opinion.

It reports, per target:
  1. the bytes each server needs to reach the anchor's (sharp's) quality(80) score, per photo
     interpolated on the server's own sweep, summed, as a ratio to sharp's q80 bytes;
  2. the default-quality runs (URLs without quality(); imgedge also with
     default_quality=auto): total bytes, worst and mean score;
  3. reduced copies: the same URL rendered from the copy and from the original, scored
     against the same reference resize, and their bytes.

Results: a markdown report on stdout and loadtest/results/quality-<stamp>.json.
Needs: target/release/imgedge (cargo build --release), loadtest/setup-peers.sh (Thumbor
venv with Pillow, sharp), butteraugli_main (apt install libjxl-devtools; skipped if absent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (servers, ports, corpus: shared with the load comparison)
from compare import BENCH, HERE, LARGE, MEDIUM, PEERS, REPO, Fleet, StartError  # noqa: E402

TARGETS = {
    # name: (options before filters, extra filters, files, output extension)
    "W1": ("fit-in/300x200", "", LARGE, "jpg"),
    "W2": ("fit-in/800x0", "", LARGE, "jpg"),
    "W3": ("fit-in/400x300", ":format(webp)", MEDIUM, "webp"),
    # Not in the default run: AVIF output (sharp's libheif/aom against imgedge's rav1e);
    # `--targets AVIF --no-thumbor` (Thumbor 7.8 has no AVIF encoder).
    "AVIF": ("fit-in/400x300", ":format(avif)", MEDIUM, "avif"),
}
ANCHOR = "sharp"
ANCHOR_QUALITY = 80
PYTHON = PEERS / "thumbor-venv/bin/python"  # has Pillow

# A reference resize of the original to (w, h): EXIF-upright, Lanczos on sRGB values (what
# most resizers do), saved as PNG.
REFERENCE_PY = r"""
import sys
from PIL import Image, ImageOps
src, w, h, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
im.resize((w, h), Image.LANCZOS, reducing_gap=3.0).save(out)
"""
TO_PNG_PY = r"""
import sys
from PIL import Image
for path in sys.argv[1:]:
    Image.open(path).convert("RGB").save(path + ".png")
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


compare.log = log  # the report alone goes to stdout


def get(server, path: str) -> bytes:
    status, _, body = compare.http_get(server.url(path), timeout=120)
    if status != 200:
        raise RuntimeError(f"{server.name} {path} -> {status}: {body[:200]!r}")
    return body


def dims(data: bytes) -> tuple[int, int]:
    d = compare.image_dims(data)
    at = data.find(b"ispe") if not d and data[4:8] == b"ftyp" else -1
    if at >= 0 and len(data) >= at + 16:
        # AVIF: the primary image's ispe property (version/flags, width, height).
        d = (int.from_bytes(data[at + 8:at + 12], "big"), int.from_bytes(data[at + 12:at + 16], "big"))
    if not d:
        raise RuntimeError("cannot read output dimensions")
    return d


def score(binary: Path, reference: Path, outputs: list[Path]) -> list[float]:
    r = subprocess.run([str(binary), "score", str(reference), *map(str, outputs)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"imgedge score: {r.stderr.strip()[:500]}")
    return [float(x) for x in r.stdout.split()]


def butteraugli(reference: Path, output: Path) -> float | None:
    exe = shutil.which("butteraugli_main")
    if not exe:
        return None
    if output.suffix == ".webp":
        subprocess.run([str(PYTHON), "-c", TO_PNG_PY, str(output)], check=True)
        output = Path(str(output) + ".png")
    r = subprocess.run([exe, str(reference), str(output), "--pnorm", "3"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        if "norm" in line:
            return float(line.split(":")[-1])
    return None


class Renders:
    """Fetches and scores the renders of one server; files live under work/<server>/."""

    def __init__(self, binary: Path, work: Path, server, references: dict):
        self.binary, self.server, self.references = binary, server, references
        self.dir = work / server.name.replace("+", "-")
        self.dir.mkdir(parents=True, exist_ok=True)

    def reference(self, f: str, size: tuple[int, int]) -> Path:
        key = (f, size)
        if key not in self.references:
            out = self.dir.parent / "reference" / f"{Path(f).stem}-{size[0]}x{size[1]}.png"
            out.parent.mkdir(exist_ok=True)
            subprocess.run([str(PYTHON), "-c", REFERENCE_PY, str(BENCH / f), str(size[0]), str(size[1]),
                            str(out)], check=True)
            self.references[key] = out
        return self.references[key]

    def sweep(self, target: str, f: str, qualities: list[str]) -> dict:
        """Lossless render plus one render per quality ("" = the URL gives none)."""
        opts, extra, _, ext = TARGETS[target]
        lossless = self.dir / f"{target}-{Path(f).stem}-lossless.png"
        lossless.write_bytes(get(self.server, f"/{opts}/filters:format(png)/{f}"))
        rows, paths = [], []
        for q in qualities:
            filters = f"quality({q}){extra}" if q else extra.lstrip(":")
            path = f"/{opts}/filters:{filters}/{f}" if filters else f"/{opts}/{f}"
            body = get(self.server, path)
            out = self.dir / f"{target}-{Path(f).stem}-q{q or 'default'}.{ext}"
            out.write_bytes(body)
            rows.append({"quality": q or "default", "bytes": len(body), "dims": dims(body), "path": path})
            paths.append(out)
        size = rows[0]["dims"]
        own = score(self.binary, lossless, paths)
        ref = score(self.binary, self.reference(f, size), paths)
        for row, o, r, p in zip(rows, own, ref, paths):
            row.update(own=o, ref=r, file=str(p))
        return {"lossless_dims": dims(lossless.read_bytes()), "rows": rows}


def sharp_mozjpeg(fleet: Fleet):
    """sharp with `mozjpeg: true` (sharp's best JPEG setting; its default is off)."""
    server = compare.sharp_server(fleet, "sharp+mozjpeg")
    server.env["SHARP_MOZJPEG"] = "1"
    return server


def bytes_at(rows: list[dict], target: float, metric: str) -> float | None:
    """Bytes at `target` score, linearly interpolated on the sweep (ordered by quality); the
    first crossing. None when the sweep never reaches it."""
    pts = sorted((int(r["quality"]), r["bytes"], r[metric]) for r in rows)
    if target <= pts[0][2]:
        return float(pts[0][1])
    for (_, b0, s0), (_, b1, s1) in zip(pts, pts[1:]):
        if s0 <= target <= s1 and s1 > s0:
            return b0 + (b1 - b0) * (target - s0) / (s1 - s0)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 photos per target, quality step 10")
    ap.add_argument("--targets", default="W1,W2,W3")
    ap.add_argument("--imgedge", type=Path, default=REPO / "target/release/imgedge")
    ap.add_argument("--no-thumbor", action="store_true")
    ap.add_argument("--imgedge-env", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every imgedge server (repeatable), e.g. IMGEDGE_WEBP_SHARP_YUV=true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (renders)")
    ap.add_argument("--qualities", default="40:95:5", metavar="LO:HI:STEP",
                    help="the sweep (40:95:5); 70:85:1 gives auto-model.py a finer curve")
    args = ap.parse_args()
    binary = args.imgedge.resolve()
    if not binary.exists():
        print(f"{binary} missing: run cargo build --release", file=sys.stderr)
        return 2
    try:
        lo, hi, step = (int(x) for x in args.qualities.split(":"))
        if not (1 <= lo <= hi <= 100 and step >= 1):
            raise ValueError
    except ValueError:
        ap.error("--qualities wants LO:HI:STEP, 1 <= LO <= HI <= 100, STEP >= 1")
    if args.quick:
        step = 10
    qualities = [str(q) for q in range(lo, hi + 1, step)]
    if str(ANCHOR_QUALITY) not in qualities:
        qualities.append(str(ANCHOR_QUALITY))
    compare.COPIES = 1
    work = Path(tempfile.mkdtemp(prefix="imgedge-quality-"))
    fleet = Fleet(work)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "qualities": qualities, "targets": {}}
    try:
        extra = dict(pair.split("=", 1) for pair in args.imgedge_env)
        report["imgedge_env"] = extra
        orig = fleet.start(compare.imgedge_server(
            fleet, binary, "imgedge", {"IMGEDGE_DERIVATIVE_SIZES": "", **extra}))
        auto = fleet.start(compare.imgedge_server(
            fleet, binary, "imgedge+auto",
            {"IMGEDGE_DERIVATIVE_SIZES": "", "IMGEDGE_DEFAULT_QUALITY": "auto", **extra}))
        copies = fleet.start(compare.imgedge_server(fleet, binary, "imgedge+copies", extra))
        ok, msg = compare.wait_for_derivatives(copies, 300)
        log(f"imgedge+copies: {msg}")
        peers = []
        factories = [lambda: compare.sharp_server(fleet, "sharp"), lambda: sharp_mozjpeg(fleet)]
        if not args.no_thumbor:
            factories.append(lambda: compare.thumbor_server(fleet, "thumbor", False))
        for factory in factories:
            try:
                peers.append(fleet.start(factory()))
            except (StartError, OSError) as e:
                log(f"peer not started: {e}")
        if not any(p.name == ANCHOR for p in peers):
            print("sharp did not start (loadtest/setup-peers.sh)", file=sys.stderr)
            return 2
        references: dict = {}
        swept = [orig, copies, *peers]
        for tname in args.targets.split(","):
            files = TARGETS[tname][2][: 3 if args.quick else None]
            t = report["targets"][tname] = {"files": files, "servers": {}}
            for server in swept:
                renders = Renders(binary, work, server, references)
                log(f"{tname} {server.name}: sweeping {len(files)} photos x {len(qualities) + 1}")
                t["servers"][server.name] = {f: renders.sweep(tname, f, qualities + [""]) for f in files}
            renders = Renders(binary, work, auto, references)
            t["servers"][auto.name] = {f: renders.sweep(tname, f, [""]) for f in files}
            for name, per_file in t["servers"].items():
                for f, res in per_file.items():
                    row = next(r for r in res["rows"] if r["quality"] == "default")
                    row["butteraugli"] = butteraugli(references[(f, tuple(row["dims"]))], Path(row["file"]))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = HERE / "results" / f"quality-{stamp}.json"
        out.write_text(json.dumps(report, indent=1))
        print(render_report(report))
        print(f"\n(raw: {out.relative_to(REPO)})")
        return 0
    finally:
        fleet.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"renders kept in {work}")


def fmt(x, digits=2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_report(report: dict) -> str:
    lines = [f"## Quality benchmark ({report['started']}; SSIMULACRA2 via `imgedge score`, "
             "butteraugli 3-norm via `butteraugli_main`)", ""]
    lines += ["### Bytes to reach sharp's quality(80) score (sum over the photos; ratio to sharp's q80 bytes)", "",
              "| target | server | own: bytes | own: vs sharp | ref: bytes | ref: vs sharp | photos reached |",
              "|---|---|---|---|---|---|---|"]
    for tname, t in report["targets"].items():
        anchor = t["servers"][ANCHOR]
        q80 = {f: next(r for r in res["rows"] if r["quality"] == str(ANCHOR_QUALITY)) for f, res in anchor.items()}
        anchor_bytes = sum(r["bytes"] for r in q80.values())
        for name, per_file in t["servers"].items():
            if name == "imgedge+auto":
                continue
            cells = []
            reached = 0
            for metric in ("own", "ref"):
                total, ok = 0.0, 0
                for f, res in per_file.items():
                    sweep = [r for r in res["rows"] if r["quality"] != "default"]
                    b = bytes_at(sweep, q80[f][metric], metric)
                    if b is not None:
                        total += b
                        ok += 1
                cells += [f"{total:,.0f}" if ok == len(per_file) else "-",
                          fmt(total / anchor_bytes, 3) + "x" if ok == len(per_file) else "-"]
                reached = ok if metric == "own" else reached
            lines.append(f"| {tname} | {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                         f"{reached}/{len(per_file)} |")
    lines += ["", "### Default quality (URLs without quality(); imgedge+auto: default_quality=auto)", "",
              "| target | server | total bytes | vs sharp | own: worst | own: mean | ref: worst | ref: mean "
              "| butteraugli worst | butteraugli mean |", "|---|---|---|---|---|---|---|---|---|---|"]
    for tname, t in report["targets"].items():
        base = None
        for name in [ANCHOR] + [n for n in t["servers"] if n != ANCHOR]:
            rows = [next(r for r in res["rows"] if r["quality"] == "default") for res in t["servers"][name].values()]
            total = sum(r["bytes"] for r in rows)
            base = base or total
            ba = [r["butteraugli"] for r in rows if r.get("butteraugli") is not None]
            own = [r["own"] for r in rows]
            ref = [r["ref"] for r in rows]
            lines.append(
                f"| {tname} | {name} | {total:,} | {total / base:.3f}x | {min(own):.1f} | {sum(own) / len(own):.1f} "
                f"| {min(ref):.1f} | {sum(ref) / len(ref):.1f} | {fmt(max(ba) if ba else None)} "
                f"| {fmt(sum(ba) / len(ba) if ba else None)} |")
    lines += ["", "### Reduced copies: the default-quality render from the copy vs from the original "
              "(both scored against the same reference resize)", "",
              "| target | photos | bytes copy/original | ref score original (mean) | ref score copy (mean) "
              "| largest drop |", "|---|---|---|---|---|---|"]
    for tname, t in report["targets"].items():
        o, c = t["servers"]["imgedge"], t["servers"]["imgedge+copies"]
        pairs = []
        for f in o:
            ro = next(r for r in o[f]["rows"] if r["quality"] == "default")
            rc = next(r for r in c[f]["rows"] if r["quality"] == "default")
            pairs.append((ro, rc))
        bo = sum(p[0]["bytes"] for p in pairs)
        bc = sum(p[1]["bytes"] for p in pairs)
        so = sum(p[0]["ref"] for p in pairs) / len(pairs)
        sc = sum(p[1]["ref"] for p in pairs) / len(pairs)
        drop = max(p[0]["ref"] - p[1]["ref"] for p in pairs)
        lines.append(f"| {tname} | {len(pairs)} | {bc / bo:.3f}x | {so:.2f} | {sc:.2f} | {drop:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
