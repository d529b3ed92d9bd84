#!/usr/bin/env python3
"""The first timed turn after a mask's set-up against the later ones, over tools/ab_compare.py's
JSON files (docs/perf-notes.md, "Timed first").

ab_compare.py builds a mask and checks every build's output, the GPU mostly idle meanwhile, then
times the builds in rounds, the first build first. For each mask and mode of each file this takes
the first build's first round over the median of its later rounds, and the same for the builds
timed after it, and prints their medians and quartiles by mode and by kind of mask (full and
causal, "dense", against the others, "masked").

Not a test:  python tools/first_turns.py benchmarks/results/ab_v*.json
"""

from __future__ import annotations

import argparse
import json
import statistics

DENSE = ("full", "causal")
MIN_ROUNDS = 4  # a first round and at least three after it


def first_turn_ratios(turns: dict) -> dict:
    """{(mode, kind, "first" or "others"): [ratio, ...]} of one ab_compare.py JSON (key
    "config/mask/mode" -> {build: [TFLOPs/s per round]}, builds in the order they were timed)."""
    ratios = {}
    for key, builds in turns.items():
        if not isinstance(builds, dict) or key.count("/") != 2:
            continue
        _, mask, mode = key.split("/")
        kind = "dense" if mask in DENSE else "masked"
        for i, rounds in enumerate(builds.values()):
            if len(rounds) < MIN_ROUNDS:
                continue
            ratio = rounds[0] / statistics.median(rounds[1:])
            ratios.setdefault((mode, kind, "first" if i == 0 else "others"), []).append(ratio)
    return ratios


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, median, q3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="tools/ab_compare.py --json files")
    args = ap.parse_args()
    merged = {}
    for path in args.files:
        with open(path) as f:
            for key, values in first_turn_ratios(json.load(f)).items():
                merged.setdefault(key, []).extend(values)
    print(f"{len(args.files)} files; first round / median of the later rounds")
    for (mode, kind, which), values in sorted(merged.items()):
        q1, median, q3 = quartiles(values)
        print(f"  {kind:6s} {mode}  {which:6s}  median {median:.3f}  quartiles {q1:.3f}-{q3:.3f}  "
              f"max {max(values):.3f}  ({len(values)} cases)")


if __name__ == "__main__":
    main()
