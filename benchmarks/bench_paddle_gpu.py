#!/usr/bin/env python3
"""What the Paddle op adds over its kernels: fwd and fwd+bwd through Paddle (custom op,
paddle.grad) against the torch binding (ctypes, torch.autograd) on the same kernels and
the same inputs.

Each side runs in its own process (paddlepaddle-gpu 2.6.2 is a CUDA 11.8 build and
torch a CUDA 13 one; separate processes keep their runtimes apart), rounds alternate
between the sides so that both see the same card state, and each round times every
call with CUDA events recorded on that framework's current stream after a warm-up, the
L2 flushed before each call (a cudaMemsetAsync of a buffer larger than L2, as
bench_gpu.py's flush). The events and the flush come from the CUDA runtime itself
through ctypes (Paddle 2.6's Event has no elapsed time, and its own kernels do not run
on Hopper), the same code on both sides. Inputs are larger than L2 (B=4, N=8K, H=16,
D=128 bf16: 128 MiB per tensor), drawn from one seed.

    python benchmarks/bench_paddle_gpu.py --out DIR        # both sides -> DIR/paddle_gpu.json
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import json
import os
import pathlib
import statistics
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gpu import build_mask, total_unmasked_pairs  # noqa: E402

SHAPE = dict(n=8192, b=4, h=16, d=128)
MASKS = ("causal", "causal_document")
SIDES = ("paddle", "torch")
L2_FLUSH_BYTES = 256 << 20  # larger than the L2 of any GPU this runs on (H100/H200: 50-60 MB)


class CudaEvents:
    """cudaEventRecord / cudaEventElapsedTime on a given stream handle, and an L2 flush
    (cudaMemsetAsync of an L2_FLUSH_BYTES buffer) on that stream."""

    def __init__(self, stream: int):
        self._rt = ctypes.CDLL(self._find_cudart())
        self._stream = ctypes.c_void_p(stream)
        self._rt.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self._rt.cudaMemsetAsync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
        self._flush_buffer = ctypes.c_void_p()
        self._check(self._rt.cudaMalloc(ctypes.byref(self._flush_buffer), L2_FLUSH_BYTES), "cudaMalloc")

    @staticmethod
    def _find_cudart():
        found = [os.environ.get("FLASHMASK_CUDART"), ctypes.util.find_library("cudart")]
        found += sorted(glob.glob("/usr/local/cuda*/targets/*/lib/libcudart.so*"))
        found += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"))
        for path in found:
            if path:
                return path
        sys.exit("bench_paddle_gpu: libcudart not found (set FLASHMASK_CUDART)")

    def _check(self, rc, what):
        if rc != 0:
            sys.exit(f"bench_paddle_gpu: {what} failed with CUDA error {rc}")

    def flush_l2(self):
        self._check(self._rt.cudaMemsetAsync(self._flush_buffer, 0, L2_FLUSH_BYTES, self._stream), "cudaMemsetAsync")

    def record(self):
        event = ctypes.c_void_p()
        self._check(self._rt.cudaEventCreate(ctypes.byref(event)), "cudaEventCreate")
        self._check(self._rt.cudaEventRecord(event, self._stream), "cudaEventRecord")
        return event

    def elapsed_ms(self, start, end):
        self._check(self._rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self._check(self._rt.cudaEventElapsedTime(ctypes.byref(ms), start, end), "cudaEventElapsedTime")
        for event in (start, end):
            self._rt.cudaEventDestroy(event)
        return ms.value


def inputs(seed=0):
    """q, k, v, dout as float32 NumPy arrays (each side casts them to bf16 itself)."""
    rng = np.random.default_rng(seed)
    shape = (SHAPE["b"], SHAPE["n"], SHAPE["h"], SHAPE["d"])
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]


def paddle_side():
    """attend(idx, causal) -> out, grad(out), to_device(idx), and the events on Paddle's stream."""
    import paddle

    import paddle_flashmask

    def gpu(x, grad):
        t = paddle.to_tensor(x, place=paddle.CPUPlace()).astype("bfloat16").cuda()
        t.stop_gradient = not grad
        return t

    q, k, v, dout = (gpu(x, i < 3) for i, x in enumerate(inputs()))

    def attend(idx, causal):
        return paddle_flashmask.flashmask_attention(q, k, v, idx, causal=causal)

    def grad(out):
        return paddle.grad([out], [q, k, v], grad_outputs=[dout])

    def to_device(idx):
        return paddle.to_tensor(idx, place=q.place)

    return attend, grad, to_device, CudaEvents(paddle.device.cuda.current_stream().cuda_stream)


def torch_side():
    import torch

    from paddle_flashmask.torch import flashmask_attention

    q, k, v, dout = (torch.from_numpy(x).cuda().to(torch.bfloat16).requires_grad_(i < 3) for i, x in enumerate(inputs()))

    def attend(idx, causal):
        return flashmask_attention(q, k, v, idx, causal=causal)

    def grad(out):
        return torch.autograd.grad(out, (q, k, v), dout)

    def to_device(idx):
        return torch.from_numpy(idx).cuda()

    return attend, grad, to_device, CudaEvents(torch.cuda.current_stream().cuda_stream)


def median_ms(fn, events, warmup, reps):
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(reps):
        events.flush_l2()
        start = events.record()
        fn()
        pairs.append((start, events.record()))
    return statistics.median(events.elapsed_ms(start, end) for start, end in pairs)


def run_side(side, reps):
    attend, grad, to_device, events = (paddle_side if side == "paddle" else torch_side)()
    result = {}
    for name in MASKS:
        spec = build_mask(name, SHAPE["n"], SHAPE["b"], SHAPE["h"])
        idx = to_device(spec.startend_row_indices)
        fwd = median_ms(lambda: attend(idx, spec.causal), events, 3, reps)
        fwdbwd = median_ms(lambda: grad(attend(idx, spec.causal)), events, 3, reps)
        result[name] = {"fwd_ms": fwd, "fwdbwd_ms": fwdbwd}
    print(json.dumps(result))


def tflops(name, ms, factor):
    spec = build_mask(name, SHAPE["n"], SHAPE["b"], SHAPE["h"])
    pairs = total_unmasked_pairs(spec.startend_row_indices, spec.causal, SHAPE["h"])
    return 4 * SHAPE["d"] * pairs * factor / (ms * 1e-3) / 1e12


def drive(args):
    rounds = {side: [] for side in SIDES}
    for r in range(args.rounds):
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            cmd = [sys.executable, __file__, "--side", side, "--reps", str(args.reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"{side} side failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
            rounds[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {side}: {rounds[side][-1]}", flush=True)
    rows = []
    for name in MASKS:
        row = {"mask": name, **SHAPE}
        for side in SIDES:
            for key, factor in (("fwd_ms", 1.0), ("fwdbwd_ms", 3.5)):
                ms = statistics.median(r[name][key] for r in rounds[side])
                row[f"{side}_{key}"] = ms
                row[f"{side}_{key.replace('_ms', '_tflops')}"] = tflops(name, ms, factor)
        row["paddle_over_torch_fwd"] = row["paddle_fwd_ms"] / row["torch_fwd_ms"]
        row["paddle_over_torch_fwdbwd"] = row["paddle_fwdbwd_ms"] / row["torch_fwdbwd_ms"]
        rows.append(row)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paddle_gpu.json").write_text(json.dumps({"rounds": rounds, "rows": rows}, indent=1))
    print("| mask | Paddle fwd ms | torch fwd ms | ratio | Paddle fwd+bwd ms | torch fwd+bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mask']} | {row['paddle_fwd_ms']:.3f} | {row['torch_fwd_ms']:.3f} | "
            f"{row['paddle_over_torch_fwd']:.3f} | {row['paddle_fwdbwd_ms']:.3f} | "
            f"{row['torch_fwdbwd_ms']:.3f} | {row['paddle_over_torch_fwdbwd']:.3f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=SIDES, help="run one side in this process (internal)")
    parser.add_argument("--rounds", type=int, default=4, help="processes per side, alternating")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per mask and round")
    parser.add_argument("--out", default=str(ROOT / "output"), help="folder for paddle_gpu.json")
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.reps)
    else:
        drive(args)


if __name__ == "__main__":
    main()
