"""CPU benchmark: the FlashMask CPU kernel against Paddle's dense attention.

Causal document mask of 4 equal documents, B=1, H=8, D=64, float32, forward
and forward+backward, against `paddle.nn.functional.scaled_dot_product_attention`
given the equivalent dense additive mask (0 / -inf). Every measurement runs in
a fresh subprocess, so its peak RSS (ru_maxrss) is its own; the peak of a
process that imported Paddle and ran the same op once on a tiny input is
subtracted. Dense runs whose score matrices would not fit in memory are skipped.

Not a test:  python benchmarks/bench_cpu.py [--sizes 1024 2048 ...] [--repeats 3]
Writes benchmarks/results/cpu.md and cpu.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BATCH, HEADS, HEAD_DIM, DOCS = 1, 8, 64, 4
# The dense path keeps a few [B, H, N, N] fp32 buffers alive at once (scores,
# probabilities, their gradients): about 2.1 GB measured at N=4096.
DENSE_BYTES_PER_SCORE = 4 * 4
SLOW_SECONDS = 5.0
BASELINE_N = 128  # a first run slower than this is timed once more, not `repeats` times


# ----------------------------------------------------------------------------- child side


def _inputs(n: int):
    import paddle

    rng = np.random.default_rng(0)
    shape = (BATCH, n, HEADS, HEAD_DIM)
    q, k, v, dout = (
        paddle.to_tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(4)
    )
    for t in (q, k, v):
        t.stop_gradient = False
    return q, k, v, dout


def _mask(n: int):
    from paddle_flashmask.masks import causal_document_mask

    return causal_document_mask([n // DOCS] * DOCS)


def _flashmask_fn(n: int):
    import paddle

    from paddle_flashmask import _ops

    spec = _mask(n)
    idx = paddle.to_tensor(spec.startend_row_indices)
    return lambda q, k, v: _ops.flashmask_attention_op(
        q, k, v, idx, None, spec.causal, HEAD_DIM**-0.5, False
    )[0]


def _dense_fn(n: int):
    import paddle
    import paddle.nn.functional as F

    from paddle_flashmask.masks import to_dense

    spec = _mask(n)
    allowed = to_dense(spec.startend_row_indices, spec.causal, seqlen_q=n)
    mask = paddle.to_tensor(np.where(allowed, 0.0, -np.inf).astype(np.float32))
    del allowed
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _time_once(fn, q, k, v, dout, backward: bool) -> float:
    import paddle

    start = time.perf_counter()
    out = fn(q, k, v)
    if backward:
        paddle.autograd.backward([out], [dout])
    else:
        out.numpy()  # forces completion
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child(impl: str, mode: str, n: int, repeats: int) -> dict:
    import paddle

    paddle.set_device("cpu")
    if impl == "baseline":  # `mode` names the op
        fn = _flashmask_fn(BASELINE_N) if mode == "flashmask" else _dense_fn(BASELINE_N)
        _time_once(fn, *_inputs(BASELINE_N), backward=True)
        return {"peak_rss_mb": _peak_rss_mb()}
    if impl == "check":
        q, k, v, _ = _inputs(n)
        a, b = _flashmask_fn(n)(q, k, v).numpy(), _dense_fn(n)(q, k, v).numpy()
        return {"max_abs_diff": float(np.abs(a - b).max())}
    fn = _flashmask_fn(n) if impl == "flashmask" else _dense_fn(n)
    q, k, v, dout = _inputs(n)
    backward = mode == "fwd+bwd"
    first = _time_once(fn, q, k, v, dout, backward)  # warm-up
    runs = 1 if first > SLOW_SECONDS else repeats
    seconds = [_time_once(fn, q, k, v, dout, backward) for _ in range(runs)]
    return {"seconds": statistics.median(seconds), "peak_rss_mb": _peak_rss_mb()}


# ----------------------------------------------------------------------------- parent side


def run_child(impl: str, mode: str, n: int, repeats: int, threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, mode, str(n), str(repeats)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def dense_fits(n: int) -> bool:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return BATCH * HEADS * n * n * DENSE_BYTES_PER_SCORE < 0.6 * total


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import paddle

    return f"{cpu}, {os.cpu_count()} cores, Paddle {paddle.__version__}, Python {platform.python_version()}"


def fmt_s(x):
    return "skipped" if x is None else f"{x:.3f}"


def fmt_mb(x):
    return "skipped" if x is None else f"{x:,.0f}"


def fmt_x(a, b):
    return "n/a" if a is None or b is None else f"{b / a:.1f}x"


def markdown(rows, meta) -> str:
    setup = (
        f"Causal document mask, {DOCS} equal documents; B={BATCH}, H={HEADS}, D={HEAD_DIM}, float32. "
        "Dense = `paddle.nn.functional.scaled_dot_product_attention` with the equivalent additive "
        "[B, 1, N, N] mask (Paddle's default CPU threading). Times are medians of "
        f"{meta['repeats']} runs after a warm-up (1 run when the warm-up exceeds {SLOW_SECONDS:.0f} s). "
        "Peak memory: peak RSS of a fresh process running the case (fwd+bwd), minus that of a "
        f"process running the same op at N={BASELINE_N} (FlashMask "
        f"{meta['baseline_mb']['flashmask']:,.0f} MB, dense {meta['baseline_mb']['dense']:,.0f} MB)."
    )
    header = (
        "| N | FlashMask fwd (s) | dense fwd (s) | speed-up | FlashMask fwd+bwd (s) "
        "| FlashMask fwd+bwd, 1 thread (s) | dense fwd+bwd (s) | speed-up "
        "| FlashMask peak (MB) | dense peak (MB) |"
    )
    lines = [
        "# CPU benchmark: FlashMask vs dense attention",
        "",
        f"Generated by `benchmarks/bench_cpu.py` on {meta['date']}.",
        f"Machine: {meta['machine']}. FlashMask threads: {meta['threads']} (OpenMP).",
        "",
        setup,
        "",
        header,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {fmt_s(r['flash_fwd_s'])} | {fmt_s(r['dense_fwd_s'])} "
            f"| {fmt_x(r['flash_fwd_s'], r['dense_fwd_s'])} | {fmt_s(r['flash_fwdbwd_s'])} "
            f"| {fmt_s(r['flash_fwdbwd_1t_s'])} | {fmt_s(r['dense_fwdbwd_s'])} "
            f"| {fmt_x(r['flash_fwdbwd_s'], r['dense_fwdbwd_s'])} "
            f"| {fmt_mb(r['flash_peak_mb'])} | {fmt_mb(r['dense_peak_mb'])} |"
        )
    notes = []
    if meta["dense_skipped"]:
        notes.append(
            f"Dense skipped for N in {meta['dense_skipped']}: its N x N buffers would need more "
            "than 60% of this machine's memory."
        )
    notes.append(
        f"FlashMask and dense outputs agree to {meta['check_max_abs_diff']:.1e} "
        f"(max abs difference, N={meta['check_n']})."
    )
    lines += ["", " ".join(notes), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--child", nargs=4, metavar=("IMPL", "MODE", "N", "REPEATS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        impl, mode, n, repeats = args.child
        print(json.dumps(child(impl, mode, int(n), int(repeats))))
        return
    # Read before anything imports Paddle, which sets OMP_NUM_THREADS=1 in os.environ
    # (libgomp has read the variable by then, so the op still uses every core).
    threads = os.environ.get("OMP_NUM_THREADS") or os.cpu_count()

    baseline = {}

    def step(label, impl, mode, *child_args, **kwargs):
        print(f"  {label} ...", end="", flush=True)
        r = run_child(impl, mode, *child_args, **kwargs)
        shown = [f"{r['seconds']:.3f} s"] if "seconds" in r else []
        if "peak_rss_mb" in r and impl in baseline:
            shown.append(f"peak {r['peak_rss_mb'] - baseline[impl]:,.0f} MB")
        print(" " + ", ".join(shown) if shown else " done", flush=True)
        return r

    print("baselines", flush=True)
    for impl in ("flashmask", "dense"):
        baseline[impl] = step(impl, "baseline", impl, BASELINE_N, 1)["peak_rss_mb"]
    check_n = 1024
    check = step(f"output check N={check_n}", "check", "-", check_n, 1)
    print(f"  max |FlashMask - dense| = {check['max_abs_diff']:.2e}", flush=True)

    rows = []
    for n in args.sizes:
        print(f"N = {n}", flush=True)
        row = {"n": n}
        row["flash_fwd_s"] = step("FlashMask fwd", "flashmask", "fwd", n, args.repeats)["seconds"]
        r = step("FlashMask fwd+bwd", "flashmask", "fwd+bwd", n, args.repeats)
        row["flash_fwdbwd_s"] = r["seconds"]
        row["flash_peak_mb"] = r["peak_rss_mb"] - baseline["flashmask"]
        one = step(
            "FlashMask fwd+bwd, 1 thread", "flashmask", "fwd+bwd", n, args.repeats, threads=1
        )
        row["flash_fwdbwd_1t_s"] = one["seconds"]
        if dense_fits(n):
            row["dense_fwd_s"] = step("dense fwd", "dense", "fwd", n, args.repeats)["seconds"]
            r = step("dense fwd+bwd", "dense", "fwd+bwd", n, args.repeats)
            row["dense_fwdbwd_s"] = r["seconds"]
            row["dense_peak_mb"] = r["peak_rss_mb"] - baseline["dense"]
        else:
            print("  dense skipped: would not fit in memory", flush=True)
            row["dense_fwd_s"] = row["dense_fwdbwd_s"] = row["dense_peak_mb"] = None
        rows.append(row)

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "threads": threads,
        "repeats": args.repeats,
        "baseline_mb": baseline,
        "dense_skipped": [r["n"] for r in rows if r["dense_fwd_s"] is None],
        "check_n": check_n,
        "check_max_abs_diff": check["max_abs_diff"],
    }
    table = markdown(rows, meta)
    print()
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "cpu.md"), "w") as f:
        f.write(table)
    with open(os.path.join(RESULTS, "cpu.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"wrote {os.path.relpath(os.path.join(RESULTS, 'cpu.md'), ROOT)} and cpu.json")


if __name__ == "__main__":
    main()
