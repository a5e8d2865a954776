#!/usr/bin/env python3
"""Replays `quality(auto)`'s prediction (src/imaging/auto_quality.rs: `choose_encoded`,
`predict`, `mean_score`; this is a copy of their arithmetic, keep the two in step) on the
curves of a loadtest/quality.py run, to try a mean table or a margin before changing the
code: for each photo of a target, the probe reads its score off the photo's own sweep, and
the chosen quality's bytes and score are read off the same sweep.

    python3 loadtest/quality.py --targets W3 --no-thumbor --qualities 40:95:1
    python3 loadtest/auto-sim.py loadtest/results/quality-<stamp>.json --target W3

It prints, per mean-table step (5: the committed kind; 1: every quality, when the sweep has
it), per margin, and with the table built from all photos or from the others only
(leave-one-out): the total bytes against sharp's q80 and the worst served score. A quality
the sweep lacks is an error: sweep by 1 for anything but the table's own points.
"""
from __future__ import annotations

import argparse
import json
import math

FORMATS = {"W1": ("jpeg", 79.0, 75), "W2": ("jpeg", 79.0, 75), "W3": ("webp", 72.0, 80), "AVIF": ("avif", 79.0, 80)}
LOWEST, HIGHEST, FAR, TRIES = 30, 90, 10, 2


def mean_at(table: tuple[int, int, list[float]], q: int) -> float:
    first, step, scores = table
    steps = (q - first) / step
    below = min(max(math.floor(steps), 0), len(scores) - 2)
    return scores[below] + (steps - below) * (scores[below + 1] - scores[below])


def predict(table, probes, aim, floor, ceiling):
    def factor_of(p):
        return max(100 - p[1], 0) / max(100 - mean_at(table, p[0]), 1)

    def factor(q):
        if len(probes) == 2 and probes[0][0] != probes[1][0]:
            (qa, _), (qb, _) = probes
            t = (q - qa) / (qb - qa)
            return max(factor_of(probes[0]) + t * (factor_of(probes[1]) - factor_of(probes[0])), 0)
        return factor_of(probes[-1])

    def at(q):
        for pq, ps in probes:
            if pq == q:
                return ps
        return 100 - factor(q) * (100 - mean_at(table, q))

    floor = min(floor, ceiling)
    for q in range(floor, ceiling + 1):
        if at(q) >= aim:
            return q
    return ceiling


def choose(table, curve, target, aim, probe):
    probes, q, floor, ceiling = [], probe, LOWEST, HIGHEST
    while True:
        score = curve[q][1]
        probes.append((q, score))
        if score >= target:
            ceiling = min(ceiling, q)
        else:
            floor = min(max(floor, q + 1), HIGHEST)
        nxt = predict(table, probes, target + aim, floor, ceiling)
        if len(probes) < TRIES and abs(nxt - q) > FAR:
            q = nxt
            continue
        return nxt, len(probes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--target", default="W3", choices=sorted(FORMATS))
    ap.add_argument("--score-target", type=float, help="the auto target (79 JPEG, 72 WebP)")
    ap.add_argument("--aims", default="0.5,1.0,1.5")
    args = ap.parse_args()
    run = json.load(open(args.results, encoding="utf-8"))
    t = run["targets"][args.target]
    _, default_target, probe = FORMATS[args.target]
    target = args.score_target or default_target
    curves = {f: {int(r["quality"]): (r["bytes"], r["own"]) for r in v["rows"] if r["quality"].isdigit()}
              for f, v in t["servers"]["imgedge"].items()}
    anchor = sum(next(r["bytes"] for r in v["rows"] if r["quality"] == "80")
                 for v in t["servers"]["sharp"].values())
    qualities = sorted(next(iter(curves.values())))
    steps = [5] + ([1] if qualities == list(range(qualities[0], qualities[-1] + 1)) else [])
    for step in steps:
        for loo in (False, True):
            for aim in (float(a) for a in args.aims.split(",")):
                total, worst, picks = 0, 100.0, []
                for f, curve in curves.items():
                    others = [g for g in curves if g != f] if loo else list(curves)
                    qs = list(range(40, 96, step))
                    table = (40, step, [sum(curves[g][q][1] for g in others) / len(others) for q in qs])
                    q, tries = choose(table, curve, target, aim, probe)
                    b, s = curve[q]
                    total, worst = total + b, min(worst, s)
                    picks.append(f"{f} q{q} {s:.1f}" + (" (2 probes)" if tries > 1 else ""))
                print(f"table by {step}, {'leave-one-out' if loo else 'all photos  '}, margin {aim}: "
                      f"{total / anchor:.3f}x sharp q80, worst {worst:.1f}; " + ", ".join(picks))


if __name__ == "__main__":
    main()
