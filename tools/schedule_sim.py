#!/usr/bin/env python3
"""The persistent Hopper kernels' schedules, simulated: how much of a call's time the end of its
item order leaves the SMs idle, with the fixed order and with the tail order
(csrc/cuda/tail_order.cuh, perf-notes v81).

For a bench_gpu.py configuration and masks, this counts every work item's tiles by the kernels'
own test (tile_cost_fit.kernel_tiles): the forward's items are query blocks of FWD_TILE rows,
shifted as the kernel chooses (tile_cost_fit.kernel_row_shift), the backward's are key blocks over
query tiles of BWD_TILE rows. It orders them as the kernels take them (heads in order; inside a
head the forward's blocks by rank key, preprocess.h: fwd_rank_key, and the backward's key blocks in
sequence order), then hands them out to `--sms` SMs, each taking the next item when it finishes
one, an item costing its tiles plus --item-cost tiles (the fit's boundary cost: 0.73 forward, 2.4
backward at D=64; tile_cost_fit_8k.txt, perf-notes v26). It prints, per mask and direction, the
time past the ideal (every SM busy to the end) with the fixed order and with the tail order, whose
rule and constants are read from tail_order.cuh, and how many items that order moves.

A model of the schedule only: it knows no L2, no per-item differences in cost per tile, nothing of
how a moved item's first tiles run beside other heads' (v81's backward gained nothing of the
1.7% this predicts at 32K).

Not a test:  python tools/schedule_sim.py --config 8k-64 --masks global_sliding_window,causal
"""

from __future__ import annotations

import argparse
import heapq
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import tile_cost_fit  # noqa: E402
from tile_cost_fit import BWD_TILE, FWD_TILE, bench_gpu  # noqa: E402

HEADER = "tail_order.cuh"
ITEM_COST = {"fwd": 0.73, "bwd": 2.4}  # tiles; the fit's per-item costs at D=64 (8K)


def moved_to_front(length: float, after: float, items_after: int, sms: int) -> bool:
    """tail_order.cuh's rule: the item outlasts the work after it spread over the SMs, and is at
    least kTailLongFactor times the mean length from it to the end."""
    factor = tile_cost_fit.header_constant("kTailLongFactor", HEADER)
    return length * sms > after and length * (items_after - 1) >= factor * after


def tail_order(lengths: list[int], sms: int) -> tuple[list[int], int]:
    """The items in the order tail_order_kernel gives them (of the last kTailWindow, the moved ones
    first, each group keeping its order), and how many moved."""
    window = min(len(lengths), tile_cost_fit.header_constant("kTailWindow", HEADER))
    begin, after, moved = len(lengths) - window, 0, set()
    for i in range(len(lengths) - 1, begin - 1, -1):
        if moved_to_front(lengths[i], after, len(lengths) - 1 - i, sms):
            moved.add(i)
        after += lengths[i]
    return sorted(moved) + [i for i in range(len(lengths)) if i not in moved], len(moved)


def makespan(lengths: list[int], order: list[int], sms: int, item_cost: float) -> float:
    """When the last SM finishes, each taking the next item of `order` as it finishes one."""
    free = [0.0] * sms
    for i in order:
        t = heapq.heappop(free)
        heapq.heappush(free, t + lengths[i] + (item_cost if lengths[i] > 0 else 0.0))
    return max(free)


def item_lengths(spec, n: int, heads: int, d: int, direction: str) -> list[int]:
    """Every item's tiles in the order the kernel takes them (one mask head per batch row, shared
    by the heads, as the bench's masks but random_eviction)."""
    if direction == "fwd":
        candidates = tile_cost_fit.shift_candidates(n, d, FWD_TILE[d][0])
        shift = tile_cost_fit.kernel_row_shift(spec, n, d, candidates)
        visited, _ = tile_cost_fit.kernel_tiles(spec, n, FWD_TILE[d], shift)
        blocks = tile_cost_fit.query_blocks(n, candidates, FWD_TILE[d][0])
        per_row = []
        for v in visited:  # [block, tile]: by rank key, largest first (span start, then count)
            count = np.pad(v.sum(1), (0, blocks - v.shape[0]))  # the chosen shift's empty last block
            v = np.pad(v, ((0, blocks - v.shape[0]), (0, 0)))
            first = np.where(count > 0, v.argmax(1), -1)
            per_row.append([int(count[m]) for m in sorted(range(len(count)), key=lambda m: (first[m], count[m], m),
                                                          reverse=True)])
    else:
        visited, _ = tile_cost_fit.kernel_tiles(spec, n, BWD_TILE[d], 0)
        per_row = [[int(c) for c in v.sum(0)] for v in visited]
    return [length for row in per_row for _ in range(heads) for length in row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="8k-64", help="a bench_gpu.py config, e.g. 32k-64")
    ap.add_argument("--masks", default="global_sliding_window,causal,document,full")
    ap.add_argument("--sms", type=int, default=132, help="the persistent grid (the H200's SMs)")
    args = ap.parse_args()
    cfg = bench_gpu.CONFIGS.get(args.config)
    if cfg is None:
        ap.error(f"--config: {args.config!r} is not one of {sorted(bench_gpu.CONFIGS)}")
    n, b, d, h = cfg
    print(f"{args.config}: N={n}, B={b}, H={h}, D={d}, {args.sms} SMs; time past the ideal, fixed order -> tail order")
    for mask in args.masks.split(","):
        if mask == "random_eviction":
            print(f"  {mask}: a mask per head, not simulated")
            continue
        spec = bench_gpu.build_mask(mask, n, b, h)
        for direction in ("fwd", "bwd"):
            lengths = item_lengths(spec, n, h, d, direction)
            ideal = sum(x + (ITEM_COST[direction] if x else 0) for x in lengths) / args.sms
            fixed = makespan(lengths, range(len(lengths)), args.sms, ITEM_COST[direction]) / ideal - 1
            order, moved = tail_order(lengths, args.sms)
            tail = makespan(lengths, order, args.sms, ITEM_COST[direction]) / ideal - 1
            print(f"  {mask:22s} {direction}: {len(lengths)} items, longest {max(lengths)} tiles; "
                  f"{100 * fixed:.2f}% -> {100 * tail:.2f}% ({moved} moved)")


if __name__ == "__main__":
    main()
