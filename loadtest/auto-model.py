#!/usr/bin/env python3
"""Prints the mean quality-to-SSIMULACRA2 curves that `quality(auto)` predicts from
(`MEAN_JPEG` and `MEAN_WEBP` in src/imaging/auto_quality.rs), from a run of
loadtest/quality.py: per quality of its sweep, the mean "own" score of imgedge's renders,
JPEG over the W1 and W2 photos, WebP over the W3 photos, AVIF over the photos of the AVIF
target (`--targets AVIF --no-thumbor`). A sweep by another step than 5
(`loadtest/quality.py --qualities 40:95:1`) prints a longer curve, which `mean_score` would
have to be taught.

    python3 loadtest/auto-model.py loadtest/results/quality-<stamp>.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        run = json.load(f)
    curves: dict[str, dict[int, list[float]]] = {
        "JPEG": defaultdict(list), "WEBP": defaultdict(list), "AVIF": defaultdict(list)}
    for target, name in (("W1", "JPEG"), ("W2", "JPEG"), ("W3", "WEBP"), ("AVIF", "AVIF")):
        if target not in run["targets"]:
            continue
        photos = run["targets"][target]["servers"]["imgedge"]
        for photo in photos.values():
            for row in photo["rows"]:
                if row["quality"].isdigit() and row.get("own") is not None:
                    curves[name][int(row["quality"])].append(row["own"])
    for name, curve in curves.items():
        qualities = sorted(curve)
        if len(qualities) < 2:
            print(f"// {name}: not in this run")
            continue
        step = qualities[1] - qualities[0]
        if qualities != list(range(qualities[0], qualities[-1] + 1, step)):
            sys.exit(f"{name}: the sweep is not evenly spaced: {qualities}")
        counts = {len(curve[q]) for q in qualities}
        print(f"// {name}: mean of {max(counts)} photos' scores at qualities "
              f"{qualities[0]}..={qualities[-1]} by {step}")
        means = ", ".join(f"{sum(curve[q]) / len(curve[q]):.2f}" for q in qualities)
        print(f"const MEAN_{name}: [f64; {len(qualities)}] = [{means}];")


if __name__ == "__main__":
    main()
