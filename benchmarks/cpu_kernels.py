"""The CPU kernel timed without Paddle ("kernel-only"), beside torch's CPU flash attention.

bench_cpu.py times the op through Paddle, which only this project's own machines have.
This script builds benchmarks/cpu_kernel_timing.cc with csrc/cpu (the flags of
tools/cpu_flags.py) into build/cpu_kernel_timing, writes bench_gpu.py's masks to files and
times the C entry points on them, so the kernel can be measured on any machine with a C++
compiler (the GPU machine's host, a Xeon with AMX, has no Paddle) and without Paddle's
share of a call. Same problem as bench_cpu.py: B=1, H=8, D=64, fwd+bwd, GFLOP/s per
unmasked pair (3.5 * 4 * D * H * pairs / time).

Per size and dtype, one process times every mask (causal first), their calls in turns
after a warm-up, --calls timed calls each; a mask's ratio to causal is that of their
median times in the process. --rounds such processes, each followed, when torch is
importable, by torch's `scaled_dot_product_attention(is_causal=True)` fwd+bwd in a process
of its own (bench_cpu.py's child, same thread count). The tables give the median over the
rounds of each process's median rate and ratio. Threads: OMP_NUM_THREADS=--threads for both
(run under `taskset` to pin them).

Not a test:  python benchmarks/cpu_kernels.py [--sizes 4096 8192] [--masks causal,...]
             [--dtypes float32 bfloat16] [--threads 2] [--calls 5] [--rounds 3]
             [--no-torch] [--out cpu_kernels]
Writes benchmarks/results/<out>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)

import cpu_flags  # noqa: E402  (tools/cpu_flags.py)
from bench_cpu import (  # noqa: E402
    BATCH, DTYPES, HEAD_DIM, HEADS, gflops, machine, mask_spec, run_child, torch_version, write_results,
)
from bench_gpu import ALIGNED_MASKS, MASKS  # noqa: E402

BUILD = os.path.join(ROOT, "build")
BINARY = os.path.join(BUILD, "cpu_kernel_timing")
DEFAULT_MASKS = ("causal", "share_question", "causal_document", "prefix_lm_document", "sliding_window")


def compiler() -> str:
    return os.environ.get("CXX", "g++")


def compiler_version() -> str:
    out = subprocess.run([compiler(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else compiler()


def build() -> str:
    """Compiles the timing program when it is missing or older than a source."""
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cc")))
    sources.append(os.path.join(HERE, "cpu_kernel_timing.cc"))
    inputs = sources + glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True)
    inputs.append(cpu_flags.__file__)
    if os.path.exists(BINARY) and os.path.getmtime(BINARY) >= max(map(os.path.getmtime, inputs)):
        return BINARY
    os.makedirs(BUILD, exist_ok=True)
    cxx = compiler()
    include = ["-I" + os.path.join(ROOT, "csrc", "include"), "-I" + os.path.join(ROOT, "csrc")]
    cmd = [cxx, *cpu_flags.compile_flags(cxx), *include, *sources, "-o", BINARY, *cpu_flags.LINK]
    print("building", os.path.relpath(BINARY, ROOT), flush=True)
    subprocess.run(cmd, check=True)
    return BINARY


def mask_file(name: str, n: int) -> str:
    """bench_gpu.py's mask as cpu_kernel_timing reads it (see its header comment)."""
    spec = mask_spec(name, n)
    bounds = np.ascontiguousarray(spec.startend_row_indices, dtype=np.int32)
    path = os.path.join(BUILD, "cpu_kernel_masks", f"{name}_{n}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        np.array([bounds.shape[1], bounds.shape[3], int(spec.causal)], np.int32).tofile(f)
        bounds.tofile(f)
    return path


def time_ours(binary, masks, files, n, dtype, threads, calls) -> dict:
    """Median fwd+bwd seconds per mask (its file in `files`), from one process that calls
    them in turns."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [binary, dtype, str(n), str(HEADS), str(HEAD_DIM), str(calls), *files]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return {m: statistics.median(f + b for f, b in zip(r["fwd_ms"], r["bwd_ms"])) / 1e3
            for m, r in zip(masks, rows)}  # fmt: skip


def run(args) -> dict:
    binary = build()
    have_torch = not args.no_torch and torch_version() is not None
    files = {n: [mask_file(m, n) for m in args.masks] for n in args.sizes}  # written once
    rounds = {}  # (n, dtype) -> per round: {"ours": {mask: s}, "torch": s}
    for round_ in range(args.rounds):
        for n in args.sizes:
            for dtype in args.dtypes:
                entry = {"ours": time_ours(binary, args.masks, files[n], n, dtype, args.threads, args.calls)}
                if have_torch:
                    entry["torch"] = run_child("torch_causal", "causal", n, dtype, args.threads, args.calls)["median_s"]
                rounds.setdefault((n, dtype), []).append(entry)
                causal = gflops("causal", n, entry["ours"]["causal"])
                line = f"round {round_} N={n} {dtype:8s} causal {causal:5.0f} GFLOP/s"
                if have_torch:
                    line += f" (torch {gflops('causal', n, entry['torch']):5.0f})"
                for m in args.masks[1:]:
                    line += f", {m} {gflops(m, n, entry['ours'][m]) / causal:.2f}"
                print(line, flush=True)
    rows = []
    for (n, dtype), entries in rounds.items():
        for mask in args.masks:
            rates = [gflops(mask, n, e["ours"][mask]) for e in entries]
            ratios = [r / gflops("causal", n, e["ours"]["causal"]) for r, e in zip(rates, entries)]
            rows.append({"impl": "ours", "mask": mask, "n": n, "dtype": dtype, "gflops": statistics.median(rates),
                         "gflops_rounds": rates, "ratio": statistics.median(ratios), "ratio_rounds": ratios})
        if have_torch:
            rates = [gflops("causal", n, e["torch"]) for e in entries]
            rows.append({"impl": "torch_causal", "mask": "causal", "n": n, "dtype": dtype,
                         "gflops": statistics.median(rates), "gflops_rounds": rates})
    return {"rows": rows, "torch": torch_version() if have_torch else None}


def markdown(rows, meta) -> str:
    def row(impl, mask, n, dtype):
        return next((r for r in rows if (r["impl"], r["mask"], r["n"], r["dtype"]) == (impl, mask, n, dtype)), None)

    lines = [
        "# The CPU kernel without Paddle, beside torch's CPU flash attention",
        "",
        f"Generated by `benchmarks/cpu_kernels.py` on {meta['date']}. Machine: {meta['machine']}; "
        f"{meta['threads']} threads (OMP_NUM_THREADS); compiler {meta['compiler']}; torch {meta['torch']}; "
        f"{meta['rounds']} rounds of "
        f"{meta['calls']} timed calls. B={BATCH}, H={HEADS}, D={HEAD_DIM}, fwd+bwd GFLOP/s per unmasked pair "
        "(median over the rounds of each process's median); a mask's ratio is to causal in the same process."
        + (f" FLASHMASK_CPU_ISA={meta['cpu_isa']}." if meta.get("cpu_isa") else ""),
        "",
        "| N | dtype | ours causal | torch flash causal | " + " | ".join(meta["masks"][1:]) + " |",
        "|---|---|---:|---:|" + "---:|" * (len(meta["masks"]) - 1),
    ]
    for n in meta["sizes"]:
        for dtype in meta["dtypes"]:
            ours, torch = row("ours", "causal", n, dtype), row("torch_causal", "causal", n, dtype)
            cells = [f"{ours['gflops']:.0f}", f"{torch['gflops']:.0f}" if torch else ""]
            cells += [f"{row('ours', m, n, dtype)['ratio']:.2f}" for m in meta["masks"][1:]]
            lines.append(f"| {n} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--masks", default=",".join(DEFAULT_MASKS), help=f"from {', '.join(MASKS + list(ALIGNED_MASKS))}")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calls", type=int, default=5, help="timed calls per mask and process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default="cpu_kernels", help="results/<out>.md and .json")
    args = parser.parse_args()
    args.masks = ["causal"] + [m for m in args.masks.split(",") if m != "causal"]
    known = MASKS + list(ALIGNED_MASKS)
    unknown = [m for m in args.masks if m not in known]
    if unknown:
        parser.error(f"--masks: unknown {', '.join(unknown)} (from {', '.join(known)})")
    for name in ("threads", "calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    result = run(args)
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(), "torch": result["torch"],
            "threads": args.threads, "sizes": args.sizes, "dtypes": args.dtypes, "masks": args.masks,
            "calls": args.calls, "rounds": args.rounds, "cpu_isa": os.environ.get("FLASHMASK_CPU_ISA"),
            "compiler": compiler_version()}  # fmt: skip
    table = markdown(result["rows"], meta)
    print()
    print(table)
    write_results(args.out, table, {"meta": meta, "rows": result["rows"]})


if __name__ == "__main__":
    main()
