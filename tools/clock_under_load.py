#!/usr/bin/env python3
"""The clock and power each kernel holds under its own sustained load, beside its rate: ours
against FlashAttention-4 called directly (docs/perf-notes.md, "The clock under each kernel's
own load").

Under sustained load the H200's driver lowers the SM clock from 1980 MHz (the software power cap,
clock-event reason 0x4; perf-notes "Steady blocks"), the more power a kernel draws the lower: to
1545-1725 MHz at the board's 700 W for our kernels and FA4's (this tool's first run). A kernel that
draws more power than another for the same work then runs at a lower clock, and part of a gap in
TFLOPs/s is that clock, not cycles. For each call (ours, or several builds of ours side by side,
and FA4's forward and backward where FA4 runs without a mask_mod: full and causal) this runs a
block of --warmup ms of untimed calls and then --seconds of timed calls (CUDA events, L2 flushed
before each, as bench_gpu.py times), in two rounds whose order reverses, while a thread reads
nvidia-smi every --sample-ms. Per call it prints the median TFLOPs/s, the median SM clock and power
draw of the samples taken during its timed calls, and TFLOPs/s per GHz (the rate at equal clocks,
which ncu's cycle counts measure directly). Each build's forward output is checked against the
float32 reference first (bench_gpu.check_output).

Not a test (needs a GPU, FA4 for its rows):
    python tools/clock_under_load.py --configs 8k-128,8k-64 --out DIR   # -> DIR/clock_under_load.json
    python tools/clock_under_load.py --libs main=A.so,new=B.so --configs 32k-64 --masks global_sliding_window
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import ab_compare  # noqa: E402  (tools/ab_compare.py)
import bench_gpu  # noqa: E402

SMI_FIELDS = "clocks.sm,power.draw"
TIMED_BATCH = 20  # timed calls between checks of the block's elapsed time


def parse_smi_line(line: str):
    """(SM MHz, W) from one line of nvidia-smi's csv (noheader, nounits) of SMI_FIELDS, or None
    where a field is not a number ("[N/A]", a warning line)."""
    try:
        mhz, watts = (float(x) for x in line.split(","))
    except ValueError:
        return None
    return mhz, watts


def block_row(ms, smi, flops):
    """A call's summary: median TFLOPs/s of its timed calls (`ms`, each doing `flops`), the median
    SM clock and power of the samples `smi` ([(MHz, W)]) taken during them, and TFLOPs/s per GHz;
    the clock's fields None where no sample fell in the block."""
    tflops = flops / (statistics.median(ms) * 1e-3) / 1e12
    mhz = statistics.median(m for m, _ in smi) if smi else None
    return dict(calls=len(ms), tflops=tflops, sm_mhz=mhz,
                power_w=statistics.median(w for _, w in smi) if smi else None, samples=len(smi),
                tflops_per_ghz=tflops / (mhz / 1e3) if mhz else None)


class Sampler:
    """nvidia-smi's SM clock (MHz) and power draw (W) every `period_ms`, each sample stamped with
    time.monotonic() on arrival."""

    def __init__(self, period_ms: int, device_index: int = 0):
        cmd = ["nvidia-smi", f"--id={device_index}", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits",
               "-lms", str(period_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.samples: list[tuple[float, float, float]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            sample = parse_smi_line(line)
            if sample is not None:
                self.samples.append((time.monotonic(), *sample))

    def between(self, t0: float, t1: float):
        return [(m, w) for t, m, w in self.samples if t0 <= t <= t1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def steady_block(torch, fn, warmup_ms, seconds, flush):
    """Per-call ms of fn's timed calls and the monotonic window they ran in, after warmup_ms of
    untimed calls."""
    t_end = time.monotonic() + warmup_ms / 1e3
    while time.monotonic() < t_end:
        fn()
        torch.cuda.synchronize()
    ms, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        events = [bench_gpu.timed_call(torch, fn, flush) for _ in range(TIMED_BATCH)]
        torch.cuda.synchronize()
        ms += [start.elapsed_time(end) for start, end in events]
    return ms, t0, time.monotonic()


def with_library(lib, fn):
    """fn with the torch binding pointed at `lib` (one of the builds loaded by --libs) for the call
    (the backward's too, which autograd runs inside it)."""
    from paddle_flashmask.torch import _lib

    def call():
        _lib._lib = lib
        return fn()

    return call


def calls_for(torch, cfg, mask_name, x, libs):
    """{(impl, direction): fn} for ours (each build of `libs`, {name: library}) and, on a dense
    mask, FA4 called directly."""
    from paddle_flashmask.torch import flashmask_attention

    n, b, d, h = bench_gpu.CONFIGS[cfg]
    spec = bench_gpu.build_mask(mask_name, n, b, h)
    causal = bool(spec.causal)
    idx = bench_gpu.ours_indices(mask_name, torch.from_numpy(spec.startend_row_indices).to("cuda"))
    impls = {name: with_library(lib, lambda: flashmask_attention(x.q, x.k, x.v, idx, causal=causal))
             for name, lib in libs.items()}
    if bench_gpu.HAVE_FA4 and mask_name in bench_gpu.DENSE_MASKS:
        def fa4():
            out = bench_gpu.fa4_attention(x.q, x.k, x.v, causal=causal, softmax_scale=d**-0.5)
            return out[0] if isinstance(out, tuple) else out

        impls["fa4direct"] = fa4
    calls = {}
    for name, grad_fn in impls.items():
        def fwd(grad_fn=grad_fn):
            with torch.no_grad():
                return grad_fn()

        if name in libs:  # every build's output against the float32 reference before it is timed
            bench_gpu.check_output(torch, x.q.detach(), x.k.detach(), x.v.detach(), spec, d**-0.5, fwd(),
                                   f"{name} {cfg} {mask_name}")

        fwd_call, bwd_call, _ = x.three_calls(fwd, grad_fn)
        if name in libs:  # the backward's graph came from this build's forward; its calls use it too
            fwd_call, bwd_call = with_library(libs[name], fwd_call), with_library(libs[name], bwd_call)
        calls[(name, "fwd")], calls[(name, "bwd")] = fwd_call, bwd_call
    pairs = bench_gpu.total_unmasked_pairs(spec.startend_row_indices, spec.causal, h)
    return calls, 4.0 * d * pairs


def load_libraries(spec):
    """{name: library} of --libs (ab_compare.load_builds), or {"ours": the binding's default build}."""
    from paddle_flashmask.torch import _lib

    if not spec:
        return {"ours": _lib.load()}

    def error(message):
        raise SystemExit(message)

    return ab_compare.load_builds(spec, error)


def run(args, torch, sampler):
    libs = load_libraries(args.libs)
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    rows = []
    for cfg in args.configs.split(","):
        n, b, d, h = bench_gpu.CONFIGS[cfg]
        x = bench_gpu.Inputs(torch, b, n, h, d, "cuda")
        for mask_name in args.masks.split(","):
            # Progress before the output checks and warm-up, the first calls of each build: a build
            # that hangs shows where (perf-notes v88: nothing was printed for 150 s).
            print(f"{cfg} {mask_name}: checking and warming {', '.join(libs)}", file=sys.stderr, flush=True)
            calls, fwd_flops = calls_for(torch, cfg, mask_name, x, libs)
            keys = list(calls)
            for fn in calls.values():  # compile and warm every call first
                fn()
            torch.cuda.synchronize()
            got = {key: ([], []) for key in keys}
            for r in range(args.rounds):
                for key in keys if r % 2 == 0 else reversed(keys):
                    ms, t0, t1 = steady_block(torch, calls[key], args.warmup, args.seconds, flush)
                    got[key][0].extend(ms)
                    got[key][1].extend(sampler.between(t0, t1))
            for (impl, direction), (ms, smi) in got.items():
                flops = fwd_flops * (2.5 if direction == "bwd" else 1.0)
                row = dict(config=cfg, mask=mask_name, impl=impl, direction=direction, **block_row(ms, smi, flops))
                rows.append(row)
                print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="8k-128,8k-64", help=f"from {', '.join(bench_gpu.CONFIGS)}")
    ap.add_argument("--masks", default="full,causal",
                    help=f"from {', '.join(bench_gpu.MASKS)}; FA4 (called without a mask_mod) on full and causal")
    ap.add_argument("--libs", default=None,
                    help="name=path,... builds of ours to time side by side (default: the binding's build)")
    ap.add_argument("--warmup", type=float, default=300.0, help="ms of untimed calls before each timed block")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds of timed calls per block")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of blocks, the order reversed in odd ones")
    ap.add_argument("--sample-ms", type=int, default=20, help="nvidia-smi's sampling period")
    ap.add_argument("--out", default="output")
    args = ap.parse_args()
    unknown = set(args.masks.split(",")) - set(bench_gpu.MASKS)
    if unknown:
        ap.error(f"--masks: {', '.join(sorted(unknown))} not among {', '.join(bench_gpu.MASKS)}")
    import torch

    sampler = Sampler(args.sample_ms, torch.cuda.current_device())
    try:
        rows = run(args, torch, sampler)
    finally:
        sampler.stop()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clock_under_load.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
