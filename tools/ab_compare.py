#!/usr/bin/env python3
"""A/B timing of several builds of libflashmask_cuda.so, interleaved in one process.

Separate benchmark runs of two builds differ by a few percent from GPU clock and
temperature drift alone (cuDNN itself moves 2-4% between runs), which is the size of
most kernel changes. Here every build is loaded side by side (ctypes, one library per
path) and the builds take turns, round after round (the order reversed every other
round), on the same inputs; each round's figure is the median of `--reps` calls timed
by CUDA events with L2 flushed before each, after --warmup ms of the first build's calls (the
clock the GPU holds under load). Prints the median over rounds and the range.
Every build's output is first checked against a float32 reference (bench_gpu.check_output),
but those named by --timing-only: diagnostic builds that leave work out on purpose.

    python tools/ab_compare.py --libs old=build/old/libflashmask_cuda.so,new=build/libflashmask_cuda.so \\
        --config 8k-128 --masks full,causal,sliding_window --modes fwd,bwd [--rounds 5] [--json out.json]

Configs and masks are those of benchmarks/bench_gpu.py; TFLOPs/s count unmasked pairs
only (fwd = 4*D*H*pairs, bwd = 2.5x fwd).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_builds(spec: str, error) -> dict:
    """{name: library} for --libs' "name=path,...", every build loaded side by side through the
    torch binding's loader (ctypes, one library per path); error(message) where an item is not
    name=path to an existing file. Point the binding at one with `_lib._lib = libs[name]`."""
    from paddle_flashmask.torch import _lib

    libs = {}
    for item in spec.split(","):
        name, _, path = item.partition("=")
        if not path or not os.path.isfile(path):
            error(f"--libs: `{item}` is not name=path to an existing library")
        os.environ["FLASHMASK_CUDA_LIB"] = path
        _lib._lib = None  # load this path next; earlier builds stay loaded under their names
        libs[name] = _lib.load()
    return libs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--libs", required=True, help="name=path,name=path,... (two or more builds)")
    ap.add_argument("--config", default="8k-128", help="a bench_gpu.py config, e.g. 8k-128")
    ap.add_argument("--masks", default="full,causal", help="comma-separated bench_gpu.py mask names")
    ap.add_argument("--modes", default="fwd,bwd", help="fwd and/or bwd")
    ap.add_argument("--rounds", type=int, default=5, help="turns per build")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per turn (median)")
    ap.add_argument("--warmup", type=float, default=300.0,
                    help="ms of the first build's calls before each mode's first round (the clock under load)")
    ap.add_argument("--timing-only", default="",
                    help="comma-separated builds whose outputs are not checked: diagnostic builds that leave "
                         "out work (docs/perf-notes.md), timed only")
    ap.add_argument("--json", help="write every turn's TFLOPs/s here")
    args = ap.parse_args()

    import torch

    from bench_gpu import CONFIGS, build_mask, check_output, median_event_ms, ours_indices, total_unmasked_pairs
    from paddle_flashmask.torch import _lib, flashmask_attention

    libs = load_builds(args.libs, ap.error)
    for mode in args.modes.split(","):
        if mode not in ("fwd", "bwd"):
            ap.error(f"--modes: `{mode}` is neither fwd nor bwd")

    n, b, d, h = CONFIGS[args.config]
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")

    timing_only = set(filter(None, args.timing_only.split(",")))
    turns = {}
    for mask in args.masks.split(","):
        spec = build_mask(mask, n, b, h)
        idx = ours_indices(mask, torch.from_numpy(spec.startend_row_indices).cuda())
        fwd_flops = 4.0 * d * total_unmasked_pairs(spec.startend_row_indices, spec.causal, h)
        for name, lib in libs.items():  # every build's output checked (but --timing-only's) before any is timed
            _lib._lib = lib
            with torch.no_grad():
                out = flashmask_attention(q, k, v, idx, causal=spec.causal)
            if name not in timing_only:
                check_output(torch, q.detach(), k.detach(), v.detach(), spec, d**-0.5, out, f"{name} {mask}")
        def call(name, mode):
            """Build `name`'s timed call of `mode` and its FLOP multiple of the forward's."""
            _lib._lib = libs[name]  # the binding calls whichever library this holds
            if mode == "fwd":
                def fn():
                    with torch.no_grad():
                        flashmask_attention(q, k, v, idx, causal=spec.causal)
                return fn, 1.0
            out = flashmask_attention(q, k, v, idx, causal=spec.causal)  # this build's forward

            def fn():
                for x in (q, k, v):
                    x.grad = None
                out.backward(do, retain_graph=True)
            return fn, 2.5

        for mode in args.modes.split(","):
            res = {name: [] for name in libs}
            # The first build's calls until the GPU holds its clock under load: after the mask's
            # set-up it runs faster for ~0.1 s (docs/perf-notes.md, "Timed first", "Steady blocks").
            fn, _ = call(next(iter(libs)), mode)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.warmup / 1e3:
                fn()
                torch.cuda.synchronize()
            for r in range(args.rounds):
                for name in (list(libs) if r % 2 == 0 else list(libs)[::-1]):
                    fn, mult = call(name, mode)
                    fn()
                    fn()
                    torch.cuda.synchronize()
                    res[name].append(mult * fwd_flops / (median_event_ms(torch, fn, args.reps, flush) * 1e-3) / 1e12)
            line = f"{args.config} {mask:22s} {mode}"
            for name, vals in res.items():
                line += f"  {name} {statistics.median(vals):6.1f} [{min(vals):.0f}-{max(vals):.0f}]"
            print(line, flush=True)
            turns[f"{args.config}/{mask}/{mode}"] = res
    if args.json:
        with open(args.json, "w") as f:
            json.dump(turns, f, indent=1)


if __name__ == "__main__":
    main()
