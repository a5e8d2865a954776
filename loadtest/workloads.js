// k6 script for the comparison workloads W1-W7 (the same URLs as loadtest/compare.py, which
// drives them with wrk instead; see loadtest/README.md). One workload per run:
//
//   k6 run -e WORKLOAD=W1 loadtest/workloads.js                                  # imgedge on :8080
//   k6 run -e WORKLOAD=W4 -e BASE=http://127.0.0.1:8888 -e PREFIX=/unsafe loadtest/workloads.js   # Thumbor
//   k6 run -e WORKLOAD=W7 -e VUS=2 -e DURATION=30s loadtest/workloads.js
//
// Environment: BASE (default http://127.0.0.1:8080), PREFIX ('' or '/unsafe'; Thumbor needs
// '/unsafe', imgedge and sharp-server accept both), VUS (default: 8 for W1, 2 for W7, else 4),
// DURATION (default 30s), COPIES (default 1). The files are the bench images
// (/work/shared/bench-images), imported into imgedge with
// `imgedge import /work/shared/bench-images --visibility public`, so the keys are the file names.
// COPIES=N requests c00/<file> .. c<N-1>/<file> in turn (import N times with --prefix c00/ ...;
// Thumbor/sharp: a root of c<NN>/ symlinks), as compare.py does by default (N=16), so that
// concurrent cold requests never hit the same original (imgedge shares one decode between
// concurrent renders of one source).
//
// Cold workloads (all but W6): every request is a new URL, the box growing by a pixel per request
// (over 100 steps), so run imgedge with IMGEDGE_VARIANT_CACHE_BYTES=0 and Thumbor without result
// storage. W6 repeats one URL (warm cache: imgedge's variant cache, Thumbor's result storage).
// W7 is a srcset burst: one original at 400, 800 and 1200 wide, requested together (http.batch),
// the widths shifted by a pixel per burst.
import http from 'k6/http';
import { check } from 'k6';

const LARGE = ['kleiber.jpg', 'seeding.jpg', 'dragonfly.jpg', 'sunset.jpg', 'phone_12mp.jpg'];
const MEDIUM = ['storm.jpg', 'raindrops.jpg', 'dune.jpg', 'brushes.jpg'];
const ALPHA_PNG = ['emerald_logo.png', 'swirlaxy.png', 'camera_icon.png'];
const SHIFT = 100;
const COPIES = Number(__ENV.COPIES || 1);

// template: the Thumbor path before the file name; {w} and {h} are the (shifted) sizes.
const WORKLOADS = {
  W1: { template: 'fit-in/{w}x{h}/filters:quality(80)/', files: LARGE, w: 300, h: 200, cold: true, vus: 8 },
  W2: { template: 'fit-in/{w}x0/filters:quality(85)/', files: LARGE, w: 800, h: 0, cold: true, vus: 4 },
  W3: { template: 'fit-in/{w}x{h}/filters:quality(80):format(webp)/', files: MEDIUM, w: 400, h: 300, cold: true, vus: 4 },
  W4: { template: '{w}x{h}/smart/', files: MEDIUM, w: 80, h: 80, cold: true, vus: 4 },
  W5: { template: 'fit-in/{w}x{h}/filters:format(webp)/', files: ALPHA_PNG, w: 200, h: 200, cold: true, vus: 4 },
  W6: { template: 'fit-in/{w}x{h}/filters:quality(80)/', files: ['phone_12mp.jpg'], w: 300, h: 200, cold: false, vus: 4 },
  W7: { template: 'fit-in/{w}x0/', files: LARGE, burst: [400, 800, 1200], cold: true, vus: 2 },
};

const NAME = __ENV.WORKLOAD || 'W1';
const WL = WORKLOADS[NAME];
if (!WL) throw new Error(`unknown WORKLOAD ${NAME} (W1..W7)`);
const BASE = (__ENV.BASE || 'http://127.0.0.1:8080') + (__ENV.PREFIX || '');
const VUS = Number(__ENV.VUS || WL.vus);

export const options = {
  vus: VUS,
  duration: __ENV.DURATION || '30s',
  thresholds: { checks: ['rate>0.99'] },
};

function key(copy, file) {
  return COPIES > 1 ? `c${String(copy % COPIES).padStart(2, '0')}/${file}` : file;
}

function fill(template, w, h) {
  return template.replace('{w}', String(w)).replace('{h}', String(h));
}

// The n-th URL of the sequence, as compare.py's Workload.path(n).
function path(n) {
  const nf = WL.files.length;
  const s = WL.cold ? Math.floor(n / nf) % SHIFT : 0;
  const w = WL.w ? WL.w + s : 0;
  const h = WL.h ? WL.h + s : 0;
  return `/${fill(WL.template, w, h)}${key(WL.cold ? Math.floor(n / nf) : 0, WL.files[n % nf])}`;
}

function burstPaths(n) {
  const nf = WL.files.length;
  const s = WL.cold ? Math.floor(n / nf) % SHIFT : 0;
  return WL.burst.map((w) => `/${fill(WL.template, w + s, 0)}${key(Math.floor(n / nf), WL.files[n % nf])}`);
}

export default function () {
  // Distinct across VUs (1-based __VU) and iterations (0-based __ITER per VU).
  const n = __ITER * VUS + (__VU - 1);
  if (WL.burst) {
    const responses = http.batch(burstPaths(n).map((p) => ['GET', BASE + p]));
    check(responses, { 'burst all 200': (rs) => rs.every((r) => r.status === 200) });
    return;
  }
  const res = http.get(BASE + path(WL.cold ? n : 0));
  check(res, { 'status 200': (r) => r.status === 200 });
}
