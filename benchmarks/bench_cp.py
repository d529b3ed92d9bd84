#!/usr/bin/env python3
"""Context-parallel benchmark: FlashMask attention on 2 GPUs (torch front end of
paddle_flashmask.distributed, NCCL) against 1 GPU (the torch binding), fwd+bwd, bf16.

Setup of issue 20: D=128, H=32, Hk=8, batch 1, documents of 4K-32K tokens;
2 GPUs on --tokens (256K) against 1 GPU on --single-tokens (the same length unless
given); masks causal, causal_document, document, share_question,
sliding_window; each with the planner's plan and with the naive equal-token split.

Throughput counts unmasked (row, key) pairs (fwd+bwd = 3.5 x 4*D*H*pairs FLOPs),
so a longer causal sequence is not credited for its quadratic growth:
scaling efficiency = (TFLOPs/s per GPU at 2 GPUs) / (TFLOPs/s at 1 GPU).
Imbalance: the planner's predicted work max/mean, and the measured max/mean of
each rank's own kernel time (its one attention call against the gathered keys,
no communication). Step times are medians of CUDA-event timed fwd+bwd steps after
warm-up, with a barrier before each.

    NCCL_NVLS_ENABLE=0 torchrun --nproc_per_node 2 benchmarks/bench_cp.py --out benchmarks/results/cp
    python benchmarks/bench_cp.py --plans-only --out benchmarks/results/cp   # CPU: predicted imbalance only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["NCCL_NVLS_ENABLE"] = "0"  # NVLink SHARP stays off (not available on every machine)

from paddle_flashmask import distributed as cp  # noqa: E402
from paddle_flashmask import masks  # noqa: E402
from bench_gpu import share_question_items, total_unmasked_pairs  # noqa: E402  (as every benchmark counts)

HEAD_DIM, HEADS, HEADS_K = 128, 32, 8
DOC_MIN, DOC_MAX = 4096, 32768
SLIDING_WINDOW = 4096
MASKS = ("causal", "causal_document", "document", "share_question", "sliding_window")
FWD_BWD_FLOPS_PER_PAIR = 3.5 * 4 * HEAD_DIM  # per unmasked (row, key) pair of one head
WARMUP, REPS = 3, 10
TOKENS = 256 * 1024  # the GPU runs' and --plans-only's sequence
# --cpu-kernel: a sequence the CPU kernel runs in about a second per rank.
CPU_TOKENS, CPU_DOCS, CPU_WINDOW = 8192, (256, 2048), 128
CPU_HEADS, CPU_HEADS_K, CPU_HEAD_DIM, CPU_WARMUP, CPU_REPS = 2, 1, 64, 3, 9
BACKEND = "nccl"


def doc_lengths(tokens: int, seed: int, doc_range=(DOC_MIN, DOC_MAX)) -> list:
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < tokens:
        lengths.append(int(min(rng.integers(doc_range[0], doc_range[1] + 1), tokens - sum(lengths))))
    return lengths


def build_mask(name: str, tokens: int, seed: int = 0, doc_range=(DOC_MIN, DOC_MAX), window: int = SLIDING_WINDOW):
    docs = doc_lengths(tokens, seed, doc_range)
    if name == "causal":
        return masks.causal_mask(tokens)
    if name == "sliding_window":
        return masks.sliding_window_mask(tokens, window)
    if name == "causal_document":
        return masks.causal_document_mask([docs])
    if name == "document":
        return masks.document_mask([docs])
    if name == "share_question":
        return masks.share_question_mask([share_question_items(docs)])
    raise ValueError(f"unknown mask {name!r}")


SPLITS = ("planner", "naive")


def plans_for(spec, world_size: int, splits=SPLITS) -> dict:
    """The planner's plan and the naive equal-token split, those of `splits`."""
    make = {"planner": lambda: cp.balanced_plan(spec, world_size),
            "naive": lambda: cp.naive_plan(spec.startend_row_indices.shape[2], world_size)}
    return {label: make[label]() for label in splits}


def predicted_imbalance(tokens: int, names=MASKS, world_sizes=(2, 4, 8)) -> list:
    rows = []
    for name in names:
        spec = build_mask(name, tokens)
        work = cp.row_work(spec)
        for world_size in world_sizes:
            candidates = {p.name: round(p.imbalance(work), 4) for p in cp.candidate_plans(work, world_size)}
            chosen = cp.balanced_plan(spec, world_size)
            rows.append({"mask": name, "tokens": tokens, "ranks": world_size, "candidates": candidates,
                         "planner": chosen.name, "planner_imbalance": round(chosen.imbalance(work), 4),
                         "naive_imbalance": candidates["naive"]})
    return rows


def cpu_rank_ms(paddle, mask) -> float:
    """One rank's fwd+bwd time on the CPU kernel (Paddle op, the real step: core.rank_attention,
    gathered keys given: no communication); median of CPU_REPS after CPU_WARMUP untimed calls
    (a fresh process's first backward calls run up to 2x slower)."""
    from paddle_flashmask.distributed import core, paddle_frontend

    plan, layout = mask.plan, mask.layout
    rng = np.random.default_rng(0)
    local = paddle.zeros([1, layout.local_len, CPU_HEADS_K, CPU_HEAD_DIM])
    q = paddle.to_tensor(rng.standard_normal((1, layout.local_len, CPU_HEADS, CPU_HEAD_DIM)).astype("float32"),
                         stop_gradient=False)
    kv = paddle.to_tensor(rng.standard_normal((1, plan.seqlen, 2 * CPU_HEADS_K, CPU_HEAD_DIM)).astype("float32"),
                          stop_gradient=False)
    call = core.check_call(q.shape, local.shape, local.shape, mask, None, plan, layout.rank, plan.world_size, None)
    fx = paddle_frontend.PaddleCollective(None)
    grad = paddle.to_tensor(rng.standard_normal(q.shape).astype("float32"))  # the upstream gradient
    def step():
        out = core.rank_attention(fx, lambda _joined, _layout: kv, q, local, local, call)[0]
        paddle.autograd.backward([out], [grad])

    for _ in range(CPU_WARMUP):
        step()
    times = []
    for _ in range(CPU_REPS):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cpu_kernel_imbalance(tokens: int = CPU_TOKENS, names=MASKS, splits=SPLITS, world_size: int = 2) -> list:
    """Measured per-rank imbalance on the CPU kernel, the `splits` (naive split, planner) of
    each mask (one process times every rank's share in turn)."""
    import paddle

    paddle.set_device("cpu")
    rows = []
    for name in names:
        spec = build_mask(name, tokens, doc_range=CPU_DOCS, window=CPU_WINDOW)
        work = cp.row_work(spec)
        for label, plan in plans_for(spec, world_size, splits).items():
            rank_ms = [cpu_rank_ms(paddle, cp.prepare_mask(spec, plan, rank)) for rank in range(world_size)]
            rows.append({"mask": name, "tokens": tokens, "ranks": world_size, "split": label, "plan": plan.name,
                         "predicted_imbalance": plan.imbalance(work),
                         "measured_imbalance": max(rank_ms) / (sum(rank_ms) / world_size), "rank_ms": rank_ms})
    return rows


def median_step_ms(torch, step, barrier=None) -> float:
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(REPS):
        if barrier is not None:
            barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def random_inputs(torch, batch_tokens, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = ((1, batch_tokens, HEADS, HEAD_DIM), (1, batch_tokens, HEADS_K, HEAD_DIM), (1, batch_tokens, HEADS_K, HEAD_DIM))
    return [torch.randn(s, device=device, generator=g, dtype=torch.bfloat16).requires_grad_() for s in shapes]


def fwd_bwd(torch, fn, tensors):
    grads = []  # one random upstream gradient, made at the first call (never all ones)

    def step():
        for t in tensors:
            t.grad = None
        out = fn(*tensors)
        if not grads:
            g = torch.Generator(device=out.device).manual_seed(2)
            grads.append(torch.randn(out.shape, device=out.device, dtype=out.dtype, generator=g))
        out.backward(grads[0])
    return step


def single_gpu(torch, name, tokens, device) -> dict:
    from paddle_flashmask.torch import flashmask_attention

    spec = build_mask(name, tokens)
    q, k, v = random_inputs(torch, tokens, device, 0)
    ms = median_step_ms(torch, fwd_bwd(torch, lambda q, k, v: flashmask_attention(q, k, v, spec), (q, k, v)))
    pairs = total_unmasked_pairs(spec.startend_row_indices, spec.causal, HEADS)
    return {"mask": name, "tokens": tokens, "ms": ms, "tflops_per_gpu": pairs * FWD_BWD_FLOPS_PER_PAIR / ms / 1e9}


def rank_kernel_ms(torch, mask, device) -> float:
    """This rank's own attention time (the real step: core.rank_attention) with the gathered keys
    given: no communication, so ranks do not wait for each other."""
    from paddle_flashmask.distributed import core, torch_frontend

    plan, layout = mask.plan, mask.layout
    local = torch.empty((1, layout.local_len, HEADS_K, HEAD_DIM), dtype=torch.bfloat16, device=device)
    q = random_inputs(torch, layout.local_len, device, 1)[0]
    kv = torch.randn((1, plan.seqlen, 2 * HEADS_K, HEAD_DIM), dtype=torch.bfloat16, device=device).requires_grad_()
    call = core.check_call(q.shape, local.shape, local.shape, mask, None, plan, layout.rank, plan.world_size, None)
    fx = torch_frontend._TorchCollective(None)

    def attend(q, kv):
        return core.rank_attention(fx, lambda _joined, _layout: kv, q, local, local, call)[0]
    return median_step_ms(torch, fwd_bwd(torch, attend, (q, kv)))


def context_parallel(torch, dist, name, tokens, device, splits=SPLITS) -> list:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    spec = build_mask(name, tokens)
    work = cp.row_work(spec)
    pairs = total_unmasked_pairs(spec.startend_row_indices, spec.causal, HEADS)
    rows = []
    for label, plan in plans_for(spec, world_size, splits).items():
        q, k, v = (plan.shard(t.detach(), rank).contiguous().requires_grad_() for t in random_inputs(torch, tokens, device, 0))
        mask = cp.prepare_mask(spec, plan, rank)  # once per batch, as a model's layers would share it
        attend = lambda q, k, v: cp.torch_flashmask_attention(q, k, v, mask, plan=plan)  # noqa: E731
        ms = median_step_ms(torch, fwd_bwd(torch, attend, (q, k, v)), barrier=dist.barrier)
        step_ms = [None] * world_size
        dist.all_gather_object(step_ms, ms)
        kernel_ms = [None] * world_size
        dist.all_gather_object(kernel_ms, rank_kernel_ms(torch, mask, device))
        step = max(step_ms)
        rows.append({
            "mask": name, "tokens": tokens, "ranks": world_size, "split": label, "plan": plan.name,
            # row ranges per rank (one attention call per rank however many)
            "chunks_per_rank": max(len(r) for r in plan.ranges), "step_ms": step,
            "tflops_per_gpu": pairs * FWD_BWD_FLOPS_PER_PAIR / step / 1e9 / world_size,
            "predicted_imbalance": plan.imbalance(work),
            "measured_imbalance": max(kernel_ms) / (sum(kernel_ms) / world_size), "rank_kernel_ms": kernel_ms,
        })
    return rows


def table(single: list, multi: list) -> str:
    base = {r["mask"]: r for r in single}
    lines = [
        "| mask | split | plan | 1 GPU TFLOPs/s | 2 GPU TFLOPs/s per GPU | scaling eff. | imbalance pred. | imbalance meas. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in multi:
        eff = r["tflops_per_gpu"] / base[r["mask"]]["tflops_per_gpu"]
        r["scaling_efficiency"] = eff
        lines.append(
            f"| {r['mask']} | {r['split']} | {r['plan']} | {base[r['mask']]['tflops_per_gpu']:.0f} | "
            f"{r['tflops_per_gpu']:.0f} | {eff:.3f} | {r['predicted_imbalance']:.3f} | {r['measured_imbalance']:.3f} |"
        )
    return "\n".join(lines)


def run_gpu(args) -> None:
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # set by torchrun
    torch.cuda.set_device(device)  # before NCCL starts
    dist.init_process_group(BACKEND)
    single = []
    for name in args.masks:
        if dist.get_rank() == 0:  # the 1-GPU baseline, while the other ranks wait
            single.append(single_gpu(torch, name, args.single_tokens or args.tokens, device))
        dist.barrier()
    multi = [row for name in args.masks for row in context_parallel(torch, dist, name, args.tokens, device, args.splits)]
    if dist.get_rank() == 0:
        text = table(single, multi)
        print(text)
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"gpu": torch.cuda.get_device_name(device), "world_size": dist.get_world_size(), "torch": torch.__version__,
                "head_dim": HEAD_DIM, "heads": HEADS, "heads_k": HEADS_K, "docs": [DOC_MIN, DOC_MAX],
                "tokens": args.tokens, "single_gpu_tokens": args.single_tokens or args.tokens}
        (out / "cp.json").write_text(json.dumps({"meta": meta, "single_gpu": single, "context_parallel": multi}, indent=1))
        (out / "cp.md").write_text(text + "\n")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for cp.json / cp.md (plans.json with --plans-only)")
    parser.add_argument("--tokens", type=int,
                        help=f"sequence length (default: {TOKENS}, or {CPU_TOKENS} with --cpu-kernel)")
    parser.add_argument("--single-tokens", type=int, help="the 1-GPU baseline's length (default: --tokens)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="which splits to time (--plans-only reports every candidate plan)")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=MASKS)
    parser.add_argument("--plans-only", action="store_true", help="CPU: the planner's predicted imbalance only")
    parser.add_argument("--cpu-kernel", action="store_true",
                        help="CPU: per-rank time of the CPU kernel, naive split vs planner (Paddle, one process)")
    args = parser.parse_args()
    if args.plans_only and args.cpu_kernel:
        parser.error("--plans-only and --cpu-kernel are two different runs: give one")
    args.tokens = args.tokens or (CPU_TOKENS if args.cpu_kernel else TOKENS)
    if args.cpu_kernel:
        rows = cpu_kernel_imbalance(args.tokens, args.masks, args.splits)
        lines = ["| mask | split | plan | predicted | measured | rank ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['mask']} | {r['split']} | {r['plan']} | {r['predicted_imbalance']:.3f} | "
                  f"{r['measured_imbalance']:.3f} | {' / '.join(f'{t:.0f}' for t in r['rank_ms'])} |" for r in rows]
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cpu_kernel.json").write_text(json.dumps(rows, indent=1))
        header = (f"Per-rank fwd+bwd time on the CPU kernel, {args.tokens} tokens, documents of {CPU_DOCS[0]}-"
                  f"{CPU_DOCS[1]}, window {CPU_WINDOW}, H={CPU_HEADS}, Hk={CPU_HEADS_K}, D={CPU_HEAD_DIM}, 2 ranks "
                  f"timed in turn in one process (median of {CPU_REPS} after {CPU_WARMUP} untimed; a 2-core machine shared with other jobs)")
        (out / "cpu_kernel.md").write_text(f"{header}\n\n" + "\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    if not args.plans_only:
        run_gpu(args)
        return
    rows = predicted_imbalance(args.tokens, args.masks)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(rows, indent=1))
    lines = ["| mask | ranks | naive | zigzag | planner (choice) |", "|---|---|---|---|---|"]
    for r in rows:
        zigzag = r["candidates"].get("zigzag", float("nan"))
        lines.append(f"| {r['mask']} | {r['ranks']} | {r['naive_imbalance']:.3f} | {zigzag:.3f} | "
                     f"{r['planner_imbalance']:.3f} ({r['planner']}) |")
    text = "\n".join(lines)
    (out / "plans.md").write_text(f"Predicted work imbalance (max/mean unmasked pairs per rank), {args.tokens} tokens\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
