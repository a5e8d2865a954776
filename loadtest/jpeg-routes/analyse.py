#!/usr/bin/env python3
"""Bytes at the anchor's q80 SSIMULACRA2, per route and target, from jpeg-routes rows.

The anchor is libjpeg-turbo (`turbo`) where it was run, else libwebp's defaults (`webp`)."""
import collections
import sys

rows = collections.defaultdict(list)
times = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f, t, m, q, b, s, ms = line.split("\t")
    rows[(f, t, m)].append((int(q), int(b), float(s)))
    times[(t, m)].append(float(ms))


def bytes_at(sweep, target):
    sw = sorted(sweep)
    if target <= sw[0][2]:
        return sw[0][1]
    for (_, b0, s0), (_, b1, s1) in zip(sw, sw[1:]):
        if s0 <= target <= s1 and s1 > s0:
            return b0 + (b1 - b0) * (target - s0) / (s1 - s0)
    return float("nan")


for t in sorted({t for (_, t, _) in rows}, key=lambda t: int(t.split("x")[0])):
    anchor_route = "turbo" if any(m == "turbo" for (_, tt, m) in rows if tt == t) else "webp"
    routes = sorted({m for (_, tt, m) in rows if tt == t})
    files = sorted({f for (f, tt, _) in rows if tt == t})
    total, anchor = collections.Counter(), 0
    for f in files:
        base = {q: (b, s) for q, b, s in rows[(f, t, anchor_route)]}
        anchor += base[80][0]
        for m in routes:
            total[m] += bytes_at(rows[(f, t, m)], base[80][1])
    print(f"{t}: {len(files)} photos, {anchor_route} q80 {anchor:,} bytes")
    for m in routes:
        ms = sum(times[(t, m)]) / len(times[(t, m)])
        print(f"  {m:16s} {total[m] / anchor:.3f}x bytes at equal score, {ms:.2f} ms per encode")
