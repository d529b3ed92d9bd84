#!/usr/bin/env python3
"""Sequence-length scaling of the Hopper kernels (issue 16): causal_document (documents
of 1K-16K tokens, the same distribution at every length but 8K, where they are 1K-4K), B=1,
D=128, bf16, at N = 8K (the segment handling's cost at short lengths), 128K, 256K, 512K and 1M.

TFLOPs/s count unmasked (row, key) pairs only: fwd = 4*D*H*pairs, bwd = 2.5x fwd, so at a
fixed document distribution the per-pair rate should not fall with N. Times are medians of
CUDA-event-timed calls after a warm-up (benchmarks/bench_gpu.py's timer, L2 flushed before
each call). Peak memory: torch.cuda.max_memory_allocated over one forward + backward,
inputs included, and per token (flat when memory grows linearly).

    python benchmarks/bench_length.py --out DIR    # -> DIR/length.json, DIR/length.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import make_timer, total_unmasked_pairs  # noqa: E402

from paddle_flashmask import masks  # noqa: E402

LENGTHS = {"8k": 8 << 10, "128k": 128 << 10, "256k": 256 << 10, "512k": 512 << 10, "1m": 1 << 20}


def doc_lengths(rng, n, lo=1024, hi=16384):
    """Documents of lo..hi tokens (hi at most n // 2, so that every length has several) filling
    n >= 2 * lo: each draw leaves at least lo, and the last takes the rest once it is at most hi."""
    hi, lens, left = min(hi, n // 2), [], n
    while left > hi:
        lens.append(int(rng.integers(lo, min(hi, left - lo) + 1)))
        left -= lens[-1]
    return lens + [left]


def run_length(name, n, args, torch, bench):
    from paddle_flashmask.torch import _backward, _forward

    rng = np.random.default_rng(args.seed)
    idx_np = masks.causal_document_mask([doc_lengths(rng, n)]).startend_row_indices
    h, d = args.heads, 128
    dev = "cuda"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    q, k, v, do = (torch.randn(1, n, h, d, device=dev, dtype=torch.bfloat16) for _ in range(4))
    idx = torch.from_numpy(idx_np).to(dev)
    scale = d**-0.5
    out, lse = _forward(q, k, v, idx, None, True, False, scale)
    grads = _backward(q, k, v, out, lse, do, idx, None, True, False, scale, False)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del grads
    fwd_ms, bwd_ms = bench(lambda: _forward(q, k, v, idx, None, True, False, scale),
                           lambda: _backward(q, k, v, out, lse, do, idx, None, True, False, scale, False))
    pairs = total_unmasked_pairs(idx_np, True, h)
    fwd_flops = 4.0 * d * pairs
    row = {
        "length": name, "n": n, "heads": h, "head_dim": d, "pairs": pairs,
        "fwd_ms": fwd_ms, "bwd_ms": bwd_ms,
        "fwd_tflops": fwd_flops / fwd_ms / 1e9, "bwd_tflops": 2.5 * fwd_flops / bwd_ms / 1e9,
        "peak_bytes": int(peak), "peak_bytes_per_token": peak / n,
    }
    print(
        f"{name:>5} N={n:>8} fwd {row['fwd_ms']:8.2f} ms {row['fwd_tflops']:6.1f} TF/s | "
        f"bwd {row['bwd_ms']:8.2f} ms {row['bwd_tflops']:6.1f} TF/s | peak {peak / 2**30:6.2f} GiB "
        f"({row['peak_bytes_per_token']:.0f} B/token)",
        flush=True,
    )
    return row


def markdown(rows, ref_name="128k"):
    """The rows as a table, rates relative to length ref_name's (the first row's where it did not run)."""
    ref = next((r for r in rows if r["length"] == ref_name), rows[0])
    vs = f"vs {ref['length'].upper()}"
    lines = [
        f"| N | fwd ms | fwd TFLOPs/s | {vs} | bwd ms | bwd TFLOPs/s | {vs} | peak GiB | bytes/token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['length']} | {r['fwd_ms']:.2f} | {r['fwd_tflops']:.1f} | {r['fwd_tflops'] / ref['fwd_tflops']:.3f} | "
            f"{r['bwd_ms']:.2f} | {r['bwd_tflops']:.1f} | {r['bwd_tflops'] / ref['bwd_tflops']:.3f} | "
            f"{r['peak_bytes'] / 2**30:.2f} | {r['peak_bytes_per_token']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="8k,128k,256k,512k,1m")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=100.0, help="ms of warm-up calls")
    ap.add_argument("--rep", type=float, default=400.0, help="ms of timed calls (at least --min-reps)")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="rounds of timed blocks (bench_gpu.make_timer)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    bench = make_timer(args, torch, "cuda")
    rows = [run_length(name, LENGTHS[name], args, torch, bench) for name in args.lengths.split(",")]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "mask": "causal_document, documents of 1K-16K tokens (1K-4K at 8K)"}
    (out / "length.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = f"Length scaling on {meta['device']}, {meta['mask']}, B=1, H={args.heads}, D=128, bf16\n\n" + markdown(rows)
    (out / "length.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
