// k6 load script for the image edge.
//
//   k6 run -e BASE=http://127.0.0.1:8080 -e KEYS=demo/a.jpg,demo/b.jpg -e MODE=cold loadtest/edge.js
//
// MODE=cold: every request a new URL (the box grows by a pixel per request), so run the
//            server with IMGEDGE_VARIANT_CACHE_BYTES=0 to measure renders from the original.
// MODE=warm: one URL repeated (variant cache hits).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const KEYS = (__ENV.KEYS || 'demo/bridge.jpg').split(',');
const MODE = __ENV.MODE || 'cold';
const OPS = __ENV.OPS || 'fit-in/{w}x{h}/filters:quality(80)';

export const options = {
  vus: Number(__ENV.VUS || 8),
  duration: __ENV.DURATION || '30s',
};

export default function () {
  const i = MODE === 'cold' ? (__VU * 100000 + __ITER) % 200 : 0;
  const key = KEYS[(__VU + __ITER) % KEYS.length];
  const ops = OPS.replace('{w}', String(300 + i)).replace('{h}', String(200 + i));
  const res = http.get(`${BASE}/${ops}/${key}`, { headers: { Accept: 'image/webp,*/*' } });
  check(res, { 'status 200': (r) => r.status === 200 });
}
