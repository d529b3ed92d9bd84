#!/usr/bin/env python3
"""Where a masked call's time goes: a fit of bench_gpu.py's results to the tiles the Hopper
kernels visit.

For each mask of a results JSON (benchmarks/results/gpu_*.json), this builds the same mask as
bench_gpu.py (same seed), counts the tiles of the Hopper kernels' shapes that hold an unmasked
pair (whole: every pair unmasked; partial: some) and the work items, and fits each direction's
measured time as

    time = c_whole * whole_tiles + c_partial * partial_tiles + c_item * items

by least squares over the masks that run with bounds (full and causal run without a mask, on
other paths, and random_eviction has a mask per head; the three are left out of the fit and
shown against its prediction). Every mask of one configuration has the same items (every
query block in the forward, every key block in the backward), so c_item also carries what a
call costs per token whatever the mask: the backward's prep, accumulator memset and dQ
conversion kernels (docs/perf-notes.md, v26 and v53). The tile shapes are the kernels':
forward query block x key tile, backward query tile x key block (csrc/cuda/flashmask_launch.cuh,
KernelChoice and BwdSm90Config), the forward's blocks shifted back as the kernel chooses per call
(D=64: the cheapest of three shifts by its own cost weights) or as --fwd-row-shift fixes them;
TFLOPs/s count unmasked pairs (fwd 4*D*H*pairs, bwd 2.5x).

Per mask it also prints the forward's consumer-tiles (64 rows x a key tile) whose rows see none of
the tile's keys and the share of them the consumers pass (idle_consumer_tiles; perf-notes v83).
It then prints each mask's ceiling under these kernels' tiles: its fwd+bwd rate with partial
tiles at a whole tile's cost and no cost per item, the backward's fixed kernels kept
(--bwd-fixed-ms, the sum of their times in the v26 timeline at 128K tokens and H*D = 4096),
as a fraction of the full mask's measured fwd+bwd rate (issue 17's 0.8 rule).

Not a test:  python tools/tile_cost_fit.py benchmarks/results/gpu_d128_8k_v85.json [...]
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import re
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402
from paddle_flashmask.masks.dense import normalized_bounds, to_dense  # noqa: E402

# (query rows, key columns) of a tile, per head dim: the Hopper forward's query block x key
# tile (D=64: three consumers, 192 rows) and the backward's query tile x key block.
FWD_TILE = {64: (192, 128), 128: (128, 128), 256: (128, 64)}
BWD_TILE = {64: (128, 128), 128: (64, 128), 256: (64, 64)}
NOT_COUNTED = ("random_eviction",)  # a mask per head: its dense form is H times the others'
LEFT_OUT = ("full", "causal") + NOT_COUNTED  # not fitted: other paths, or not counted
MIN_FITTED = 5  # masks, for three costs with residuals that mean something


def shift_candidates(n: int, d: int, rows: int) -> list[int]:
    """The row shifts the Hopper forward chooses from (csrc/cuda/preprocess.h, FwdRowShifts):
    D=64's three-consumer kernel first puts its ragged block first (v76b), then moves its blocks
    by one and two consumers' rows (kFwdShiftStep) more; the 128-row kernels do not shift."""
    if d != 64:
        return [0]
    first, step = (rows - n % rows) % rows, header_constant("kFwdShiftStep")
    return [(first + c * step) % rows for c in range(rows // step)]


@functools.lru_cache(maxsize=None)
def header_constant(name: str, header: str = "preprocess.h") -> int:
    """An integer constant of csrc/cuda/<header> (by default preprocess.h, the one place the row
    shift choice's numbers are written)."""
    text = (ROOT / "csrc" / "cuda" / header).read_text()
    return int(re.search(rf"\b{name} = (\d+)", text).group(1))


def kernel_shift_costs() -> dict:
    """The per-call choice's costs and margin (preprocess.h: kWholeTileCost, kPartialTileCost,
    kItemCost, kShiftMinSavingPct), read from the header, the one place they are written."""
    costs = {name: header_constant(f"k{name}Cost") for name in ("WholeTile", "PartialTile", "Item")}
    costs["MinSavingPct"] = header_constant("kShiftMinSavingPct")
    return costs


def kernel_tiles(spec, n: int, shape: tuple[int, int], shift: int, picked=None) -> tuple[np.ndarray, np.ndarray]:
    """The tiles the Hopper kernels visit and the whole ones among them, by the kernels' own test
    from each tile's columns' bound min/max (mask.h: classify_tile, conservative where the dense
    count is exact; a short last tile is never whole, KeyTileClassifier): bool arrays [mask row,
    query block, key tile] over the (batch, mask head) rows `picked` (all by default), the blocks
    of shape[0] rows shifted back by `shift`, the tiles of shape[1] keys. The forward's items are
    its query blocks; the backward's (shift 0), its key tiles. Equal sequence lengths (the
    bench's), no block_mask."""
    rows_per_block, cols = shape
    bounds = [b.reshape(-1, n) for b in normalized_bounds(spec.startend_row_indices, spec.causal, n)]
    picked = list(range(bounds[0].shape[0])) if picked is None else picked
    tiles = -(-n // cols)

    def per_tile(b, fill, reduce):  # [row, tile]: over the tile's valid columns only
        return reduce(np.pad(b[picked], ((0, 0), (0, tiles * cols - n)), constant_values=fill).reshape(len(picked), tiles, cols), 2)

    lo = [per_tile(b, np.iinfo(np.int32).max, np.min) for b in bounds]
    hi = [per_tile(b, np.iinfo(np.int32).min, np.max) for b in bounds]
    starts = np.arange(-(-(n + shift) // rows_per_block)) * rows_per_block - shift
    rb = np.maximum(starts, 0)[None, :, None]  # [1, block, 1] against [row, 1, tile]
    re_ = np.minimum(starts + rows_per_block, n)[None, :, None]
    c0 = (np.arange(tiles) * cols)[None, None, :]
    last_col = np.minimum(c0 + cols, n) - 1
    (lts_lo, lte_lo, uts_lo, ute_lo), (lts_hi, lte_hi, uts_hi, ute_hi) = ([x[:, None, :] for x in v] for v in (lo, hi))
    skip = ((lts_hi <= rb) & (lte_lo >= re_)) | ((uts_hi <= rb) & (ute_lo >= re_))
    clear = ((lts_lo >= re_) | (lte_hi <= rb)) & ((uts_lo >= re_) | (ute_hi <= rb))
    if spec.causal:
        skip |= c0 > re_ - 1
        clear &= last_col <= rb
    clear &= c0 + cols <= n
    visited = ~(skip | (re_ <= rb))  # a block past the last row visits nothing
    return visited, visited & clear


def idle_consumer_tiles(spec, n: int, shape: tuple[int, int], shift: int) -> dict:
    """The Hopper forward's consumer-tiles (a consumer's 64 rows x a key tile its block visits)
    over every batch row of the mask: all of them, those whose rows see none of the tile's keys
    (by kernel_tiles' test on the consumer's own rows: the kernel's idle_consumers), and those
    of them a consumer passes: before and after its busy range, found in the list's first and
    last kWarpSize tiles (tile_scheduler.cuh, record_busy_ranges; the list runs from the last
    key tile down). Consumers without a row of the sequence (they pass every tile) are left out."""
    rows, cols = shape
    visited, _ = kernel_tiles(spec, n, shape, shift)
    seen, _ = kernel_tiles(spec, n, (64, cols), shift % 64)  # 64-row blocks start at 64k - shift % 64
    window = header_constant("kWarpSize", "tile_list.cuh")
    counts = {"all": 0, "idle": 0, "passed": 0}
    for row, block in zip(*np.nonzero(visited.any(2))):
        tiles = np.nonzero(visited[row, block])[0][::-1]
        for c in range(rows // 64):
            sub = block * (rows // 64) + c - shift // 64
            if not 0 <= sub < seen.shape[1]:
                continue
            busy = seen[row, sub, tiles]
            count = len(tiles)
            front, back = busy[:window], busy[::-1][:window]
            begin = int(np.argmax(front)) if front.any() else min(count, window)
            end = count - int(np.argmax(back)) if back.any() else max(count - window, 0)
            counts["all"] += count
            counts["idle"] += int((~busy).sum())
            counts["passed"] += count if begin >= end else begin + count - end
    return counts


def kernel_shift_cost(spec, n: int, shape: tuple[int, int], shift: int) -> int:
    """One candidate's cost as fwd_shift_cost_kernel prices it: kernel_tiles on the (batch, mask
    head) rows the kernel samples (kFwdShiftSampleRows, spread evenly), an item per block that
    visits a tile."""
    w = kernel_shift_costs()
    n_rows = spec.startend_row_indices.shape[0] * spec.startend_row_indices.shape[1]
    sampled = min(n_rows, header_constant("kFwdShiftSampleRows"))
    visited, whole = kernel_tiles(spec, n, shape, shift, [i * n_rows // sampled for i in range(sampled)])
    partial, items = (visited & ~whole).sum(), visited.any(2).sum()
    return int(w["WholeTile"] * whole.sum() + w["PartialTile"] * partial + w["Item"] * items)


def chosen_shift(candidates: list[int], costs: list[int]) -> int:
    """The candidate the kernel takes from the candidates' costs (kernel_shift_cost): the least,
    where it saves the header's margin over the first, else the first (chosen_row_shift)."""
    best = costs.index(min(costs))
    return candidates[best if costs[best] * 100 <= costs[0] * (100 - kernel_shift_costs()["MinSavingPct"]) else 0]


def tile_counts(spec, n: int, shapes: list[tuple[int, int]], row_shifts: list[int] | None = None) -> list[dict]:
    """Per (rows, cols) shape, the whole and partial tiles and the unmasked pairs over every
    batch of the mask (one mask head), counted on its dense form in one pass over the row
    segments between every shape's block edges; a shape's blocks start at -row_shift (rows
    below 0 are not there). A short last key tile is partial, as the kernels mask its missing
    columns (KeyTileClassifier, QueryTileClassifier); a short (first or last) query block is
    whole where its rows see every key."""
    row_shifts = row_shifts or [0] * len(shapes)
    ends = [{e for e in range(rows - shift, n, rows) if e > 0} | {n} for (rows, _), shift in zip(shapes, row_shifts)]
    edges = [0] + sorted(set().union(*ends))
    counts = [{"whole": 0, "partial": 0, "pairs": 0} for _ in shapes]
    idx = spec.startend_row_indices
    for b in range(idx.shape[0]):
        one = spec._replace(startend_row_indices=idx[b:b + 1])
        block = [(np.zeros(-(-n // cols), np.int64), 0) for _, cols in shapes]  # per-tile pairs, rows
        for r0, r1 in zip(edges, edges[1:]):
            allowed = to_dense(one, rows=np.arange(r0, r1))[0, 0]
            segment = {}  # the segment's pairs per key tile, once per tile width (the shapes share them)
            for cols in {cols for _, cols in shapes}:
                padded = np.zeros((r1 - r0, -(-n // cols) * cols), bool)
                padded[:, :n] = allowed
                segment[cols] = padded.reshape(r1 - r0, -1, cols).sum((0, 2))
            for i, ((_, cols), c) in enumerate(zip(shapes, counts)):
                per_tile, rows_in = block[i]
                per_tile = per_tile + segment[cols]
                rows_in += r1 - r0
                if r1 in ends[i]:  # the shape's block ends here
                    full = per_tile == rows_in * cols
                    c["whole"] += int(full.sum())
                    c["partial"] += int(((per_tile > 0) & ~full).sum())
                    c["pairs"] += int(per_tile.sum())
                    per_tile, rows_in = np.zeros_like(per_tile), 0
                block[i] = (per_tile, rows_in)
    return counts


def fit_costs(design: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Least-squares costs (per whole tile, partial tile and item) of times = design @ costs."""
    if design.shape[0] < MIN_FITTED:
        raise ValueError(f"{design.shape[0]} masks to fit three costs: need at least {MIN_FITTED}")
    coef, *_ = np.linalg.lstsq(design, times, rcond=None)
    return coef


def fit_direction(rows: list[dict], counts: dict, direction: str, items: int) -> np.ndarray:
    """Prints the fit of one direction's times (ms) and each mask's residual; returns the
    coefficients (ms per whole tile, partial tile and item, one head's tiles times H)."""
    mult = 1.0 if direction == "fwd" else 2.5
    times, design, names = [], [], []
    for r in rows:
        c = counts[r["mask"]][direction]
        flops = mult * 4 * r["D"] * r["H"] * c["pairs"]  # the mask's head count folded in below
        times.append(flops / (r[f"ours_{direction}"] * 1e12) * 1e3)
        design.append([c["whole"] * r["H"], c["partial"] * r["H"], items * r["H"]])
        names.append(r["mask"])
    a, y = np.array(design, float), np.array(times)
    fitted = [i for i, n in enumerate(names) if n not in LEFT_OUT]
    coef = fit_costs(a[fitted], y[fitted])
    whole_ns = coef[0] * 1e6
    print(f"  {direction}: {whole_ns:.2f} ns per whole tile (all SMs), partial {coef[1] / coef[0]:.2f} whole tiles, "
          f"item and per-call {coef[2] / coef[0]:.2f} whole tiles ({coef[2] * items * rows[0]['H']:.2f} ms per call)")
    pred = a @ coef
    for i, n in enumerate(names):
        note = "" if i in fitted else "  (not fitted)"
        print(f"    {n:22s} {y[i]:8.3f} ms, fit {pred[i]:8.3f} ({100 * (pred[i] / y[i] - 1):+5.1f}%){note}")
    return coef


def print_ceilings(rows: list[dict], counts: dict, coef: dict, bwd_fixed_ms: float) -> None:
    """Each fitted mask's fwd+bwd rate with partial tiles at a whole tile's cost, no cost per
    item and the backward's fixed kernels, against the full mask's measured rate."""
    full = next(r for r in rows if r["mask"] == "full")["ours_fwdbwd"]
    print(f"  ceiling (partial = whole tile, no per-item cost, bwd fixed kernels {bwd_fixed_ms} ms), "
          f"fwd+bwd TFLOPs/s and / full's measured {full:.0f}:")
    for r in rows:
        if r["mask"] in LEFT_OUT:
            continue
        c = counts[r["mask"]]
        ms = sum(coef[d][0] * (c[d]["whole"] + c[d]["partial"]) * r["H"] for d in ("fwd", "bwd")) + bwd_fixed_ms
        rate = 3.5 * 4 * r["D"] * r["H"] * c["fwd"]["pairs"] / (ms * 1e-3) / 1e12
        print(f"    {r['mask']:22s} measured {r['ours_fwdbwd']:5.0f} ({r['ours_fwdbwd'] / full:.2f}), "
              f"ceiling {rate:5.0f} ({rate / full:.2f})")


def kernel_row_shift(spec, n: int, d: int, candidates: list[int]) -> int:
    """The shift the D=d forward takes among `candidates` on this mask: chosen_shift of each
    candidate's kernel_shift_cost."""
    return chosen_shift(candidates, [kernel_shift_cost(spec, n, FWD_TILE[d], c) for c in candidates])


def query_blocks(n: int, candidates: list[int], rows: int) -> int:
    """The forward's query blocks per (batch, head): those every candidate's rows fit in
    (preprocess.h: FwdRowShifts::query_blocks)."""
    return -(-(n + max(candidates)) // rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="bench_gpu.py result JSONs")
    ap.add_argument("--bwd-fixed-ms", type=float, default=1.74,
                    help="the backward's prep, memset and dQ conversion kernels, ms per call (default: "
                         "the v26 timeline's 0.52 + 0.47 + 0.75 at 128K tokens, H*D = 4096)")
    ap.add_argument("--fwd-row-shift", type=int, default=None,
                    help="count the forward's query blocks shifted back by this many rows for every mask "
                         "instead of the kernel's own choice (shift_candidates, chosen_shift): results of "
                         "record made before the choice (v80) took the first candidate, 64 at 8K and 32K")
    args = ap.parse_args()
    if args.fwd_row_shift is not None and args.fwd_row_shift < 0:
        ap.error(f"--fwd-row-shift must be >= 0, got {args.fwd_row_shift}")
    for path in args.results:
        rows = [r for r in json.load(open(path))["rows"] if "ours_fwd" in r]
        n, b, d = rows[0]["N"], rows[0]["B"], rows[0]["D"]
        fwd_rows = FWD_TILE[d][0]
        fixed = args.fwd_row_shift is not None
        candidates = [args.fwd_row_shift] if fixed else shift_candidates(n, d, fwd_rows)
        print(f"{path}: N={n}, B={b}, H={rows[0]['H']}, D={d}, forward blocks shifted back by "
              + (f"{args.fwd_row_shift} rows" if fixed else f"the cheapest of {candidates} rows per mask"))
        counts, shifts, idles = {}, {}, {}
        for r in rows:
            if r["mask"] in NOT_COUNTED:
                continue
            spec = bench_gpu.build_mask(r["mask"], n, b, r["H"])
            shift = candidates[0] if fixed else kernel_row_shift(spec, n, d, candidates)
            fwd, bwd = tile_counts(spec, n, [FWD_TILE[d], BWD_TILE[d]], [shift, 0])
            shifts[r["mask"]] = shift
            counts[r["mask"]] = {"fwd": fwd, "bwd": bwd}
            idles[r["mask"]] = idle_consumer_tiles(spec, n, FWD_TILE[d], shift)
        if len(candidates) > 1:
            print("  shift per mask: " + ", ".join(f"{m} {s}" for m, s in shifts.items()))
        for mask, c in counts.items():
            idle = idles[mask]
            print(f"  {mask:22s} forward whole {c['fwd']['whole']:7d}, partial {c['fwd']['partial']:7d} "
                  f"(all {b} batch rows, one head); consumer-tiles idle {100 * idle['idle'] / idle['all']:.1f}%, "
                  f"passed {100 * idle['passed'] / idle['all']:.1f}%")
        rows = [r for r in rows if r["mask"] in counts]
        if sum(r["mask"] not in LEFT_OUT for r in rows) < MIN_FITTED:
            print(f"  fewer than {MIN_FITTED} masks with bounds: not fitted")
            continue
        coef = {"fwd": fit_direction(rows, counts, "fwd", b * query_blocks(n, candidates, fwd_rows)),
                "bwd": fit_direction(rows, counts, "bwd", b * -(-n // BWD_TILE[d][1]))}
        print_ceilings(rows, counts, coef, args.bwd_fixed_ms)


if __name__ == "__main__":
    main()
