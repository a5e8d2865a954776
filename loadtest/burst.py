"""Hostile burst: peak memory of imgedge on its embedded defaults under 32 clients asking for
the worst inputs we can make, while control requests keep being answered (issue 18).

    python3 loadtest/burst.py                       # build inputs, 32 clients for 30 s
    python3 loadtest/burst.py --clients 32 --duration 60 --imgedge target/release/imgedge

The inputs are written once into loadtest/.hostile/ (not committed) by this script re-run
under the Thumbor venv's Python (Pillow; `loadtest/setup-peers.sh` installs it):

| file | what it is |
|---|---|
| progressive_20mp.jpg | kleiber.jpg (20.4 MP) re-encoded progressive 4:2:0 q92 |
| bomb_100mp.jpg | 10000x10000 progressive JPEG, one colour (a few hundred KB; its decoder keeps every coefficient: 300 MB) |
| bomb_100mp.png | 10000x10000 RGB PNG of one colour (300 KB; 300 MB of pixels) |
| bomb_100mp_truncated.png | 10000x10000 RGBA PNG header, one row of data |
| bomb_100mp.webp | 10000x10000 lossless WebP, one colour |
| gif_4000_2000frames.gif | 4000x4000 screen, 2000 frames of 1x1 (46 KB) |
| apng_4000_2000frames.png | the same as APNG |
| iccp_bomb.png | 64x64 PNG whose iCCP profile inflates to 256 MB |
| animated_4000x4000x6.webp | animated WebP, 6 frames of 4000x4000 (96 MP in all, under the 100 MP limit) |
| animated_2000x2000x25.gif | animated GIF, 25 full frames of 2000x2000 |

Each file is imported under `--copies` prefixes (`h00/` ...) and every request is a new URL
(the box grows by a pixel), so neither the shared decode nor the variant cache absorbs the
burst. The server runs with the embedded defaults (filesystem store, SQLite, default limits,
derivatives on) and `RUST_LOG=warn`.

While the burst runs, a control client asks every 0.25 s, each on a new connection, for the
API's `/healthz` and for a small image already in the variant cache, and records status and
latency. Memory: VmRSS sampled every 50 ms and the kernel's own peak (VmHWM) at the end.

Standard library only (Python 3.11) for the burst; Pillow (Thumbor venv) for the inputs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HOSTILE = HERE / ".hostile"
BENCH = Path(os.environ.get("BENCH_IMAGES", "/work/shared/bench-images"))
PILLOW_PYTHON = HERE / ".peers/thumbor-venv/bin/python"
FILES = [
    "progressive_20mp.jpg", "bomb_100mp.jpg", "bomb_100mp.png", "bomb_100mp_truncated.png",
    "bomb_100mp.webp", "gif_4000_2000frames.gif", "apng_4000_2000frames.png", "iccp_bomb.png",
    "animated_4000x4000x6.webp", "animated_2000x2000x25.gif",
]
CONTROL_IMAGE = "swirlaxy.png"


# --------------------------------------------------------------------------------------------
# Inputs


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_zeros(width: int, height: int, bpp: int, rows: int | None = None) -> bytes:
    """zlib stream of `rows` (default all) filter-0 rows of zero bytes."""
    comp = zlib.compressobj(9)
    row = bytes(1 + width * bpp)
    out = [comp.compress(row) for _ in range(height if rows is None else rows)]
    out.append(comp.flush())
    return b"".join(out)


def png(width: int, height: int, colour_type: int, chunks: list[bytes]) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(chunks) + png_chunk(b"IEND", b"")


def gif_many_frames(side: int, frames: int) -> bytes:
    out = [b"GIF89a", struct.pack("<HHBBB", side, side, 0xF0, 0, 0), b"\x00\x00\x00\xff\xff\xff"]
    out.append(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")
    for i in range(frames):
        x, y = (i * 37) % side, (i * 91) % side
        out.append(b"\x21\xf9\x04\x04\x02\x00\x00\x00")  # GCE: no dispose, 20 ms
        out.append(b"\x2c" + struct.pack("<HHHHB", x, y, 1, 1, 0))
        # LZW, min code size 2: clear (4), pixel 1, end (5) in 3-bit codes.
        out.append(b"\x02\x02\x4c\x01\x00")
    out.append(b"\x3b")
    return b"".join(out)


def apng_many_frames(side: int, frames: int) -> bytes:
    chunks = [png_chunk(b"acTL", struct.pack(">II", frames, 0))]
    seq = 0
    one_pixel = zlib.compress(b"\x00\xff\x00\x00\xff")
    for i in range(frames):
        x, y = (i * 37) % side, (i * 91) % side
        w = h = side if i == 0 else 1
        chunks.append(png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0 if i == 0 else x,
                                                     0 if i == 0 else y, 2, 100, 0, 0)))
        seq += 1
        if i == 0:
            chunks.append(png_chunk(b"IDAT", png_zeros(side, side, 4)))
        else:
            chunks.append(png_chunk(b"fdAT", struct.pack(">I", seq) + one_pixel))
            seq += 1
    return png(side, side, 6, chunks)


def write_inputs_with_pillow(out: Path) -> None:
    """Runs under the Thumbor venv's Python: the files that need a real encoder."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(BENCH / "kleiber.jpg") as im:
        im.convert("RGB").save(out / "progressive_20mp.jpg", quality=92, progressive=True)
    big = Image.new("RGB", (10000, 10000), (40, 90, 160))
    big.save(out / "bomb_100mp.jpg", quality=90, progressive=True)
    big.save(out / "bomb_100mp.webp", lossless=True)
    del big
    frames = [Image.new("RGB", (4000, 4000), (40 * i, 200 - 30 * i, 90)) for i in range(6)]
    frames[0].save(out / "animated_4000x4000x6.webp", save_all=True, append_images=frames[1:],
                   duration=100, loop=0, lossless=False, quality=50)
    del frames
    frames = [Image.new("P", (2000, 2000), i) for i in range(25)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in ((i * 9) % 256, (i * 5) % 256, 128)])
    frames[0].save(out / "animated_2000x2000x25.gif", save_all=True, append_images=frames[1:],
                   duration=80, loop=0, optimize=False, disposal=1)


def write_inputs(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if all((out / f).exists() for f in FILES):
        return
    print(f"writing hostile inputs to {out}", flush=True)
    (out / "bomb_100mp.png").write_bytes(png(10000, 10000, 2, [png_chunk(b"IDAT", png_zeros(10000, 10000, 3))]))
    (out / "bomb_100mp_truncated.png").write_bytes(
        png(10000, 10000, 6, [png_chunk(b"IDAT", png_zeros(10000, 10000, 4, rows=1))]))
    (out / "gif_4000_2000frames.gif").write_bytes(gif_many_frames(4000, 2000))
    (out / "apng_4000_2000frames.png").write_bytes(apng_many_frames(4000, 2000))
    profile = zlib.compress(bytes(256 << 20), 9)
    (out / "iccp_bomb.png").write_bytes(png(64, 64, 2, [
        png_chunk(b"iCCP", b"bomb\x00\x00" + profile),
        png_chunk(b"IDAT", png_zeros(64, 64, 3)),
    ]))
    if not PILLOW_PYTHON.exists():
        sys.exit(f"{PILLOW_PYTHON} not found: run loadtest/setup-peers.sh (Pillow makes the JPEG/WebP/GIF inputs)")
    subprocess.run([str(PILLOW_PYTHON), __file__, "--pillow-inputs", str(out)], check=True)


# --------------------------------------------------------------------------------------------
# The burst


def vm_kb(pid: int, key: str) -> int:
    from compare import _status_kb
    return _status_kb(pid, key)


async def http_get_once(port: int, path: str, timeout: float) -> tuple[int, float]:
    """One GET on a new connection: (status or -1 on error/timeout, seconds)."""
    from compare import get, open_conn
    t0 = time.monotonic()
    try:
        conn = await asyncio.wait_for(open_conn(port), timeout)
        try:
            status, _, _ = await asyncio.wait_for(get(conn, port, path), timeout)
        finally:
            conn.writer.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        status = -1
    return status, time.monotonic() - t0


async def burst(cdn: int, api: int, pid: int, clients: int, duration: float, copies: int,
                files: list[str]) -> dict:
    from compare import Conn, get, open_conn, pct
    per_file: dict[str, dict[str, int]] = {f: {} for f in files}
    latencies: list[float] = []
    rss: list[tuple[float, int]] = []
    control: dict[str, list] = {"healthz": [], "image": []}
    counter = [0]
    t_start = time.monotonic()
    deadline = t_start + duration
    stop = asyncio.Event()

    async def client(n: int) -> None:
        conn: Conn | None = None
        while time.monotonic() < deadline:
            i = counter[0]
            counter[0] += 1
            name = files[(i + n) % len(files)]
            step = i // len(files)
            path = f"/fit-in/{200 + step % 400}x{200 + step % 400}/h{i % copies:02d}/{name}"
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = await open_conn(cdn)
                status, headers, _ = await asyncio.wait_for(get(conn, cdn, path), 60)
                if headers.get("connection", "").lower() == "close":
                    conn.writer.close()
                    conn = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                status = -1
                if conn is not None:
                    conn.writer.close()
                conn = None
            latencies.append(time.monotonic() - t0)
            counts = per_file[name]
            counts[str(status)] = counts.get(str(status), 0) + 1
        if conn is not None:
            conn.writer.close()

    async def controls() -> None:
        while not stop.is_set():
            for kind, port, path in (("healthz", api, "/healthz"),
                                     ("image", cdn, f"/fit-in/120x120/{CONTROL_IMAGE}")):
                status, secs = await http_get_once(port, path, 10)
                control[kind].append((status, secs))
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def sampler() -> None:
        while not stop.is_set():
            rss.append((time.monotonic() - t_start, vm_kb(pid, "VmRSS:")))
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    background = [asyncio.create_task(controls()), asyncio.create_task(sampler())]
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - t_start
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*background)

    def summary(rows: list) -> dict:
        statuses: dict[str, int] = {}
        for s, _ in rows:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
        secs = [t for _, t in rows]
        return {"requests": len(rows), "statuses": statuses,
                "p50_ms": round(pct(secs, 50) * 1e3, 1), "max_ms": round(max(secs, default=0) * 1e3, 1)}

    return {
        "clients": clients, "duration_s": round(elapsed, 1), "requests": len(latencies),
        "p50_ms": round(pct(latencies, 50) * 1e3, 1), "p99_ms": round(pct(latencies, 99) * 1e3, 1),
        "max_ms": round(max(latencies, default=0) * 1e3, 1),
        "per_file": per_file,
        "control": {k: summary(v) for k, v in control.items()},
        "peak_sampled_rss_mib": round(max((r for _, r in rss), default=0) / 1024, 1),
        "rss_samples": rss[:: max(1, len(rss) // 200)],
    }


def main() -> int:
    from compare import StartError, free_port, http_get

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--copies", type=int, default=4, help="keys per hostile file (h00/..)")
    ap.add_argument("--files", default="", help="comma-separated subset of the inputs to request (default: all)")
    ap.add_argument("--imgedge", type=Path, default=HERE.parent / "target/release/imgedge")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra setting for the server (repeatable), e.g. IMGEDGE_MEMORY_BUDGET_BYTES=...")
    ap.add_argument("--pillow-inputs", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pillow_inputs:
        write_inputs_with_pillow(args.pillow_inputs)
        return 0
    binary = args.imgedge.resolve()
    if not binary.exists():
        ap.error(f"no imgedge binary at {binary}")
    write_inputs(HOSTILE)

    work = Path(tempfile.mkdtemp(prefix="imgedge-burst-"))
    proc = None
    try:
        data = work / "data"
        extra = dict(kv.split("=", 1) for kv in args.env)
        env = {**os.environ, "RUST_LOG": "warn", **extra}
        for c in range(args.copies):
            subprocess.run([str(binary), "import", str(HOSTILE), "--visibility", "public", "--data-dir",
                            str(data), "--prefix", f"h{c:02d}/"], check=True, env=env, capture_output=True)
        control_dir = work / "control"
        control_dir.mkdir()
        shutil.copy(BENCH / CONTROL_IMAGE, control_dir / CONTROL_IMAGE)
        subprocess.run([str(binary), "import", str(control_dir), "--visibility", "public", "--data-dir",
                        str(data)], check=True, env=env, capture_output=True)
        cdn, api = free_port(), free_port()
        log = open(work / "server.log", "wb")
        proc = subprocess.Popen([str(binary), "serve", "--data-dir", str(data), "--cdn-addr",
                                 f"127.0.0.1:{cdn}", "--api-addr", f"127.0.0.1:{api}"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            try:
                if http_get(f"http://127.0.0.1:{api}/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise StartError((work / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        # The control image goes into the variant cache before the burst.
        status, _, _ = http_get(f"http://127.0.0.1:{cdn}/fit-in/120x120/{CONTROL_IMAGE}")
        if status != 200:
            raise StartError(f"control image answered {status}")
        idle_kb = vm_kb(proc.pid, "VmRSS:")
        files = [f for f in args.files.split(",") if f] or FILES
        for f in files:
            if f not in FILES:
                ap.error(f"unknown input {f}; one of {', '.join(FILES)}")
        result = asyncio.run(burst(cdn, api, proc.pid, args.clients, args.duration, args.copies, files))
        result["idle_rss_before_mib"] = round(idle_kb / 1024, 1)
        result["peak_rss_mib"] = round(vm_kb(proc.pid, "VmHWM:") / 1024, 1)
        result["server_alive"] = proc.poll() is None
        result["settings"] = extra
        result["binary"] = str(binary)
        samples = result.pop("rss_samples")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = HERE / "results" / f"burst-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({**result, "rss_samples": samples}, indent=1))
        print(json.dumps(result, indent=1))
        print(f"\npeak RSS (VmHWM) {result['peak_rss_mib']} MiB; sampled peak {result['peak_sampled_rss_mib']} MiB; "
              f"control: healthz {result['control']['healthz']['statuses']}, image {result['control']['image']['statuses']}; "
              f"saved {out}")
        ok = result["server_alive"] and all(
            set(v["statuses"]) == {"200"} for v in result["control"].values())
        return 0 if ok else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
