#!/usr/bin/env python3
"""Side-by-side load test: imgedge vs Thumbor vs sharp (workloads W1-W7, issue 5).

    python3 loadtest/compare.py                      # install peers, all workloads, ~13 min
    python3 loadtest/compare.py --quick --overload   # 1 short round per workload + overload
    python3 loadtest/compare.py --workloads W1,W3 --rounds 5 --duration 10 --skip-install
    python3 loadtest/compare.py --workloads W2 --skip-install --imgedge-b /tmp/other/imgedge   # A/B
    python3 loadtest/compare.py --workloads W3 --skip-install --imgedge-b-env IMGEDGE_WEBP_SHARP_YUV=true

It starts imgedge (twice: from the original, and with precomputed derivatives when the binary
supports them), Thumbor and a small sharp server on free loopback ports, drives each workload
with wrk in interleaved rounds (W7, the srcset burst, with an asyncio client), measures the
server's CPU time and memory from /proc, and prints one Markdown table with the ratios of
imgedge to the better peer. Raw results go to loadtest/results/<timestamp>.json.
See loadtest/README.md for what every column means.

Standard library only (Python 3.11). Needs wrk, Node and the peers from setup-peers.sh.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / ".peers"
BENCH = Path(os.environ.get("BENCH_IMAGES", "/work/shared/bench-images"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

LARGE = ["kleiber.jpg", "seeding.jpg", "dragonfly.jpg", "sunset.jpg", "phone_12mp.jpg"]
MEDIUM = ["storm.jpg", "raindrops.jpg", "dune.jpg", "brushes.jpg"]
ALPHA_PNG = ["emerald_logo.png", "swirlaxy.png", "camera_icon.png"]
SHIFT = 100  # cold URLs: the size grows by one pixel per request, over this many steps
# Every original is served under COPIES keys (c00/<file> .. c15/<file>, the same bytes), and cold
# requests rotate through them, so concurrent cold requests never hit the same original: imgedge
# shares one decode between concurrent renders of one source, which with only 3-5 files per
# workload would otherwise turn most "cold" requests into shared decodes. --copies 1 serves the
# bare file names. Set by main().
COPIES = 16


def key(copy: int, f: str) -> str:
    return f"c{copy % COPIES:02d}/{f}" if COPIES > 1 else f


# --------------------------------------------------------------------------------------------
# Workloads


@dataclass
class Workload:
    name: str
    template: str  # Thumbor path without the file; {w} and {h} are the (shifted) sizes
    files: list[str]
    w: int
    h: int
    cold: bool
    connections: int
    burst: tuple[int, ...] = ()  # W7: widths requested together
    describe: str = ""
    imgedge_only: bool = False  # quality(auto): the peers have nothing like it

    def path(self, n: int) -> str:
        """The n-th URL path of the sequence (no prefix), shared by wrk, Python and k6."""
        nf = len(self.files)
        f = key(n // nf if self.cold else 0, self.files[n % nf])
        s = (n // nf) % SHIFT if self.cold else 0
        w = self.w + s if self.w else 0
        h = self.h + s if self.h else 0
        return "/" + self.template.format(w=w, h=h) + f

    def burst_paths(self, n: int) -> list[str]:
        """W7: the paths of burst n (one original, every width shifted by the same pixel)."""
        f = key(n // len(self.files), self.files[n % len(self.files)])
        s = (n // len(self.files)) % SHIFT if self.cold else 0
        return ["/" + self.template.format(w=w + s, h=0) + f for w in self.burst]

    def sample_paths(self) -> list[str]:
        if self.burst:
            return [p for n in range(len(self.files)) for p in self.burst_paths(n)]
        if not self.cold:
            return [self.path(0)]
        return [self.path(n) for n in range(2 * len(self.files))]


WORKLOADS = {
    "W1": Workload("W1", "fit-in/{w}x{h}/filters:quality(80)/", LARGE, 300, 200, True, 8,
                   describe="fit-in 300x200 q80, large JPEGs, cold, 8 connections"),
    "W2": Workload("W2", "fit-in/{w}x0/filters:quality(85)/", LARGE, 800, 0, True, 4,
                   describe="fit-in 800x0 q85, large JPEGs, cold"),
    "W3": Workload("W3", "fit-in/{w}x{h}/filters:quality(80):format(webp)/", MEDIUM, 400, 300, True, 4,
                   describe="fit-in 400x300 -> WebP q80, medium JPEGs, cold"),
    "W4": Workload("W4", "{w}x{h}/smart/", MEDIUM, 80, 80, True, 4,
                   describe="80x80 smart crop, medium JPEGs, cold"),
    "W5": Workload("W5", "fit-in/{w}x{h}/filters:format(webp)/", ALPHA_PNG, 200, 200, True, 4,
                   describe="fit-in 200x200 -> WebP, PNGs with alpha, cold"),
    "W6": Workload("W6", "fit-in/{w}x{h}/filters:quality(80)/", ["phone_12mp.jpg"], 300, 200, False, 4,
                   describe="one URL repeated: result cache hits"),
    "W7": Workload("W7", "fit-in/{w}x0/", LARGE, 0, 0, True, 2, burst=(400, 800, 1200),
                   describe="srcset burst 400/800/1200 wide of one large JPEG, cold, 2 clients x 3"),
}
# The CPU cost of quality(auto): W1-W3 with quality(auto) instead of a fixed quality, run on
# imgedge only (compare its CPU-ms/req with the same run's W1-W3). Not in the default set.
for _base in ("W1", "W2", "W3"):
    _wl = WORKLOADS[_base]
    WORKLOADS[_base + "A"] = Workload(
        _base + "A", re.sub(r"quality\(\d+\)", "quality(auto)", _wl.template), _wl.files, _wl.w,
        _wl.h, _wl.cold, _wl.connections, describe=_wl.describe.replace(" q8", " quality(auto) (was q8")
        .replace(", ", "), ", 1), imgedge_only=True)
# AVIF output (imgedge only: Thumbor 7.8 has no AVIF encoder): W3 as AVIF at a fixed 80, and
# with quality(auto), whose probes are AVIF encodes read back by libaom. Not in the default set.
WORKLOADS["W3AVIF"] = Workload(
    "W3AVIF", "fit-in/{w}x{h}/filters:quality(80):format(avif)/", MEDIUM, 400, 300, True, 4,
    describe="fit-in 400x300 -> AVIF q80, medium JPEGs, cold", imgedge_only=True)
WORKLOADS["W3AVIFA"] = Workload(
    "W3AVIFA", "fit-in/{w}x{h}/filters:quality(auto):format(avif)/", MEDIUM, 400, 300, True, 4,
    describe="fit-in 400x300 -> AVIF quality(auto), medium JPEGs, cold", imgedge_only=True)
DEFAULT_WORKLOADS = "W1,W2,W3,W4,W5,W6,W7"


# --------------------------------------------------------------------------------------------
# Output


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# /proc: CPU time and memory of a process tree


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, 0) of a pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]), 0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st:
            children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_ticks(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        st = _stat(pid)
        if st:
            total += st[1]
    return total


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kb(root: int) -> tuple[int, int, int]:
    """(sum VmRSS, sum Pss, number of processes) over the tree."""
    pids = process_tree(root)
    rss = sum(_status_kb(p, "VmRSS:") for p in pids)
    pss = sum(_pss_kb(p) for p in pids) if len(pids) > 1 else rss
    return rss, pss, len(pids)


class MemorySampler:
    """Samples the tree's memory every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.1):
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            rss, pss, _ = tree_memory_kb(self.root)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.samples.append((time.monotonic() - t0, rss))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def peer_versions(binary: Path) -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"
    return {
        "imgedge": out([str(binary), "--version"]),
        "wrk": out(["wrk", "--version"]).split(" Copyright")[0],
        "thumbor": out([str(PEERS / "thumbor-venv/bin/python"), "-c",
                        "import thumbor, cv2, PIL; print('thumbor', thumbor.__version__, 'opencv', "
                        "cv2.__version__, 'Pillow', PIL.__version__)"]),
        "sharp": out(["node", "-e", f"const s=require('{PEERS}/node_modules/sharp'); console.log('sharp', "
                      f"require('{PEERS}/node_modules/sharp/package.json').version, 'libvips', s.versions.vips)"]),
        "python": sys.version.split()[0],
        "node": out(["node", "--version"]),
    }


class StartError(Exception):
    pass


@dataclass
class Server:
    name: str
    kind: str  # imgedge | thumbor | sharp
    argv: list[str]
    env: dict[str, str]
    port: int
    prefix: str  # "" or "/unsafe"
    ready_url: str
    logfile: Path
    note: str = ""
    api_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + self.prefix + path

    def start(self, timeout: float = 60) -> None:
        env = dict(os.environ)
        env.update(self.env)
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.flush()
                text = self.logfile.read_text(errors="replace").strip()
                if len(text) > 1500:  # keep the error, drop most of a backtrace
                    text = text[:1000] + " [...] " + text[-300:]
                raise StartError(f"{self.name} exited with {self.proc.returncode}: {text}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as r:
                    if r.status < 500:
                        return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise StartError(f"{self.name} did not answer {self.ready_url} within {timeout:.0f} s")

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)

    def metrics(self) -> dict[str, float]:
        """imgedge's Prometheus metrics, summed over labels by name (plus the labelled lines)."""
        out: dict[str, float] = {}
        if not self.api_port:
            return out
        try:
            _, _, body = http_get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=5)
        except OSError:
            return out
        for line in body.decode(errors="replace").splitlines():
            if not line or line.startswith("#"):
                continue
            try:
                key, value = line.rsplit(" ", 1)
                v = float(value)
            except ValueError:
                continue
            out[key] = v
            name = key.split("{", 1)[0]
            if name != key:
                out[name] = out.get(name, 0.0) + v
        return out


class Fleet:
    """Every server this run started; all of them are stopped on exit, Ctrl-C included."""

    def __init__(self, work: Path):
        self.work = work
        self.servers: list[Server] = []

    def start(self, server: Server) -> Server:
        log(f"starting {server.name}: {' '.join(server.argv[:3])} ... on :{server.port}")
        self.servers.append(server)
        server.start()
        return server

    def stop(self, server: Server) -> None:
        server.stop()

    def stop_all(self) -> None:
        for s in self.servers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - best effort at exit
                print(f"warning: stopping {s.name}: {e}", file=sys.stderr)


def imgedge_server(fleet: Fleet, binary: Path, name: str, extra_env: dict[str, str]) -> Server:
    data = fleet.work / f"data-{name.replace('+', '-')}"
    if not (data / ".imported").exists():
        # The same settings as the server (a newer binary may build derivatives on import).
        logs = []
        for c in range(COPIES):
            prefix = ["--prefix", f"c{c:02d}/"] if COPIES > 1 else []
            r = subprocess.run([str(binary), "import", str(BENCH), "--visibility", "public",
                                "--data-dir", str(data), *prefix], capture_output=True, text=True,
                               env={**os.environ, **extra_env})
            if r.returncode != 0:
                shutil.rmtree(data, ignore_errors=True)
                raise StartError(f"imgedge import failed: {(r.stderr or r.stdout).strip()[:1000]}")
            logs.append(r.stdout)
        (data / ".imported").write_text("".join(logs))
    port, api = free_port(), free_port()
    env = {"RUST_LOG": "warn", **extra_env}
    return Server(name, "imgedge",
                  [str(binary), "serve", "--data-dir", str(data), "--cdn-addr", f"127.0.0.1:{port}",
                   "--api-addr", f"127.0.0.1:{api}"],
                  env, port, "", f"http://127.0.0.1:{api}/healthz", fleet.work / f"{name}.log",
                  api_port=api)


def peer_root(fleet: Fleet) -> Path:
    """The peers' image root: the bench dir, or a tree of c<NN>/ symlinks to it (COPIES > 1)."""
    if COPIES <= 1:
        return BENCH
    root = fleet.work / "corpus"
    if not root.exists():
        for c in range(COPIES):
            d = root / f"c{c:02d}"
            d.mkdir(parents=True)
            for f in BENCH.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    (d / f.name).symlink_to(f)
    return root


def thumbor_server(fleet: Fleet, name: str, result_storage: bool) -> Server:
    port = free_port()
    env = {"BENCH_IMAGES": str(peer_root(fleet))}
    if result_storage:
        env["THUMBOR_RESULT_STORAGE"] = "1"
        env["THUMBOR_RESULT_STORAGE_PATH"] = str(fleet.work / f"{name}-results")
    return Server(name, "thumbor",
                  [str(PEERS / "thumbor-venv/bin/thumbor"), "-c", str(HERE / "peers/thumbor.conf"),
                   "-i", "127.0.0.1", "-p", str(port), "-l", "warning", "--processes", str(CORES)],
                  env, port, "/unsafe", f"http://127.0.0.1:{port}/healthcheck",
                  fleet.work / f"{name}.log")


def sharp_server(fleet: Fleet, name: str) -> Server:
    port = free_port()
    return Server(name, "sharp", ["node", str(HERE / "peers/sharp-server.mjs")],
                  {"PORT": str(port), "HOST": "127.0.0.1", "BENCH_IMAGES": str(peer_root(fleet))},
                  port, "/unsafe", f"http://127.0.0.1:{port}/", fleet.work / f"{name}.log")


def wait_for_derivatives(server: Server, timeout: float) -> tuple[bool, str]:
    """Waits until imgedge_derivative_backlog is 0 (after something was built, or 0 for 5 s)."""
    t0 = time.monotonic()
    zero_since = None
    last = None
    while time.monotonic() - t0 < timeout:
        m = server.metrics()
        backlog = m.get("imgedge_derivative_backlog")
        built = m.get("imgedge_derivatives_built_total", 0.0)
        if backlog is None:
            if time.monotonic() - t0 > 10:
                return True, "metric imgedge_derivative_backlog not exported; measured without waiting"
        elif backlog == 0:
            if built > 0:
                return True, f"{built:.0f} derivatives built in {time.monotonic() - t0:.1f} s"
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= 5:
                return True, "backlog 0 (nothing built: derivatives already present?)"
        else:
            zero_since = None
            if backlog != last:
                log(f"  {server.name}: derivative backlog {backlog:.0f}, built {built:.0f}")
                last = backlog
        time.sleep(0.5)
    m = server.metrics()
    return False, (f"derivative backlog still {m.get('imgedge_derivative_backlog')} after {timeout:.0f} s "
                   f"(built {m.get('imgedge_derivatives_built_total', 0):.0f})")


# --------------------------------------------------------------------------------------------
# Image facts (dimensions from the encoded bytes)


def image_dims(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 ":
            return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                    int.from_bytes(data[28:30], "little") & 0x3FFF)
        if chunk == b"VP8L":
            b = int.from_bytes(data[21:25], "little")
            return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def fetch_samples(server: Server, paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        t = time.monotonic()
        try:
            status, headers, body = http_get(server.url(p))
        except OSError as e:
            out.append({"path": p, "status": 0, "error": str(e)})
            continue
        out.append({
            "path": p, "status": status, "ms": round((time.monotonic() - t) * 1000, 1),
            "content_type": headers.get("content-type", ""),
            "bytes": int(headers.get("content-length", len(body))),
            "dims": list(image_dims(body) or ()) if status == 200 else [],
            "retry_after": headers.get("retry-after"),
        })
    return out


# --------------------------------------------------------------------------------------------
# Load generators: wrk (closed loop) and asyncio (bursts, open loop)

LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('@@RESULT {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

LUA_COLD = r"""
-- Cold workload: request n = counter * threads + thread id, the same sequence as compare.py's
-- Workload.path(n): file n %% nf under key prefix c<floor(n / nf) %% copies>/ (none when
-- copies = 1), sizes shifted by floor(n / nf) %% SHIFT pixels.
local prefix = %(prefix)s
local template = %(template)s
local files = { %(files)s }
local w0, h0, shift, nthreads, copies = %(w)d, %(h)d, %(shift)d, %(threads)d, %(copies)d
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
local counter = 0
function request()
  local n = counter * nthreads + tid + %(offset)d
  counter = counter + 1
  local nf = #files
  local s = math.floor(n / nf) %% shift
  local w, h = 0, 0
  if w0 > 0 then w = w0 + s end
  if h0 > 0 then h = h0 + s end
  local p = template:gsub("{w}", tostring(w)):gsub("{h}", tostring(h))
  if copies > 1 then
    p = p .. string.format("c%%02d/", math.floor(n / nf) %% copies)
  end
  return wrk.format("GET", prefix .. "/" .. p .. files[(n %% nf) + 1])
end
"""


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal here


def run_wrk(server: Server, wl: Workload, duration: float, connections: int, work: Path,
            offset: int = 0) -> dict:
    threads = max(1, min(CORES, connections))
    script = work / f"wrk-{server.name.replace('+', '-')}-{wl.name}.lua"
    body = LUA_DONE
    if wl.cold:
        body = LUA_COLD % {
            "prefix": lua_str(server.prefix), "template": lua_str(wl.template),
            "files": ", ".join(lua_str(f) for f in wl.files), "w": wl.w, "h": wl.h,
            "shift": SHIFT, "threads": threads, "offset": offset, "copies": COPIES,
        } + body
    script.write_text(body)
    url = server.url(wl.path(0)) if not wl.cold else server.base + "/"
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
            "--timeout", "30s", "-s", str(script), url]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"@@RESULT (\{.*\})", r.stdout)
    if not m:
        raise RuntimeError(f"wrk gave no result for {server.name} {wl.name}: {r.stdout} {r.stderr}")
    res = json.loads(m.group(1))
    res["ok"] = res["requests"] - res["err_status"]
    res["non2xx"] = res["err_status"]
    res["socket_errors"] = res["err_connect"] + res["err_read"] + res["err_write"] + res["err_timeout"]
    res["duration_s"] = res["duration_us"] / 1e6
    return res


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.last = 0  # status of the previous response on this connection


async def open_conn(port: int) -> Conn:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(r, w)


async def get(conn: Conn, port: int, path: str) -> tuple[int, dict[str, str], int]:
    """One HTTP/1.1 GET on a keep-alive connection: (status, headers, body length)."""
    conn.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await conn.writer.drain()
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    if n:
        await conn.reader.readexactly(n)
    return status, headers, n


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


async def _bursts(server: Server, wl: Workload, duration: float, clients: int, offset: int) -> dict:
    lat: list[float] = []
    burst_lat: list[float] = []
    status_counts: dict[int, int] = {}
    counter = [offset]
    errors = [0]
    deadline = time.monotonic() + duration

    async def client() -> None:
        conns = [await open_conn(server.port) for _ in wl.burst]
        while time.monotonic() < deadline:
            n = counter[0]
            counter[0] += 1
            t0 = time.monotonic()

            async def one(c: Conn, p: str) -> None:
                t = time.monotonic()
                status, _, _ = await get(c, server.port, server.prefix + p)
                lat.append(time.monotonic() - t)
                status_counts[status] = status_counts.get(status, 0) + 1

            try:
                await asyncio.gather(*(one(c, p) for c, p in zip(conns, wl.burst_paths(n))))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors[0] += 1
                for c in conns:
                    c.writer.close()
                conns = [await open_conn(server.port) for _ in wl.burst]
                continue
            burst_lat.append(time.monotonic() - t0)
        for c in conns:
            c.writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - t0
    ok = sum(v for k, v in status_counts.items() if 200 <= k < 300)
    return {
        "requests": sum(status_counts.values()), "ok": ok,
        "non2xx": sum(status_counts.values()) - ok, "socket_errors": errors[0],
        "duration_s": elapsed, "bursts": len(burst_lat),
        "p50_us": pct(lat, 50) * 1e6, "p90_us": pct(lat, 90) * 1e6, "p99_us": pct(lat, 99) * 1e6,
        "burst_p50_us": pct(burst_lat, 50) * 1e6, "burst_p99_us": pct(burst_lat, 99) * 1e6,
        "statuses": status_counts,
    }


def run_bursts(server: Server, wl: Workload, duration: float, offset: int) -> dict:
    return asyncio.run(_bursts(server, wl, duration, wl.connections, offset))


# --------------------------------------------------------------------------------------------
# Measurement of one run: wrap a load generator with CPU and memory accounting


def measured(server: Server, fn) -> dict:
    root = server.proc.pid
    m0 = server.metrics()
    c0 = tree_cpu_ticks(root)
    with MemorySampler(root) as mem:
        res = fn()
    c1 = tree_cpu_ticks(root)
    m1 = server.metrics()
    res["cpu_ms"] = (c1 - c0) * 1000 / CLK_TCK
    res["peak_rss_kb"] = mem.peak_rss
    res["peak_pss_kb"] = mem.peak_pss
    if m0 or m1:
        for key in ("imgedge_decodes_total", "imgedge_decodes_shared_total", "imgedge_renders_total",
                    "imgedge_derivative_renders_total", "imgedge_load_shed_total"):
            if key in m1:
                res[key] = m1[key] - m0.get(key, 0.0)
        k = 'imgedge_transform_stage_seconds_count{stage="decode"}'
        if k in m1:
            res["decode_stage_count"] = m1[k] - m0.get(k, 0.0)
        for q in (50, 99):
            v = histogram_quantile(m0, m1, "imgedge_shed_answer_seconds", q / 100)
            if v is not None:
                res[f"server_shed_p{q}_ms"] = v * 1000
    return res


def histogram_quantile(m0: dict, m1: dict, name: str, q: float) -> float | None:
    """The q-quantile of a Prometheus histogram's observations between two scrapes, as the
    upper bound of the bucket it falls in (an over-estimate by at most one bucket: the
    buckets double). None when nothing was observed."""
    prefix = f'{name}_bucket{{le="'
    buckets = []
    for key, v in m1.items():
        if key.startswith(prefix):
            le = key[len(prefix):-2]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets.append((bound, v - m0.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


def aggregate(runs: list[dict]) -> dict:
    ok = sum(r["ok"] for r in runs)
    dur = sum(r["duration_s"] for r in runs)
    cpu = sum(r["cpu_ms"] for r in runs)
    agg = {
        "rounds": len(runs), "ok": ok, "requests": sum(r["requests"] for r in runs),
        "non2xx": sum(r["non2xx"] for r in runs), "socket_errors": sum(r["socket_errors"] for r in runs),
        "rps": ok / dur if dur else 0.0,
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "cpu_ms_per_req": cpu / ok if ok else float("nan"),
        "peak_rss_mb": max(r["peak_rss_kb"] for r in runs) / 1024,
        "peak_pss_mb": max(r["peak_pss_kb"] for r in runs) / 1024,
    }
    if all("imgedge_derivative_renders_total" in r and "imgedge_renders_total" in r for r in runs):
        renders = sum(r["imgedge_renders_total"] for r in runs)
        if renders:
            agg["from_derivative_share"] = sum(r["imgedge_derivative_renders_total"] for r in runs) / renders
    if all("imgedge_decodes_total" in r and "imgedge_renders_total" in r for r in runs):
        renders = sum(r["imgedge_renders_total"] for r in runs)
        if renders:
            agg["decodes_per_render"] = sum(r["imgedge_decodes_total"] for r in runs) / renders
    bursts = sum(r.get("bursts", 0) for r in runs)
    if bursts:
        agg["bursts"] = bursts
        agg["burst_p99_ms"] = statistics.median(r["burst_p99_us"] for r in runs) / 1000
        for key in ("imgedge_decodes_total", "decode_stage_count"):
            if all(key in r for r in runs):
                agg["decodes_per_burst"] = sum(r[key] for r in runs) / bursts
                agg["decodes_metric"] = key
                break
    return agg


# --------------------------------------------------------------------------------------------
# Overload: open-loop constant arrival rate (imgedge only)


async def _closed_loop_latency(server: Server, wl: Workload, duration: float, offset: int) -> dict:
    conn = await open_conn(server.port)
    lat, statuses = [], {}
    n = offset
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        t = time.monotonic()
        status, _, _ = await get(conn, server.port, server.prefix + wl.path(n))
        n += 1
        lat.append(time.monotonic() - t)
        statuses[status] = statuses.get(status, 0) + 1
    conn.writer.close()
    return {"requests": len(lat), "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "statuses": statuses}


async def _open_loop(server: Server, wl: Workload, rate: float, duration: float, offset: int,
                     max_conns: int = 2000) -> dict:
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []
    open_count = [0]
    results: list[tuple[int, float, bool]] = []  # status (0 = socket error), latency s, Retry-After
    dropped = [0]
    retried = [0]
    retried_after: dict[int, int] = {}  # status of the previous response on a connection found closed
    errors: dict[str, int] = {}
    lag: list[float] = []
    # Latency from the moment the request was written, which leaves out the client's own
    # lateness in sending (the main figure, from the scheduled time, includes it).
    from_send: list[tuple[int, float]] = []

    async def one(i: int, scheduled: float) -> None:
        path = server.prefix + wl.path(offset + i)
        for attempt in (1, 2):
            reused = bool(idle) and attempt == 1
            if reused:
                conn = idle.pop()
            elif open_count[0] >= max_conns:
                dropped[0] += 1
                return
            else:
                open_count[0] += 1
                try:
                    conn = await open_conn(server.port)
                except OSError as e:
                    open_count[0] -= 1
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    results.append((0, loop.time() - scheduled, False))
                    return
            sent = loop.time()
            try:
                status, headers, _ = await asyncio.wait_for(get(conn, server.port, path), timeout=60)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                open_count[0] -= 1
                conn.writer.close()
                # A kept-alive connection the server closed while idle: retry once on a new
                # connection, as HTTP clients do for idempotent requests.
                if reused and isinstance(e, (ConnectionError, asyncio.IncompleteReadError)):
                    retried[0] += 1
                    retried_after[conn.last] = retried_after.get(conn.last, 0) + 1
                    continue
                what = f"{type(e).__name__} (previous response on the connection: {conn.last or 'none'})"
                errors[what] = errors.get(what, 0) + 1
                results.append((0, loop.time() - scheduled, False))
                return
            results.append((status, loop.time() - scheduled, "retry-after" in headers))
            from_send.append((status, loop.time() - sent))
            conn.last = status
            if headers.get("connection", "").lower() == "close":
                open_count[0] -= 1
                conn.writer.close()
            else:
                idle.append(conn)
            return

    total = int(rate * duration)
    start = loop.time() + 0.1
    t_first = time.monotonic()
    tasks = []
    for i in range(total):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag.append(-delay)
        tasks.append(asyncio.create_task(one(i, at)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t_first  # until the last response (the queue drains after the offer stops)
    for c in idle:
        c.writer.close()
    ok = [l for s, l, _ in results if s == 200]
    shed = [(l, ra) for s, l, ra in results if s == 503]
    other: dict[str, int] = {}
    for s, _, _ in results:
        if s not in (200, 503):
            other[str(s)] = other.get(str(s), 0) + 1
    return {
        "rate": rate, "duration_s": duration, "elapsed_s": elapsed, "sent": len(results), "dropped_client_side": dropped[0],
        "max_connections_used": open_count[0],
        "ok": len(ok), "ok_p50_ms": pct(ok, 50) * 1000, "ok_p99_ms": pct(ok, 99) * 1000,
        "ok_p99_from_send_ms": pct([l for st, l in from_send if st == 200], 99) * 1000,
        "shed": len(shed), "shed_fraction": len(shed) / len(results) if results else 0.0,
        "shed_all_retry_after": all(ra for _, ra in shed) if shed else None,
        "shed_p99_ms": pct([l for l, _ in shed], 99) * 1000,
        "other_statuses": other, "socket_errors": errors,
        "socket_error_latencies_ms": sorted(round(l * 1000) for s, l, _ in results if s == 0)[:20],
        "retried_on_new_connection": retried[0],
        "retried_after_status": retried_after,
        "scheduler_lag_p99_ms": pct(lag, 99) * 1000 if lag else 0.0,
    }


def oha_binary() -> str | None:
    """`oha` (crates.io), the second load generator of the overload test, if installed."""
    found = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")
    return found if Path(found).exists() else None


def w1_url_regex(server: Server) -> str:
    """A rand_regex pattern for cold W1 URLs: boxes of 300-399 x 200-299, every copy and
    file, so that oha's requests, like the project's client's, never repeat in practice."""
    # Literal characters in classes, not backslash escapes: oha parses the pattern as a URL
    # first, which turns a backslash into a slash.
    copies = "|".join(f"c{c:02d}" for c in range(COPIES)) if COPIES > 1 else ""
    files = "|".join(f.replace(".", "[.]") for f in LARGE)
    key = f"({copies})/({files})" if copies else f"({files})"
    return (f"http://127.0.0.1:{server.port}/fit-in/3[0-9]{{2}}x2[0-9]{{2}}/"
            f"filters:quality[(]80[)]/{key}")


def run_oha(server: Server, rate: float, duration: float, connections: int = 256) -> dict:
    """Open loop with oha: `rate` requests per second for `duration` seconds on up to
    `connections` keep-alive connections, latency measured from the scheduled send
    (`--latency-correction`), split by success (2xx) and not. oha reports no headers: the
    project's own client checks that every 503 carries Retry-After."""
    binary = oha_binary()
    if not binary:
        return {"skipped": "oha not installed (cargo install oha --locked)"}
    argv = [binary, "--no-tui", "--output-format", "json", "--latency-correction",
            "--stats-success-breakdown", "-z", f"{duration:g}s",
            "-q", f"{rate:.1f}", "-c", str(connections), "-t", "60s",
            "--rand-regex-url", w1_url_regex(server)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 180)
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip()[:1000], "argv": argv}
    data = json.loads(r.stdout)
    codes = {str(k): v for k, v in data.get("statusCodeDistribution", {}).items()}
    total = sum(codes.values())
    ok = data.get("latencyPercentilesSuccessful") or {}
    bad = data.get("latencyPercentilesNotSuccessful") or {}
    return {
        "rate": rate, "duration_s": duration, "requests": total, "statuses": codes,
        "shed_fraction": codes.get("503", 0) / total if total else 0.0,
        "ok_p50_ms": (ok.get("p50") or 0) * 1000, "ok_p99_ms": (ok.get("p99") or 0) * 1000,
        "shed_p99_ms": (bad.get("p99") or 0) * 1000,
        "errors": data.get("errorDistribution", {}),
        "oha_version": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
    }


def overload(fleet: Fleet, binary: Path, base_env: dict[str, str], sustainable: float | None,
             args, work: Path) -> dict:
    # A queue of 64 with half the requests shed spans ~130 consecutive URLs: serve each original
    # under 64 keys here so that queued requests never share a decode (see COPIES).
    global COPIES
    saved = COPIES
    if COPIES > 1:
        COPIES = max(COPIES, 64)
    try:
        return _overload(fleet, binary, base_env, sustainable, args, work)
    finally:
        COPIES = saved


@contextlib.contextmanager
def client_priority(niceness: int = -10):
    """Runs the latency client ahead of the server on the CPU while it measures.

    On a 2-core machine a saturated server otherwise starves the Python client, whose
    late sends and reads then count as server latency (open-loop latencies are measured from
    the scheduled send time). Needs root (CAP_SYS_NICE); without it the client runs as is,
    and the report says so. Yields the niceness in effect."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        yield before
        return
    try:
        yield niceness
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def _overload(fleet: Fleet, binary: Path, base_env: dict[str, str], sustainable: float | None,
              args, work: Path) -> dict:
    wl = WORKLOADS["W1"]
    out: dict = {"settings": [], "copies": COPIES}
    settings = [("defaults", {})]
    # Candidate settings: short queues (2 x cores, = cores) so that an accepted request waits
    # about one or two service times; measured next to the defaults so a proposal has numbers.
    for q in args.overload_queues:
        settings.append((f"queue_length={q}", {"IMGEDGE_QUEUE_LENGTH": str(q)}))
    for label, extra in settings:
        server = fleet.start(imgedge_server(fleet, binary, "imgedge-overload",
                                            {**base_env, "IMGEDGE_VARIANT_CACHE_BYTES": "0", **extra}))
        try:
            fetch_samples(server, wl.sample_paths())  # warm up (page cache, first renders)
            if sustainable is None:
                d = max(args.duration, 5)
                log(f"overload[{label}]: closed-loop W1 at 8 connections for {d:g} s")
                r = measured(server, lambda: run_wrk(server, wl, d, 8, work, offset=7_000_000))
                sustainable = r["ok"] / r["duration_s"]
            # The same offered rate for every setting: 4x the sustainable rate with the defaults.
            rate = sustainable
            log(f"overload[{label}]: sustainable W1 rate {rate:.1f} req/s; unloaded latency, 1 connection")
            with client_priority() as niced:
                unloaded = asyncio.run(_closed_loop_latency(server, wl, args.unloaded_duration, 8_000_000))
                target = 4 * rate
                log(f"overload[{label}]: open loop at {target:.0f} req/s for {args.overload_duration:g} s")
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                res = measured(server, lambda: {"ok": 0, **asyncio.run(
                    _open_loop(server, wl, target, args.overload_duration, 9_000_000))})
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
            res["client_niceness"] = niced
            res["client_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            res["sustainable_rps"] = rate
            res["unloaded"] = unloaded
            res["ok_p99_over_unloaded_p99"] = res["ok_p99_ms"] / unloaded["p99_ms"]
            res["label"] = label
            res["env"] = extra
            out["settings"].append(res)
            log(f"overload[{label}]: 200 p99 {res['ok_p99_ms']:.0f} ms vs unloaded p99 "
                f"{unloaded['p99_ms']:.0f} ms ({res['ok_p99_over_unloaded_p99']:.1f}x), "
                f"503 {100 * res['shed_fraction']:.0f}%, Retry-After on all: {res['shed_all_retry_after']}")
            if label == "defaults":
                # The same overload from a second load generator, at 2x and 4x.
                res["oha"] = {}
                for factor in (2, 4):
                    log(f"overload[{label}]: oha open loop at {factor * rate:.0f} req/s for "
                        f"{args.overload_duration:g} s")
                    o = measured(server, lambda: {"ok": 0, **run_oha(server, factor * rate,
                                                                      args.overload_duration)})
                    if "ok_p99_ms" in o:
                        o["ok_p99_over_unloaded_p99"] = o["ok_p99_ms"] / unloaded["p99_ms"]
                        log(f"overload[{label}]: oha {factor}x: {o['statuses']}, 200 p99 "
                            f"{o['ok_p99_ms']:.0f} ms ({o['ok_p99_over_unloaded_p99']:.1f}x unloaded), "
                            f"503 p99 {o['shed_p99_ms']:.0f} ms (server side: p50 "
                            f"{o.get('server_shed_p50_ms', float('nan')):.1f}, p99 "
                            f"{o.get('server_shed_p99_ms', float('nan')):.1f} ms), "
                            f"peak RSS {o.get('peak_rss_kb', 0) / 1024:.0f} MiB")
                    else:
                        log(f"overload[{label}]: oha {factor}x: {o.get('skipped') or o.get('error')}")
                    res["oha"][f"{factor}x"] = o
        finally:
            fleet.stop(server)
            fleet.servers.remove(server)
            shutil.rmtree(work / "data-imgedge-overload", ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# Soak (imgedge only)


def soak(server: Server, seconds: float, work: Path) -> dict:
    wl = WORKLOADS["W1"]
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.wait(10):
            rss, _, _ = tree_memory_kb(server.proc.pid)
            samples.append((round(time.monotonic() - t0), rss / 1024))
            log(f"  soak t={samples[-1][0]:.0f}s RSS {samples[-1][1]:.1f} MB")

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    res = measured(server, lambda: run_wrk(server, wl, seconds, 8, work, offset=5_000_000))
    stop.set()
    t.join()
    rss = [s[1] for s in samples]
    out = {"seconds": seconds, "samples_mb": samples, "requests": res["ok"], "non2xx": res["non2xx"],
           "peak_rss_mb": res["peak_rss_kb"] / 1024, "cpu_ms_per_req": res["cpu_ms"] / max(res["ok"], 1)}
    if rss:
        # Single samples swing with whatever is being decoded at that instant; growth is a
        # second half that sits higher than the first.
        half = max(len(rss) // 2, 1)
        first, second = rss[:half], rss[half:] or rss[:half]
        out.update(first_mb=rss[0], last_mb=rss[-1], max_mb=max(rss),
                   first_half_mean_mb=sum(first) / len(first), second_half_mean_mb=sum(second) / len(second),
                   grew=sum(second) / len(second) > sum(first) / len(first) * 1.10 + 5)
    return out


# --------------------------------------------------------------------------------------------
# Report


def fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def build_table(results: dict, order: list[str]) -> str:
    head = ("| W | server | req/s | p50 ms | p99 ms | CPU-ms/req | peak RSS MB | avg bytes | non-2xx "
            "| CPU vs best peer | bytes vs best peer | notes |")
    lines = [head, "|" + "---|" * 12]
    for wname in order:
        wres = results.get(wname)
        if not wres:
            continue
        peers = {n: r for n, r in wres["servers"].items() if r.get("kind") in ("thumbor", "sharp")
                 and "agg" in r}
        best_cpu = min(peers.items(), key=lambda kv: kv[1]["agg"]["cpu_ms_per_req"], default=None)
        best_bytes = min(((n, r) for n, r in peers.items() if r.get("avg_bytes")),
                         key=lambda kv: kv[1]["avg_bytes"], default=None)
        for warn in wres.get("warnings", []):
            lines.append(f"| {wname} | ⚠ | | | | | | | | | | {warn} |")
        for name, r in wres["servers"].items():
            if "agg" not in r:
                lines.append(f"| {wname} | {name} | | | | | | | | | | {r.get('skipped', '')} |")
                continue
            a = r["agg"]
            rss = fmt(a["peak_rss_mb"], 0)
            if a["peak_pss_mb"] and abs(a["peak_pss_mb"] - a["peak_rss_mb"]) > 5:
                rss += f" (PSS {a['peak_pss_mb']:.0f})"
            cpu_ratio = bytes_ratio = ""
            if r["kind"] == "imgedge":
                if best_cpu:
                    cpu_ratio = f"{a['cpu_ms_per_req'] / best_cpu[1]['agg']['cpu_ms_per_req']:.2f}x ({best_cpu[0]})"
                if best_bytes and r.get("avg_bytes"):
                    bytes_ratio = f"{r['avg_bytes'] / best_bytes[1]['avg_bytes']:.2f}x ({best_bytes[0]})"
            notes = list(r.get("notes", []))
            if "decodes_per_burst" in a:
                metric = "decodes" if a["decodes_metric"] == "imgedge_decodes_total" else "decode stages"
                notes.insert(0, f"{metric}/burst {a['decodes_per_burst']:.2f}")
            if "decodes_per_render" in a and "decodes_per_burst" not in a:
                notes.insert(0, f"decodes/render {a['decodes_per_render']:.2f}")
            if a.get("from_derivative_share"):
                notes.insert(0, f"{100 * a['from_derivative_share']:.0f}% of renders from a derivative")
            if "burst_p99_ms" in a:
                notes.insert(0, f"burst p99 {a['burst_p99_ms']:.0f} ms")
            non2xx = fmt(a["non2xx"]) + (f" (+{a['socket_errors']} socket)" if a["socket_errors"] else "")
            lines.append(
                f"| {wname} | {name} | {fmt(a['rps'])} | {fmt(a['p50_ms'])} | {fmt(a['p99_ms'])} | "
                f"{fmt(a['cpu_ms_per_req'], 2)} | {rss} | {fmt(r.get('avg_bytes'), 0)} | {non2xx} | "
                f"{cpu_ratio} | {bytes_ratio} | {'; '.join(notes)} |")
    return "\n".join(lines)


def other_text(r: dict) -> str:
    parts = [f"{k}: {v}" for k, v in r["other_statuses"].items() if k != "0"]
    parts += [f"{k}: {v}" for k, v in r.get("socket_errors", {}).items()]
    if r.get("retried_on_new_connection"):
        after = ", ".join(f"{n} after a {k}" for k, n in r.get("retried_after_status", {}).items())
        parts.append(f"kept-alive connection found closed, retried: {after}")
    return ", ".join(parts) or "-"


def overload_table(ov: dict) -> str:
    lines = ["| imgedge setting | sustainable W1 req/s | offered req/s | unloaded p99 ms | 200 p99 ms "
             "| 200 p99 / unloaded | 200 p99 from send ms | client lag p99 ms | 503 share | 503 all Retry-After "
             "| 503 p99 ms | 503 p99 server-side ms | 200s/s | other |",
             "|" + "---|" * 14]
    for r in ov["settings"]:
        ok_ratio = r["ok_p99_over_unloaded_p99"]
        lines.append(
            f"| {r['label']} | {r['sustainable_rps']:.1f} | {r['rate']:.0f} | {r['unloaded']['p99_ms']:.0f} | "
            f"{r['ok_p99_ms']:.0f} | {ok_ratio:.1f}x {'✓' if ok_ratio <= 2 else '✗ (target ≤ 2x)'} | "
            f"{fmt(r.get('ok_p99_from_send_ms'), 0)} | {fmt(r.get('scheduler_lag_p99_ms'), 0)} | "
            f"{100 * r['shed_fraction']:.1f}% | {r['shed_all_retry_after']} | {fmt(r['shed_p99_ms'], 0)} | "
            f"{fmt(r.get('server_shed_p99_ms'), 1)} | {r['ok'] / r['elapsed_s']:.1f} | {other_text(r)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


def compare_samples(wres: dict, ref: str) -> None:
    """Notes where a peer's output format or dimensions differ from imgedge's on the sample."""
    ref_samples = wres["servers"].get(ref, {}).get("samples")
    if not ref_samples:
        return
    for name, r in wres["servers"].items():
        if name == ref or "samples" not in r:
            continue
        dims = fmts = 0
        example = ""
        for a, b in zip(ref_samples, r["samples"]):
            if a.get("content_type") != b.get("content_type"):
                fmts += 1
            if a.get("dims") != b.get("dims"):
                dims += 1
                example = example or f"{b['path'].rsplit('/', 1)[-1]} {b.get('dims')} vs {a.get('dims')}"
        if fmts:
            r.setdefault("notes", []).append(f"content-type differs from {ref} on {fmts}/{len(ref_samples)}")
        if dims:
            r.setdefault("notes", []).append(f"dims differ from {ref} on {dims}/{len(ref_samples)}, e.g. {example}")


def main() -> int:
    global COPIES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS,
                    help="comma-separated subset of W1..W7 ('none': only --overload/--soak)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per workload (3)")
    ap.add_argument("--duration", type=float, default=8, help="seconds per server per round (8)")
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s; overload 10 s")
    ap.add_argument("--overload", action="store_true", help="imgedge overload test (open loop, 4x)")
    ap.add_argument("--overload-duration", type=float, default=30, help="open-loop seconds (30)")
    ap.add_argument("--overload-queues", default=f"{2 * CORES},{CORES}",
                    help="IMGEDGE_QUEUE_LENGTH values measured after the defaults ('' = none)")
    ap.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="imgedge W1 soak")
    ap.add_argument("--skip-install", action="store_true", help="do not run setup-peers.sh")
    ap.add_argument("--copies", type=int, default=COPIES,
                    help="keys per original (c00/..): concurrent cold requests hit distinct originals "
                         f"({COPIES}; 1 = the bare file names)")
    ap.add_argument("--imgedge", type=Path, default=REPO / "target/release/imgedge")
    ap.add_argument("--imgedge-b", type=Path, metavar="PATH",
                    help="a second imgedge binary, run from the originals as 'imgedge-B' in the same "
                         "interleaved rounds (A/B of two builds in one run)")
    ap.add_argument("--imgedge-b-env", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for 'imgedge-B' only (repeatable); without --imgedge-b, imgedge-B "
                         "is the same binary: an A/B of settings, e.g. IMGEDGE_WEBP_SHARP_YUV=true")
    ap.add_argument("--derivative-timeout", type=float, default=300,
                    help="seconds to wait for imgedge+pyramid's derivative backlog to reach 0")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 3
        if args.overload_duration == 30:
            args.overload_duration = 10
    args.unloaded_duration = 4 if args.quick else 10
    args.overload_queues = [int(q) for q in args.overload_queues.split(",") if q.strip()]
    names = [] if args.workloads == "none" else [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in names:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}")
    COPIES = max(1, args.copies)
    binary = args.imgedge.resolve()
    if not binary.exists():
        ap.error(f"no imgedge binary at {binary}")

    if not args.skip_install:
        log("installing peers (loadtest/setup-peers.sh)")
        subprocess.run([str(HERE / "setup-peers.sh")], check=True)
    if not shutil.which("wrk"):
        print("wrk not found: run loadtest/setup-peers.sh (apt-get install -y wrk)", file=sys.stderr)
        return 2

    # Ctrl-C and SIGTERM both unwind through the finally below, which stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    work = Path(tempfile.mkdtemp(prefix="imgedge-compare-"))
    fleet = Fleet(work)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict = {
        "started": stamp, "host": {"cores": CORES, "kernel": os.uname().release},
        "imgedge_binary": {"path": str(binary), "mtime": time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(binary.stat().st_mtime))},
        "config": {"rounds": args.rounds, "duration_s": args.duration, "workloads": names,
                   "cold_shift_pixels": SHIFT, "copies": COPIES},
        "versions": peer_versions(binary), "notes": [], "workloads": {},
    }
    log("versions: " + "; ".join(f"{k} {v}" for k, v in report["versions"].items()))
    try:
        return run(args, names, binary, fleet, work, report, stamp)
    finally:
        fleet.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run(args, names: list[str], binary: Path, fleet: Fleet, work: Path, report: dict, stamp: str) -> int:
    notes = report["notes"]
    cold_names = [n for n in names if WORKLOADS[n].cold]

    # imgedge from the original (derivatives off). A binary that predates the derivatives
    # refuses the unknown setting at start: then run it on its defaults and skip the pyramid.
    base_env = {"IMGEDGE_DERIVATIVE_SIZES": ""}
    pyramid_supported = True
    cold: list[Server] = []
    if cold_names or args.overload or args.soak:
        try:
            cold.append(fleet.start(imgedge_server(fleet, binary, "imgedge",
                                                   {**base_env, "IMGEDGE_VARIANT_CACHE_BYTES": "0"})))
        except StartError as e:
            if "DERIVATIVE_SIZES" not in str(e):
                raise
            pyramid_supported = False
            base_env = {}
            notes.append("imgedge binary refuses IMGEDGE_DERIVATIVE_SIZES (older build): "
                         "'imgedge+pyramid' skipped; 'imgedge' runs without derivatives")
            log("note: " + notes[-1])
            fleet.servers = [s for s in fleet.servers if s.name != "imgedge"]
            cold.append(fleet.start(imgedge_server(fleet, binary, "imgedge",
                                                   {"IMGEDGE_VARIANT_CACHE_BYTES": "0"})))
    else:
        # Only W6: still find out whether the setting exists.
        try:
            probe = fleet.start(imgedge_server(fleet, binary, "imgedge-probe", base_env))
            fleet.stop(probe)
        except StartError as e:
            if "DERIVATIVE_SIZES" not in str(e):
                raise
            base_env = {}
        fleet.servers = [s for s in fleet.servers if s.name != "imgedge-probe"]

    if cold_names and (args.imgedge_b or args.imgedge_b_env):
        b_env = dict(pair.split("=", 1) for pair in args.imgedge_b_env)
        cold.append(fleet.start(imgedge_server(fleet, (args.imgedge_b or binary).resolve(), "imgedge-B",
                                               {**base_env, "IMGEDGE_VARIANT_CACHE_BYTES": "0", **b_env})))

    if cold_names:
        if pyramid_supported:
            pyr = fleet.start(imgedge_server(fleet, binary, "imgedge+pyramid",
                                             {"IMGEDGE_VARIANT_CACHE_BYTES": "0"}))
            log("waiting for imgedge+pyramid's derivatives (imgedge_derivative_backlog = 0)")
            done, msg = wait_for_derivatives(pyr, args.derivative_timeout)
            log(f"imgedge+pyramid: {msg}")
            if done:
                cold.append(pyr)
                report["pyramid"] = msg
            else:
                notes.append(f"imgedge+pyramid skipped: {msg}")
                fleet.stop(pyr)
        for factory in (lambda: thumbor_server(fleet, "thumbor", False), lambda: sharp_server(fleet, "sharp")):
            try:
                cold.append(fleet.start(factory()))
            except (StartError, OSError) as e:
                notes.append(f"peer not started: {e}")
                log("WARNING: " + notes[-1])

        # Same output dimensions for a W1 URL on every server before measuring.
        w1 = WORKLOADS["W1"].path(0)
        dims = {s.name: fetch_samples(s, [w1])[0] for s in cold}
        report["w1_check"] = {"path": w1, "servers": dims}
        shapes = {n: (d.get("status"), tuple(d.get("dims", ())), d.get("content_type")) for n, d in dims.items()}
        log("W1 check " + w1 + ": " + ", ".join(f"{n} {s[0]} {s[1]} {s[2]}" for n, s in shapes.items()))
        if len(set(shapes.values())) > 1:
            report["w1_check"]["warning"] = True

    results = report["workloads"]
    for wname in names:
        wl = WORKLOADS[wname]
        if wl.imgedge_only:
            servers = [s for s in cold if s.kind == "imgedge"]
        elif wl.cold:
            servers = cold
        else:
            servers = [fleet.start(imgedge_server(fleet, binary, "imgedge-warm", base_env)),
                       fleet.start(thumbor_server(fleet, "thumbor-rs", True))]
            for s in servers:
                s.name = s.name.replace("-warm", "").replace("-rs", "+result-storage")
        wres = {"describe": wl.describe, "connections": wl.connections, "servers": {}, "warnings": []}
        results[wname] = wres
        if wname == "W1" and report.get("w1_check", {}).get("warning"):
            c = report["w1_check"]["servers"]
            wres["warnings"].append("W1 output differs: " + ", ".join(
                f"{n} {d.get('status')} {d.get('dims')} {d.get('content_type')}" for n, d in c.items()))
        # Warm up each server on this workload's files (and check the keys answer).
        for s in servers:
            warm = fetch_samples(s, [wl.burst_paths(0)[0]] if wl.burst else wl.sample_paths()[:len(wl.files)])
            bad = [w for w in warm if w["status"] != 200]
            if bad:
                wres["warnings"].append(f"{s.name}: warm-up {bad[0]['path']} -> {bad[0]['status']}")
                log(f"WARNING {wname} {s.name}: warm-up {bad[0]['path']} answered {bad[0]['status']}")
        runs: dict[str, list[dict]] = {s.name: [] for s in servers}
        for rnd in range(args.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for s in order:
                if s.proc.poll() is not None:
                    continue
                offset = rnd * 1_000_000 + 10_000
                if wl.burst:
                    res = measured(s, lambda: run_bursts(s, wl, args.duration, offset))
                else:
                    res = measured(s, lambda: run_wrk(s, wl, args.duration, wl.connections, work, offset))
                runs[s.name].append(res)
                log(f"{wname} round {rnd + 1}/{args.rounds} {s.name:16s} {res['ok'] / res['duration_s']:8.1f} req/s "
                    f"p99 {res['p99_us'] / 1000:7.1f} ms  CPU {res['cpu_ms'] / max(res['ok'], 1):6.2f} ms/req  "
                    f"RSS {res['peak_rss_kb'] / 1024:6.0f} MB  non-2xx {res['non2xx']}")
                if s.proc.poll() is not None:
                    msg = (f"{s.name} EXITED with status {s.proc.returncode} during {wname} round {rnd + 1} "
                           f"(log: {s.logfile.name}): "
                           + s.logfile.read_text(errors="replace").strip()[-600:])
                    wres["warnings"].append(msg.splitlines()[0])
                    notes.append(msg)
                    log("ERROR: " + msg)
                    runs[s.name].pop()
                    if s in cold:
                        cold.remove(s)
        for s in servers:
            if not runs[s.name]:
                wres["servers"][s.name] = {"kind": s.kind, "skipped": "server exited (see notes)"}
                continue
            entry = {"kind": s.kind, "rounds": runs[s.name], "agg": aggregate(runs[s.name])}
            samples = fetch_samples(s, wl.sample_paths())
            entry["samples"] = samples
            sizes = [x["bytes"] for x in samples if x["status"] == 200]
            entry["avg_bytes"] = sum(sizes) / len(sizes) if sizes else None
            bad = [x for x in samples if x["status"] != 200]
            if bad:
                entry.setdefault("notes", []).append(f"{len(bad)} sample(s) not 200: {bad[0]['status']}")
            wres["servers"][s.name] = entry
        if not wl.cold:
            wres["servers"]["imgedge+pyramid"] = {"kind": "imgedge", "skipped": "n/a: the same variant-cache hit as imgedge"}
            wres["servers"]["sharp"] = {"kind": "sharp", "skipped": "n/a: sharp-server has no result cache"}
        compare_samples(wres, "imgedge")
        if not wl.cold:
            for s in servers:
                fleet.stop(s)
            fleet.servers = [x for x in fleet.servers if x not in servers]

    table = build_table(results, names)
    if results:
        print()
        print(f"## imgedge vs Thumbor vs sharp ({time.strftime('%Y-%m-%d %H:%M')}, {CORES} cores, "
              f"{args.rounds} round(s) x {args.duration:g} s per server)")
        print()
        print(table)
        print()
        print("req/s and CPU-ms/req aggregate all rounds (CPU = utime+stime of the server's process tree "
              "/ 2xx responses); p50/p99 are the median over rounds of each run's percentiles (wrk; W7: "
              "per request, asyncio client). Peak RSS = max over rounds of the tree's summed VmRSS "
              "sampled every 100 ms. 'vs best peer' = imgedge / the lower of Thumbor and sharp.")
        for n in notes:
            print(f"- {n}")

    if args.overload:
        sustainable = None
        w1 = results.get("W1", {}).get("servers", {}).get("imgedge", {}).get("agg")
        if w1:
            sustainable = w1["rps"]
        report["overload"] = overload(fleet, binary, base_env, sustainable, args, work)
        print()
        print("## imgedge overload (W1 cold, open loop at 4x the sustainable rate)")
        print()
        print(overload_table(report["overload"]))

    if args.soak:
        server = next(s for s in cold if s.name == "imgedge")
        log(f"soak: W1 at 8 connections for {args.soak:g} s")
        report["soak"] = soak(server, args.soak, work)
        sk = report["soak"]
        print()
        print(f"## imgedge soak (W1, 8 connections, {args.soak:g} s, {sk['requests']} requests, "
              f"non-2xx {sk['non2xx']})")
        print("RSS MB every 10 s: " + ", ".join(f"{m:.0f}" for _, m in sk["samples_mb"]))
        print(f"peak RSS (sampled every 0.1 s) {sk['peak_rss_mb']:.1f} MB; CPU {sk['cpu_ms_per_req']:.1f} ms/req")
        if "first_mb" in sk:
            print(f"first {sk['first_mb']:.1f} MB, last {sk['last_mb']:.1f} MB, max {sk['max_mb']:.1f} MB; "
                  f"mean of the first half {sk['first_half_mean_mb']:.1f} MB, second half "
                  f"{sk['second_half_mean_mb']:.1f} MB: "
                  f"{'GREW' if sk['grew'] else 'no growth'}")

    # imgedge's own warnings and errors (it runs with RUST_LOG=warn), for the record.
    logs = {}
    for f in sorted(work.glob("imgedge*.log")):
        lines = [ln for ln in f.read_text(errors="replace").splitlines() if "WARN" in ln or "ERROR" in ln
                 or "panicked" in ln]
        if lines:
            logs[f.stem] = {"count": len(lines), "first": [re.sub(r"\x1b\[[0-9;]*m", "", ln)[:300] for ln in lines[:10]]}
    report["imgedge_log_warnings"] = logs
    if logs:
        print()
        for name, v in logs.items():
            print(f"- {name}.log: {v['count']} warning/error line(s), first: {v['first'][0]}")

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{stamp}.json"
    report["table_markdown"] = table
    path.write_text(json.dumps(report, indent=1, default=str))
    log(f"results saved to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        sys.exit(130)
