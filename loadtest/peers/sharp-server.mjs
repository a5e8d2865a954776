// A minimal image server on sharp, the "sharp" peer of loadtest/compare.py.
//
//   node loadtest/peers/sharp-server.mjs            (PORT, HOST, BENCH_IMAGES from the environment)
//
// It implements only the Thumbor-grammar subset the workloads W1-W7 use:
//
//   /[unsafe/][fit-in/]WxH/[smart/][filters:quality(n)[:format(webp)]/]<file name>
//
//   fit-in/WxH   resize fit 'inside', withoutEnlargement (W or H = 0: that side follows the
//                aspect ratio)  -- Thumbor's and imgedge's fit-in (never crop, never upscale)
//   WxH          resize fit 'cover' + centre crop to exactly WxH (Thumbor's default crop)
//   smart        crop position sharp.strategy.attention (libvips saliency: skin, saturation,
//                luminance frequency) -- sharp's counterpart of Thumbor's detectors
//   quality(n)   JPEG/WebP/AVIF quality;   format(webp), format(avif)   WebP, AVIF output
//
// Defaults chosen to mirror Thumbor/imgedge (and noted where they are sharp's own):
//   - output format = source format unless format() is given (no Accept negotiation);
//   - JPEG quality 80 when the URL gives none (Thumbor QUALITY=80, imgedge default_quality=80);
//     WebP quality likewise 80 (sharp's default, Thumbor's WEBP_QUALITY=None -> QUALITY);
//   - JPEG: mozjpeg OFF, baseline, 4:2:0 chroma (sharp's defaults; SHARP_MOZJPEG=1 turns mozjpeg on);
//   - EXIF orientation applied (.rotate()), metadata stripped and colours in sRGB (sharp's
//     defaults, as imgedge does);
//   - originals are read from BENCH_IMAGES on every request (no original cache, like Thumbor's
//     no_storage; the OS page cache serves the bytes) and there is no result cache;
//   - libvips concurrency and its operation cache are left at sharp's defaults
//     (sharp.concurrency() = cores, UV_THREADPOOL_SIZE = 4, sharp.cache() = 50 MB / 100 ops).
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';

// sharp is installed by loadtest/setup-peers.sh under loadtest/.peers/node_modules.
const require = createRequire(new URL('../.peers/package.json', import.meta.url));
const sharp = require('sharp');

const PORT = Number(process.env.PORT || 8889);
const HOST = process.env.HOST || '127.0.0.1';
const ROOT = path.resolve(process.env.BENCH_IMAGES || '/work/shared/bench-images');
// SHARP_MOZJPEG=1: sharp's `mozjpeg: true` (trellis quantisation, progressive, mozjpeg's
// tables), for the quality benchmark's "sharp+mozjpeg"; off by default, as in sharp.
const MOZJPEG = process.env.SHARP_MOZJPEG === '1';
const DEFAULT_QUALITY = 80;

const SIZE = /^(\d+)x(\d+)$/;
const FILTER = /^([a-z_]+)\(([^)]*)\)$/;

class BadRequest extends Error {}

// Parses the URL path into { fitIn, width, height, smart, quality, format, key }.
function parse(urlPath) {
  let parts = decodeURIComponent(urlPath.split('?')[0]).split('/').filter((p) => p !== '');
  if (parts[0] === 'unsafe') parts = parts.slice(1);
  const req = { fitIn: false, width: 0, height: 0, smart: false, quality: 0, format: null };
  if (parts[0] === 'fit-in') {
    req.fitIn = true;
    parts = parts.slice(1);
  }
  const size = SIZE.exec(parts[0] || '');
  if (size) {
    req.width = Number(size[1]);
    req.height = Number(size[2]);
    parts = parts.slice(1);
  }
  if (parts[0] === 'smart') {
    req.smart = true;
    parts = parts.slice(1);
  }
  if (parts[0] && parts[0].startsWith('filters:')) {
    for (const f of parts[0].slice('filters:'.length).split(':')) {
      const m = FILTER.exec(f);
      if (!m) throw new BadRequest(`bad filter ${f}`);
      if (m[1] === 'quality') req.quality = Number(m[2]);
      else if (m[1] === 'format') req.format = m[2] === 'jpg' ? 'jpeg' : m[2];
      else throw new BadRequest(`unsupported filter ${m[1]}`);
    }
    parts = parts.slice(1);
  }
  const key = parts.join('/');
  if (!key || parts.some((p) => p === '..' || p === '.')) throw new BadRequest('bad key');
  req.key = key;
  return req;
}

// The source format from its magic bytes (cheaper than a second sharp(input).metadata()).
function sniff(buf) {
  if (buf[0] === 0xff && buf[1] === 0xd8) return 'jpeg';
  if (buf.toString('latin1', 1, 4) === 'PNG') return 'png';
  if (buf.toString('latin1', 0, 4) === 'RIFF' && buf.toString('latin1', 8, 12) === 'WEBP') return 'webp';
  return 'unknown';
}

async function render(req) {
  const input = await readFile(path.join(ROOT, req.key));
  let img = sharp(input).rotate();
  const width = req.width || undefined;
  const height = req.height || undefined;
  if (width || height) {
    if (req.fitIn) {
      img = img.resize({ width, height, fit: 'inside', withoutEnlargement: true });
    } else {
      img = img.resize({
        width,
        height,
        fit: 'cover',
        position: req.smart ? sharp.strategy.attention : 'centre',
      });
    }
  }
  const format = req.format || sniff(input);
  const quality = req.quality || DEFAULT_QUALITY;
  switch (format) {
    case 'jpeg':
      img = img.jpeg({ quality, mozjpeg: MOZJPEG });
      break;
    case 'webp':
      img = img.webp({ quality });
      break;
    case 'avif':
      img = img.avif({ quality });
      break;
    case 'png':
      img = img.png();
      break;
    default:
      throw new BadRequest(`unsupported output format ${format}`);
  }
  return { body: await img.toBuffer(), type: `image/${format}` };
}

const server = http.createServer(async (request, response) => {
  try {
    const req = parse(request.url);
    const { body, type } = await render(req);
    response.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length });
    response.end(body);
  } catch (err) {
    const status = err instanceof BadRequest ? 400 : err.code === 'ENOENT' ? 404 : 500;
    const body = `${err.message}\n`;
    response.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    response.end(body);
  }
});
server.keepAliveTimeout = 65000;
server.listen(PORT, HOST, () => {
  console.log(`sharp ${require('sharp/package.json').version} (libvips ${sharp.versions.vips}) on http://${HOST}:${PORT}/ root ${ROOT}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
