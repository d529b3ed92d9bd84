#!/usr/bin/env python3
"""What a call without a mask pays for its bounds (issue 17, perf-notes v51).

A call with no startend_row_indices runs on bounds that mask nothing beyond `causal`
(_frontend._no_mask_tensor). Times the forward of such a call three ways in turns, in one
process, on the same inputs: the bounds rebuilt from the host on every call (the cache
emptied before each, as before v51), taken from the cache, and given by the caller as a device
tensor (what bench_gpu.py passes on the masked rows). Medians of CUDA-event-timed calls
with L2 flushed before each (bench_gpu.interleaved_event_ms), TFLOPs/s of unmasked pairs.

    python tools/no_mask_overhead.py --configs 8k-128,8k-256 --masks full,causal [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="8k-128,8k-256", help="bench_gpu.py configs")
    ap.add_argument("--masks", default="full,causal", help="masks without bounds of their own (bench_gpu DENSE_MASKS)")
    ap.add_argument("--reps", type=int, default=15, help="timed calls per way (taken in turns)")
    ap.add_argument("--json", help="write the rates here")
    args = ap.parse_args()

    import torch

    from bench_gpu import CONFIGS, DENSE_MASKS, build_mask, interleaved_event_ms, total_unmasked_pairs
    from paddle_flashmask import _frontend
    from paddle_flashmask.torch import flashmask_attention

    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    results = {}
    for cfg in args.configs.split(","):
        n, b, d, h = CONFIGS[cfg]
        g = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        for mask in args.masks.split(","):
            if mask not in DENSE_MASKS:
                ap.error(f"--masks: `{mask}` has bounds of its own; choose from {DENSE_MASKS}")
            spec = build_mask(mask, n, b, h)
            given = torch.from_numpy(spec.startend_row_indices).cuda()
            flops = 4.0 * d * total_unmasked_pairs(spec.startend_row_indices, spec.causal, h)

            def call(idx, rebuild):
                def fn():
                    if rebuild:  # as before v51: no bounds kept from an earlier call
                        _frontend._no_mask_cache.clear()
                    with torch.no_grad():
                        flashmask_attention(q, k, v, idx, causal=spec.causal)
                return fn

            ways = {"rebuilt": call(None, True), "cached": call(None, False), "given": call(given, False)}
            for fn in ways.values():
                fn()
                fn()
            torch.cuda.synchronize()
            ms = interleaved_event_ms(torch, list(ways.values()), args.reps, flush)
            rates = {name: flops / (t * 1e-3) / 1e12 for name, t in zip(ways, ms)}
            results[f"{cfg}/{mask}"] = rates
            print(f"{cfg} {mask:8s} fwd " + "  ".join(f"{name} {r:6.1f}" for name, r in rates.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
