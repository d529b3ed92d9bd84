#!/usr/bin/env python3
"""GPU kernel benchmark: FlashMask CUDA kernels vs FlexAttention, FlashAttention-4 (where
flash-attn-4 is installed: called directly on full/causal, and as FlexAttention's FLASH
backend on every mask), SDPA (FA2 / cuDNN) and SDPA with a dense bool mask, in one
process on the same inputs.

Setup of the FlashMask paper's kernel benchmark: total tokens 128K (B=16/4/1 at
N=8K/32K/128K), D=128 with H=32 and D=64 with H=64, bf16, every mask type.
TFLOPs/s count only unmasked (row, key) pairs: fwd = 4*D*H*pairs, bwd = 2.5x
fwd, fwd+bwd = 3.5x fwd over the fwd+bwd time. Times are medians of at least
--min-reps timed calls (CUDA events around each call, L2 flushed before each), more where
they take under --rep ms. Each call (the forward, backward and fwd+bwd call of ours and of each
baseline that runs the mask) is timed in blocks of its own after --warmup ms of its own calls,
which bring the GPU to the clock it holds under that load, in --rounds rounds whose order
alternates (steady_block_ms; docs/perf-notes.md, "Timed first"). Every row's
output is first checked against a float32 reference on part of its rows (check_output).

    python benchmarks/bench_gpu.py --configs 8k-128,32k-128 --tag d128   # -> results/gpu_d128.json
    python benchmarks/bench_gpu.py --report                               # merge -> gpu.json/.md/.png

A whole 32K run of every mask does not fit one 10-minute device call: run its masks in parts
(--masks, a tag each) and join the parts into one run's file with
    python benchmarks/bench_gpu.py --merge d256_32k part_a.json part_b.json   # -> gpu_d256_32k.json

FlexAttention: torch.compile'd flex_attention with a BlockMask built by
create_block_mask from a mask_mod reading the same (normalised) column bounds;
its build time is reported. Two mask_mods per shape (causal or not; bounds copied
in place) so masks do not recompile.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from paddle_flashmask import masks  # noqa: E402
from paddle_flashmask.distributed import row_work  # noqa: E402
from paddle_flashmask.masks.dense import normalized_bounds  # noqa: E402

try:  # FlashAttention-4 (flash-attn-4, CuTe DSL): ../shared/device/fa4_stage.sh stages it
    from flash_attn.cute import flash_attn_func as fa4_attention

    HAVE_FA4 = True
except Exception:  # noqa: BLE001  (not installed, or installed without a working CuTe-DSL runtime)
    fa4_attention, HAVE_FA4 = None, False

CONFIGS = {  # name -> (N, B, D, H)
    "8k-128": (8192, 16, 128, 32),
    "32k-128": (32768, 4, 128, 32),
    "128k-128": (131072, 1, 128, 32),
    "8k-64": (8192, 16, 64, 64),
    "32k-64": (32768, 4, 64, 64),
    "8k-256": (8192, 16, 256, 16),  # same hidden size (H*D = 4096) at head_dim 256
    "32k-256": (32768, 4, 256, 16),
}
MASKS = [
    "full", "causal", "sliding_window", "causal_document", "document", "share_question",
    "prefix_lm_causal", "prefix_lm_document", "global_sliding_window", "causal_blockwise",
    "qk_sparse", "random_eviction",
]


def _doc_lengths(rng, n, count):
    cuts = np.sort(rng.choice(np.arange(128, n - 127), size=count - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n]])).tolist()


def share_question_items(lengths, step=1):
    """share_question_mask's documents for documents of these lengths: a question of a third,
    then two answers splitting the rest; the question and the first answer rounded down to
    multiples of step."""
    items = []
    for length in lengths:
        question = length // 3 // step * step
        first = (length - question) // 2 // step * step
        items.append((question, [first, length - question - first]))
    return items


# Diagnostic masks, named with --masks (not in MASKS): each the mask before "_aligned" with its
# boundaries moved onto ALIGN_TILE-position tiles, so that no tile is partial but the causal
# diagonal's. sliding_window_aligned: a band of WINDOW keys per row, every key block of
# ALIGN_TILE columns seen by the ALIGN_TILE-row blocks of the WINDOW rows from its own (not
# causal); the others: their documents, questions and answers on multiples of ALIGN_TILE. A
# mask's rate on them bounds what cheaper partial tiles can give it (docs/perf-notes.md and
# docs/cpu-kernel.md, "Masks on whole tiles").
ALIGNED_MASKS = ("sliding_window_aligned", "causal_document_aligned", "share_question_aligned")
ALIGN_TILE = 128  # the Hopper kernels' key tiles (D=128); whole CPU tiles (64) as well
WINDOW = 1024  # sliding_window's and global_sliding_window's keys per row


def _aligned_lengths(lengths, step, shortest):
    """The documents' boundaries moved to the nearest multiple of step, a document shorter than
    shortest merged into the next (the last into the one before)."""
    total, cuts = sum(lengths), [0]
    for end in np.cumsum(lengths[:-1]):
        cut = int(round(end / step)) * step
        if cut - cuts[-1] >= shortest and total - cut >= shortest:
            cuts.append(cut)
    return np.diff(cuts + [total]).tolist()


def _aligned_mask(base, n, b, docs):
    if n % ALIGN_TILE:
        raise ValueError(f"{base}_aligned needs N a multiple of {ALIGN_TILE}, got {n}")
    if base == "sliding_window":
        start = np.arange(n) // ALIGN_TILE * ALIGN_TILE  # each column's key block's first row
        # 4 bounds, not causal: rows [start + WINDOW, n) and [0, start) masked
        bounds = np.stack([np.minimum(n, start + WINDOW), np.full(n, n), np.zeros(n, np.int64), start], -1)
        return masks.MaskSpec(np.broadcast_to(bounds.astype(np.int32), (b, 1, n, 4)).copy(), False)
    # a question of at least one tile and two answers of one each: three tiles or more
    docs = [_aligned_lengths(ds, ALIGN_TILE, 3 * ALIGN_TILE) for ds in docs]
    if base == "causal_document":
        return masks.causal_document_mask(docs)
    if base == "share_question":
        return masks.share_question_mask([share_question_items(ds, ALIGN_TILE) for ds in docs])
    raise ValueError(f"{base}_aligned")


def build_mask(name, n, b, h, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = (3, 7) if n <= 8192 else (10, 14)
    docs = [_doc_lengths(rng, n, int(rng.integers(lo, hi + 1))) for _ in range(b)]
    if name in ALIGNED_MASKS:
        return _aligned_mask(name[: -len("_aligned")], n, b, docs)
    if name == "full":
        return masks.full_mask(n, batch=b)
    if name == "causal":
        return masks.causal_mask(n, batch=b)
    if name == "sliding_window":
        return masks.sliding_window_mask(n, WINDOW, batch=b)
    if name == "causal_document":
        return masks.causal_document_mask(docs)
    if name == "document":
        return masks.document_mask(docs)
    if name == "causal_blockwise":
        return masks.causal_blockwise_mask(docs)
    if name == "share_question":
        return masks.share_question_mask([share_question_items(ds) for ds in docs])
    if name == "prefix_lm_causal":
        return masks.prefix_lm_causal_mask(n, n // 4, batch=b)
    if name == "prefix_lm_document":
        return masks.prefix_lm_document_mask([[(max(1, L // 4), L) for L in ds] for ds in docs])
    if name == "global_sliding_window":
        return masks.global_sliding_window_mask(n, 256, WINDOW, batch=b)
    if name == "qk_sparse":
        return masks.qk_sparse_mask(n, [(n // 8, n // 4), (n // 2, n // 2 + n // 8)], batch=b)
    if name == "random_eviction":
        return masks.random_eviction_mask(n, h, batch=b, seed=seed)
    raise ValueError(name)


# The dense masks: the dense baselines (FA4 called directly, SDPA's flash and cuDNN backends)
# run them without a mask, and so do we (startend_row_indices=None, what a user without a mask
# passes), which lets the kernels take their mask-less paths (the D=128 forward's 176-key
# tiles: docs/perf-notes.md, v49). The other masks, and FA4-Flex, get the mask.
DENSE_MASKS = ("full", "causal")
# Every implementation a row can hold (its columns' prefix): ours, then the baselines.
IMPLS = ("ours", "flex", "fa4", "fa4direct", "fa2", "cudnn", "dense")


def ours_indices(mask_name, idx):
    """startend_row_indices for our call of mask `mask_name` (idx: its bounds)."""
    return None if mask_name in DENSE_MASKS else idx


def timed_call(torch, fn, flush):
    """One call of fn between two recorded CUDA events, L2 flushed (flush.zero_(), a buffer
    larger than L2) before it: (start, end), to read after a synchronize."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    flush.zero_()
    start.record()
    fn()
    end.record()
    return start, end


def interleaved_event_ms(torch, fns, reps, flush):
    """Median ms of `reps` calls of each of fns, taken in turns (fns[0], fns[1], .., fns[0],
    ..), each a timed_call. Taken in turns, a drift of the clocks between blocks of calls cannot
    show up as a difference between the functions."""
    import statistics

    turns = [[timed_call(torch, fn, flush) for fn in fns] for _ in range(reps)]
    torch.cuda.synchronize()
    return [statistics.median(start.elapsed_time(end) for start, end in (turn[i] for turn in turns))
            for i in range(len(fns))]


def median_event_ms(torch, fn, reps, flush):
    """Median ms of `reps` calls of fn (interleaved_event_ms of one function)."""
    return interleaved_event_ms(torch, [fn], reps, flush)[0]


def steady_block_ms(torch, fns, rounds, reps, warm_calls, flush):
    """Median ms of rounds * reps[i] calls of each fns[i], each function in blocks of its own:
    warm_calls[i] untimed calls, which bring the GPU to the clock it holds under that kernel's
    sustained load, then reps[i] timed_calls. The blocks run in the order of fns in even rounds
    and in reverse in odd ones. Under sustained load the H200 holds a lower clock than after
    lighter work (1980 MHz falls within ~0.1 s, and to 1545-1725 MHz at the 700 W cap once the
    load lasts; perf-notes "Steady blocks", "The clock under each kernel's own load"), so calls
    taken in turns with lighter ones, or first after an idle spell, run faster than a training
    step's would."""
    import statistics

    samples = [[] for _ in fns]
    for r in range(rounds):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            for _ in range(warm_calls[i]):
                fns[i]()
            events = [timed_call(torch, fns[i], flush) for _ in range(reps[i])]
            torch.cuda.synchronize()
            samples[i] += [start.elapsed_time(end) for start, end in events]
    return [statistics.median(s) for s in samples]


def time_together(impls, row, bench, three_calls):
    """{name: (fwd ms, bwd ms, fwd+bwd ms)} of every implementation in `impls` ({name: (fwd_only,
    fwd_grad)}), all their calls timed by one call of bench (make_timer), which alternates their
    order between rounds. three_calls(fwd_only, fwd_grad) gives an implementation's forward,
    backward and fwd+bwd calls. An implementation whose first calls raise is left out, its error
    in row[name + "_error"]."""
    names, fns = [], []
    for name, (fwd_only, fwd_grad) in impls.items():
        try:
            calls = three_calls(fwd_only, fwd_grad)
            for call in calls:
                call()
        except Exception as e:  # noqa: BLE001
            row[f"{name}_error"] = repr(e)[:300]
            print(f"  {name} failed: {e!r}"[:300], flush=True)
            continue
        names.append(name)
        fns.extend(calls)
    ms = bench(*fns) if fns else []
    return {name: tuple(ms[3 * i:3 * i + 3]) for i, name in enumerate(names)}


def make_timer(args, torch, dev):
    """bench(*fns) -> the median ms of each fn (steady_block_ms): args.rounds rounds; in each, a
    function's block holds >= args.warmup ms of untimed calls (at least one) and then its share of
    >= args.min_reps timed calls, more where they take under args.rep ms."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device=dev)

    def bench(*fns):
        est_ms = []
        for fn in fns:
            fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            est_ms.append(max((time.perf_counter() - t0) * 1e3, 1e-3))
        warm = [max(1, math.ceil(args.warmup / e)) for e in est_ms]
        reps = [max(math.ceil(args.min_reps / args.rounds), math.ceil(args.rep / args.rounds / e)) for e in est_ms]
        return steady_block_ms(torch, fns, args.rounds, reps, warm, flush)

    return bench


def total_unmasked_pairs(idx, causal, h):
    """Unmasked (row, key) pairs of square bounds idx [B, Hm, S, nb] over all batches and the h
    query heads (mask heads repeat): distributed.row_work's per-row counts, summed."""
    return float(row_work(idx, causal).sum() * (h // idx.shape[1]))


# The output check of every row: the last REFERENCE_ROWS queries of batch 0 on its first and last
# heads against a float32 attention over masks.to_dense's rows; ours must stay within
# REFERENCE_FACTOR times the error of the same attention computed in the inputs' dtype with plain
# torch ops, plus what rounding the reference itself to that dtype costs (twice its largest
# rounding error, at the reference's own scale): FlashAttention-3's rule. That low-precision
# attention is FA3's own test reference: scores and P rounded to the dtype around a float32
# softmax. The tests' (tests/lowp.py, tests/gpu/helpers.py) round every intermediate, the
# softmax's too, a larger error budget that they hold to a smaller factor (tests/tolerance.py).
REFERENCE_ROWS, REFERENCE_FACTOR = 256, 3.0


def reference_errors(torch, q, k, v, spec, scale, out, rows=REFERENCE_ROWS):
    """(largest |out - reference|, largest |plain low-precision - reference|, twice the largest
    error of the reference rounded to out's dtype) on those rows; q, out [B, N, H, D], k, v
    [B, N, Hk, D]; a row without keys has output 0."""
    n, h, hk = q.shape[1], q.shape[2], k.shape[2]
    picked = np.arange(max(0, n - rows), n)
    allowed = masks.to_dense(spec.startend_row_indices[:1], spec.causal, rows=picked)
    allowed = masks.expand_mask_heads(allowed, h, hk)[0]  # [H, rows, N]
    sel = torch.from_numpy(picked).to(q.device)
    ours = lowp = rounding = 0.0
    for head in sorted({0, h - 1}):
        mask = torch.from_numpy(np.array(allowed[head])).to(q.device)  # a copy: expand_mask_heads may broadcast
        kh = head // (h // hk)
        qs, ks, vs = q[0, sel, head], k[0, :, kh], v[0, :, kh]

        def attend(dtype):
            s = (qs.to(dtype) @ ks.to(dtype).T).float() * scale
            p = torch.softmax(s.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
            return (p.to(dtype) @ vs.to(dtype)).float()

        ref = attend(torch.float32)
        ours = max(ours, (out[0, sel, head].float() - ref).abs().max().item())
        lowp = max(lowp, (attend(q.dtype) - ref).abs().max().item())
        rounding = max(rounding, 2 * (ref.to(out.dtype).float() - ref).abs().max().item())
    return ours, lowp, rounding


def check_output(torch, q, k, v, spec, scale, out, what):
    """reference_errors of a finite `out`, or an AssertionError naming `what` where the output
    is not finite or breaks the rule (REFERENCE_FACTOR times the low-precision error, plus the
    reference's own rounding)."""
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    ours, lowp, rounding = reference_errors(torch, q, k, v, spec, scale, out)
    assert ours <= REFERENCE_FACTOR * lowp + rounding, (
        f"{what}: output off the float32 reference by {ours:.3g} (plain {q.dtype} attention: {lowp:.3g}, "
        f"rounding the reference to {out.dtype}: {rounding:.3g})")
    return ours, lowp, rounding


# The GPU's state nvidia-smi reports, sampled before each mask's timings: a run's rates can drift
# with the GPU's state (docs/perf-notes.md, "Timed first": calls timed right after an idle spell
# run faster), and these tell a faster or slower GPU from a faster or slower kernel.
GPU_STATE_FIELDS = {"clocks.sm": "sm_mhz", "temperature.gpu": "temp_c", "power.draw": "power_w",
                    "clocks_event_reasons.active": "throttle"}


def parse_gpu_state(line, fields=GPU_STATE_FIELDS):
    """One nvidia-smi CSV line (--format=csv,noheader,nounits, in `fields`' order) as a dict:
    numbers as floats, the throttle-reason bit mask as given ("0x0000000000000000": none)."""
    values = [v.strip() for v in line.split(",")]
    if len(values) != len(fields):
        return {}
    state = {}
    for key, value in zip(fields.values(), values):
        try:
            state[key] = value if key == "throttle" else float(value)
        except ValueError:  # "[N/A]" and the like
            state[key] = None
    return state


def gpu_state(device_index=0):
    """The GPU's SM clock, temperature, power draw and active clock-event (throttle) reasons now,
    by nvidia-smi's index (the process's GPU where CUDA_VISIBLE_DEVICES does not renumber them);
    without the reasons where this nvidia-smi does not know that field, {} where it fails."""
    numeric = {k: v for k, v in GPU_STATE_FIELDS.items() if v != "throttle"}
    for fields in (GPU_STATE_FIELDS, numeric):
        cmd = ["nvidia-smi", f"--id={device_index}", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return parse_gpu_state(out.splitlines()[0], fields)
    return {}


class Inputs:
    """A configuration's random bf16 inputs: q, k, v and the output gradient do as [B, N, H, D]
    (ours, FA4 direct) and their [B, H, N, D] copies qt, kt, vt, dot (Flex, SDPA)."""

    def __init__(self, torch, b, n, h, d, dev):
        g = torch.Generator(device=dev).manual_seed(1234)
        self.q, self.k, self.v, self.do = (torch.randn(b, n, h, d, device=dev, dtype=torch.bfloat16, generator=g)
                                           for _ in range(4))
        self.qt, self.kt, self.vt, self.dot = (x.transpose(1, 2).contiguous() for x in (self.q, self.k, self.v, self.do))
        self.leaves = (self.q, self.k, self.v, self.qt, self.kt, self.vt)
        for x in self.leaves:
            x.requires_grad_(True)

    def three_calls(self, fwd_only, fwd_grad):
        """An implementation's forward, backward and fwd+bwd calls. The backward alone reruns one
        graph (retain_graph=True); the fwd+bwd call builds and frees its own."""
        out = fwd_grad()

        def grad_of(o):
            return self.do if o.shape == self.do.shape else self.dot

        def bwd():
            for x in self.leaves:
                x.grad = None
            out.backward(grad_of(out), retain_graph=True)

        def fb():
            for x in self.leaves:
                x.grad = None
            o = fwd_grad()
            o.backward(grad_of(o))

        return fwd_only, bwd, fb


class FlexMasks:
    """FlexAttention's mask_mods for bench_gpu.py's masks: one pair per shape, reading a mask's
    (normalised) column bounds from tensors that each mask is copied into, so that masks do not
    recompile. Causality is the second mask_mod, not a captured flag: FA4's CuTe-DSL mask_mod
    turns a 0-d tensor into a Python scalar ("Expected TensorSSA, but got <class 'int'>")."""

    def __init__(self, torch, b, h, n, device):
        self.torch, self.shape, self.device = torch, (b, h, n), device
        self.bounds = [torch.zeros(b, h, n, dtype=torch.int32, device=device) for _ in range(4)]
        lts, lte, uts, ute = self.bounds

        def interval_mod(bi, hi, qi, ki):
            lm = (qi >= lts[bi, hi, ki]) & (qi < lte[bi, hi, ki])
            um = (qi >= uts[bi, hi, ki]) & (qi < ute[bi, hi, ki])
            return ~(lm | um)

        def causal_interval_mod(bi, hi, qi, ki):
            return (ki <= qi) & interval_mod(bi, hi, qi, ki)

        self.mask_mods = {False: interval_mod, True: causal_interval_mod}

    def load(self, idx, causal):
        """Copies a mask's bounds (int32 [B, Hm, N, 1|2|4]) into the mask_mods' tensors, every
        head's (FA4's mask_mod needs the head index live), and returns its mask_mod."""
        b, h, n = self.shape
        hm = idx.shape[1]
        for dst, src in zip(self.bounds, normalized_bounds(idx, causal, n)):
            src = self.torch.from_numpy(np.ascontiguousarray(src)).to(self.device, self.torch.int32)
            if hm != h:
                src = src.repeat_interleave(h // hm, dim=1) if hm > 1 else src.expand(b, h, n)
            dst.copy_(src)
        return self.mask_mods[bool(causal)]

    def block_mask(self, idx, causal, row, reps=3):
        """The mask's BlockMask, its build time (the mean of `reps` builds) in row["flex_build_ms"]."""
        from torch.nn.attention.flex_attention import create_block_mask

        b, h, n = self.shape
        mask_mod = self.load(idx, causal)

        def build():
            return create_block_mask(mask_mod, b, h, n, n, device=self.device, _compile=True)

        bm = build()
        self.torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            bm = build()
        self.torch.cuda.synchronize()
        row["flex_build_ms"] = (time.perf_counter() - t0) / reps * 1e3
        return bm


def bench_config(cfg, mask_names, args, torch, on_row=None):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import flex_attention
    import torch.nn.functional as F

    from paddle_flashmask.torch import flashmask_attention

    n, b, d, h = CONFIGS[cfg]
    dev = "cuda"
    scale = d**-0.5
    x = Inputs(torch, b, n, h, d, dev)
    q, k, v, qt, kt, vt = x.q, x.k, x.v, x.qt, x.kt, x.vt
    bench = make_timer(args, torch, dev)
    flex = torch.compile(flex_attention, dynamic=False)
    flex_masks = FlexMasks(torch, b, h, n, dev)

    def want(name):  # --impls
        return not args.impls or name == "ours" or name in args.impls.split(",")

    def flex_calls(bm, options):
        """flex_attention's (fwd_only, fwd_grad) with kernel_options `options`, on [B, H, N, D]."""
        def flex_g():
            return flex(qt, kt, vt, block_mask=bm, scale=scale, kernel_options=options)

        def flex_f():
            with torch.no_grad():
                return flex_g()

        return flex_f, flex_g

    rows = []
    for mname in mask_names:
        spec = build_mask(mname, n, b, h)
        idx, causal = spec.startend_row_indices, spec.causal
        hm = idx.shape[1]
        total_pairs = total_unmasked_pairs(idx, causal, h)
        density = total_pairs / (b * h * float(n) * n)
        fwd_flops = 4.0 * d * total_pairs
        row = dict(config=cfg, mask=mname, N=n, B=b, H=h, D=d, density=density, causal=bool(causal))
        idx_t = torch.from_numpy(idx).to(dev)

        def tf(ms, mult):
            return mult * fwd_flops / (ms * 1e-3) / 1e12

        # Every implementation that runs this mask, as (fwd_only, fwd_grad), timed together below.
        impls = {}
        ours_idx = ours_indices(mname, idx_t)

        def ours_f():
            with torch.no_grad():
                return flashmask_attention(q, k, v, ours_idx, causal=causal)

        def ours_g():
            return flashmask_attention(q, k, v, ours_idx, causal=causal)

        impls["ours"] = (ours_f, ours_g)
        # FlexAttention on its Triton backend ("flex") and on FlashAttention-4's CuTe-DSL
        # kernels ("fa4": kernel_options BACKEND=FLASH, where flash-attn-4 is installed),
        # one BlockMask for both.
        if not args.no_flex and (want("flex") or (want("fa4") and HAVE_FA4)):
            try:
                bm = flex_masks.block_mask(idx, causal, row)
                if want("flex"):
                    impls["flex"] = flex_calls(bm, None)
                if want("fa4") and HAVE_FA4:
                    impls["fa4"] = flex_calls(bm, {"BACKEND": "FLASH"})
            except Exception as e:  # noqa: BLE001  (no BlockMask: neither backend can run)
                row["flex_error"] = repr(e)[:300]
                print(f"  flex block mask failed: {e!r}"[:300], flush=True)
        # FlashAttention-4 called directly (flash_attn.cute.flash_attn_func on [B, N, H, D]),
        # SDPA flash / cuDNN: full and causal only
        if mname in DENSE_MASKS and HAVE_FA4 and want("fa4direct"):
            def fa4_g():
                out = fa4_attention(q, k, v, causal=bool(causal), softmax_scale=scale)
                return out[0] if isinstance(out, tuple) else out  # it may return (out, lse)

            def fa4_f():
                with torch.no_grad():
                    return fa4_g()

            impls["fa4direct"] = (fa4_f, fa4_g)
        if mname in DENSE_MASKS:
            for key, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                if not want(key):
                    continue
                def sg(backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale)

                def sf(sg=sg):
                    with torch.no_grad():
                        return sg()

                impls[key] = (sf, sg)
        # SDPA with the dense bool mask (where it fits: N <= 8K, one mask head)
        dense = None
        if n <= 8192 and hm == 1 and not args.no_dense and want("dense"):
            try:
                dense = torch.from_numpy(masks.to_dense(idx, causal)).to(dev)  # [B,1,N,N]
            except Exception as e:  # noqa: BLE001
                row["dense_error"] = repr(e)[:200]

        if dense is not None:
            def dg():
                return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=dense, scale=scale)

            def df():
                with torch.no_grad():
                    return dg()

            impls["dense"] = (df, dg)

        row["gpu_state"] = gpu_state(torch.cuda.current_device())
        times = time_together(impls, row, bench, x.three_calls)
        if "ours" not in times:
            raise RuntimeError(f"{cfg} {mname}: our kernels failed: {row['ours_error']}")
        for key, t in times.items():
            row.update({f"{key}_fwd": tf(t[0], 1), f"{key}_bwd": tf(t[1], 2.5), f"{key}_fwdbwd": tf(t[2], 3.5)})
        row["ours_ms"] = times.get("ours")
        o_ours = ours_f()
        row["ref_err"], row["ref_err_lowp"], row["ref_err_rounding"] = check_output(
            torch, q.detach(), k.detach(), v.detach(), spec, scale, o_ours, mname)
        for key in ("flex", "fa4"):
            if key in times:
                row[f"max_abs_diff_vs_{key}"] = (impls[key][0]().transpose(1, 2).float() - o_ours.float()).abs().max().item()
        if "fa4direct" in times:
            row["max_abs_diff_vs_fa4direct"] = (impls["fa4direct"][0]().float() - o_ours.float()).abs().max().item()
        impls = dense = None  # the dense mask (1 GiB at 8K) freed before the next mask's
        torch.cuda.empty_cache()
        rows.append(row)
        if on_row is not None:
            on_row(row)
        print(json.dumps({k2: (float(f"{v2:.3g}") if isinstance(v2, float) else v2) for k2, v2 in row.items()
                          if k2 not in ("ours_ms",)}), flush=True)
    return rows


def fmt(x):
    return "-" if x is None else f"{x:.0f}"


def fmt1(x):
    return "-" if x is None else f"{x:.1f}"


def cell(row, key):
    """A rate of the table: `err` where that implementation ran and raised (the JSON row keeps
    the error), `-` where it did not run."""
    if row.get(key) is None and f"{key.rsplit('_', 1)[0]}_error" in row:
        return "err"
    return fmt(row.get(key))


def ratio(row, key):
    """ours fwd+bwd over the baseline's, formatted; `-` where the baseline did not run."""
    return f"{row['ours_fwdbwd'] / row[key]:.2f}" if row.get(key) else "-"


# Issue 17's bars (docs/perf-notes.md): full and causal fwd+bwd >= FA4 called directly; every
# other mask >= the lower of 1.3x FA4-Flex and 0.9x FA4-direct's full rate at the same N; every
# mask >= 0.8x our full mask's rate (random_eviction, per head, exempt); a fwd+bwd call no longer
# than its forward and backward timed apart (+2%).
FA4_FLEX_MARGIN, FA4_DENSE_SHARE, OWN_FULL_SHARE, FUSED_SLACK = 1.3, 0.9, 0.8, 1.02


# A run's meta "timing": how its calls were taken (runs before 2026-12-03 timed each implementation's
# calls in turns of their own, one implementation after another; the first runs, in blocks).
TIMING_NOTES = {
    "interleaved": ", fwd/bwd/fwd+bwd in turns",
    "implementations_interleaved": ", every implementation's fwd/bwd/fwd+bwd in turns with the others'",
    "steady_blocks": ", each call in blocks after its own warm-up, blocks in alternating order",
}


def fa4_target_lines(rows, settled):
    """Markdown rows of each run's standing against those bars (runs with FA4-direct columns).
    settled: the runs whose forward, backward and fwd+bwd calls were timed in turns or in steady
    blocks (TIMING_NOTES); in the others (short blocks of calls, one after another) the last ratio
    also holds the clocks' drift between blocks."""
    out = []
    keys = list(dict.fromkeys((r["run"], r["config"]) for r in rows))  # a run may hold several configs
    for run, config in keys:
        rs = {r["mask"]: r for r in rows if r["run"] == run and r["config"] == config}
        label = run if sum(k[0] == run for k in keys) == 1 else f"{run} {config}"
        full = rs.get("full")
        if not full or not full.get("fa4direct_fwdbwd"):
            continue
        for mask, r in rs.items():
            if mask in DENSE_MASKS:
                target, rule = r.get("fa4direct_fwdbwd"), "FA4 direct"
                if r.get("fa4direct_fwd"):
                    rule += f"; fwd alone {r['ours_fwd'] / r['fa4direct_fwd']:.2f}x"
            elif r.get("fa4_fwdbwd"):
                target = min(FA4_FLEX_MARGIN * r["fa4_fwdbwd"], FA4_DENSE_SHARE * full["fa4direct_fwdbwd"])
                rule = f"min({FA4_FLEX_MARGIN}x FA4-Flex, {FA4_DENSE_SHARE}x FA4 full)"
            else:
                target, rule = None, "-"
            t_f, t_b, t_fb = r["ours_ms"]
            own = r["ours_fwdbwd"] / full["ours_fwdbwd"]
            fused = t_fb / (t_f + t_b)
            vs_bar = f"{r['ours_fwdbwd'] / target:.2f}" if target else "-"
            own_note = "" if own >= OWN_FULL_SHARE or mask == "random_eviction" else f" (below {OWN_FULL_SHARE})"
            fused_note = "" if fused <= FUSED_SLACK else f" (over {FUSED_SLACK})"
            if run not in settled:
                fused_note += " (timed in blocks)"
            out.append(f"| {label} | {mask} | {fmt(r['ours_fwdbwd'])} | {fmt(target)} ({rule}) | {vs_bar} | "
                       f"{own:.2f}{own_note} | {fused:.3f}{fused_note} |")
    if not out:
        return []
    return ["", "## Against issue 17's bars (runs with FA4; issue 18 holds D=64 to the same)", "",
            "Runs marked \"timed in blocks\" timed the forward, the backward and the fwd+bwd call in",
            "short blocks of calls, one after another, without a warm-up of their own, so their last ratio",
            "also holds the clocks' drift between the blocks (docs/perf-notes.md, \"The fwd+bwd call\").", "",
            "| run | mask | ours fwd+bwd | bar | ours / bar | / our full | fwd+bwd time / (fwd + bwd) |",
            "|---|---|---|---|---|---|---|", *out]


def merge(out_dir: pathlib.Path, tag: str, parts) -> pathlib.Path:
    """Joins the parts of one run (its masks measured in several device calls) into
    gpu_<tag>.json: the rows in the parts' order, the first part's meta, and a note with
    each part's masks and date (the report prints it)."""
    datas = [json.load(open(p)) for p in parts]
    for p, d in zip(parts, datas):
        if not d.get("rows"):
            raise ValueError(f"--merge: {p} has no rows")
        configs = {r["config"] for r in d["rows"]} | {r["config"] for r in datas[0]["rows"]}
        if len(configs) != 1:
            raise ValueError(f"--merge: {p} holds other configs than {parts[0]}: {sorted(configs)}")
    meta = dict(datas[0]["meta"], tag=tag)
    meta["note"] = f"masks in {len(datas)} device calls: " + ", ".join(
        f"{d['rows'][0]['mask']} to {d['rows'][-1]['mask']} at {d['meta']['date']}" for d in datas)
    path = out_dir / f"gpu_{tag}.json"
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": [r for d in datas for r in d["rows"]]}, f, indent=1)
    return path


def report(out_dir: pathlib.Path):
    rows = []
    meta = {}
    for path in sorted(glob.glob(str(out_dir / "gpu_*.json"))):
        data = json.load(open(path))
        meta[os.path.basename(path)] = data.get("meta", {})
        tag = data.get("meta", {}).get("tag", os.path.basename(path))
        rows.extend(dict(r, run=tag) for r in data["rows"])
    order = {c: i for i, c in enumerate(CONFIGS)}
    rows.sort(key=lambda r: (order.get(r["config"], 99), r["run"], MASKS.index(r["mask"]) if r["mask"] in MASKS else 99))
    json.dump({"meta": meta, "rows": rows}, open(out_dir / "gpu.json", "w"), indent=1)
    lines = [
        "# FlashMask CUDA kernels vs baselines (same process, same inputs)",
        "",
        "TFLOPs/s counting only unmasked (row, key) pairs (fwd = 4·D·H·pairs, bwd = 2.5x, fwd+bwd = 3.5x),",
        "bf16, total tokens 128K, median of CUDA-event-timed calls (L2 flushed before each; the timed",
        "calls per median are listed per run). Generated by `benchmarks/bench_gpu.py --report` from the",
        "runs of record, `gpu_*.json` here; runs of earlier libraries or timing methods, replaced by",
        "these, are in `history/` (each file's meta says its library and timing).",
        "",
    ]
    for m in meta.values():
        if m:
            reps = f", >= {m['min_reps']} timed calls per median" if "min_reps" in m else ", triton do_bench medians"
            reps += TIMING_NOTES.get(m.get("timing"), ", fwd/bwd/fwd+bwd in blocks")
            if "warmup_ms" in m:
                reps += f" ({m['warmup_ms']:g} ms of warm-up per block, {m['rounds']} rounds)"
            if m.get("impls"):
                reps += f", only ours, {m['impls'].replace(',', ', ')}"
            note = f" ({m['note']})" if m.get("note") else ""
            lines.append(f"- `{m.get('tag')}`: {m.get('device')}, torch {m.get('torch')}, {m.get('date')}{reps}{note}")
    lines.append("")
    hdr = ("| run | N | D | mask | density | ours fwd | ours bwd | ours fwd+bwd | FA4 fwd | FA4 fwd+bwd | "
           "FA4-Flex fwd+bwd | Flex fwd | Flex fwd+bwd | FA2 fwd+bwd | cuDNN fwd+bwd | dense fwd+bwd | "
           "ours/FA4 | ours/FA4-Flex | ours/Flex | Flex build ms |")
    lines += [
        "FA4 = FlashAttention-4 called directly (full and causal); FA4-Flex = flex_attention on FA4's",
        "kernels (BACKEND=FLASH) with the same BlockMask as Flex (Triton). `-`: not run or not installed;",
        "`err`: ran and raised (the error is in the run's JSON row, e.g. FA4's block sparsity at D=256).",
        "",
        hdr,
        "|" + "---|" * 20,
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['N'] // 1024}K | {r['D']} | {r['mask']} | {r['density']:.2f} | {cell(r, 'ours_fwd')} | "
            f"{cell(r, 'ours_bwd')} | {cell(r, 'ours_fwdbwd')} | {cell(r, 'fa4direct_fwd')} | "
            f"{cell(r, 'fa4direct_fwdbwd')} | {cell(r, 'fa4_fwdbwd')} | {cell(r, 'flex_fwd')} | "
            f"{cell(r, 'flex_fwdbwd')} | {cell(r, 'fa2_fwdbwd')} | {cell(r, 'cudnn_fwdbwd')} | "
            f"{cell(r, 'dense_fwdbwd')} | {ratio(r, 'fa4direct_fwdbwd')} | {ratio(r, 'fa4_fwdbwd')} | "
            f"{ratio(r, 'flex_fwdbwd')} | {fmt1(r.get('flex_build_ms'))} |"
        )
    lines += fa4_target_lines(rows, {m.get("tag") for m in meta.values() if m.get("timing") in TIMING_NOTES})
    (out_dir / "gpu.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        runs = list(dict.fromkeys((r["config"], r["run"]) for r in rows))  # one panel per run of a config
        fig, axes = plt.subplots(len(runs), 1, figsize=(13, 3.2 * len(runs)), squeeze=False)
        for ax, (c, run) in zip(axes[:, 0], runs):
            rs = [r for r in rows if r["config"] == c and r["run"] == run]
            x = np.arange(len(rs))
            series = (("ours_fwdbwd", "FlashMask (ours)"), ("fa4direct_fwdbwd", "FA4"), ("fa4_fwdbwd", "FA4-Flex"),
                      ("flex_fwdbwd", "FlexAttention"), ("fa2_fwdbwd", "SDPA FA2"), ("cudnn_fwdbwd", "SDPA cuDNN"),
                      ("dense_fwdbwd", "SDPA dense mask"))
            width = 0.8 / len(series)
            for i, (key, label) in enumerate(series):
                ax.bar(x + (i - (len(series) - 1) / 2) * width, [r.get(key) or 0 for r in rs], width, label=label)
            ax.set_xticks(x)
            ax.set_xticklabels([r["mask"] for r in rs], rotation=20, fontsize=8)
            ax.set_ylabel("fwd+bwd TFLOPs/s")
            ax.set_title(f"{c} ({run})")
        axes[0, 0].legend(fontsize=8, ncol=7)
        fig.tight_layout()
        fig.savefig(out_dir / "gpu.png", dpi=90)
    except Exception as e:  # noqa: BLE001
        print("chart skipped:", e)
    print((out_dir / "gpu.md").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="8k-128,32k-128")
    ap.add_argument("--masks", default=",".join(MASKS),
                    help="comma-separated: the twelve benchmark masks (the default) or the diagnostic "
                         + ", ".join(ALIGNED_MASKS))
    ap.add_argument("--tag", default="run")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--warmup", type=int, default=300,
                    help="ms of untimed calls before each block of timed ones (the clock under sustained load)")
    ap.add_argument("--rep", type=int, default=100, help="ms of timed calls to aim for (at least --min-reps)")
    ap.add_argument("--min-reps", type=int, default=10, help="fewest timed calls behind each median")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of blocks, their order alternating")
    ap.add_argument("--impls", default=None,
                    help="comma-separated baselines to time beside ours (default every one that runs): "
                         + ", ".join(IMPLS[1:]))
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar=("TAG", "PART"),
                    help="join PART files (one run's masks in several calls) into gpu_TAG.json in --out")
    args = ap.parse_args()
    unknown = set(args.impls.split(",")) - set(IMPLS) if args.impls else set()
    if unknown:
        ap.error(f"--impls: {', '.join(sorted(unknown))} not among {', '.join(IMPLS)}")
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:
        if len(args.merge) < 2:
            ap.error("--merge needs a TAG and at least one PART file")
        print("wrote", merge(out_dir, args.merge[0], args.merge[1:]))
        return
    if args.report:
        report(out_dir)
        return
    import torch

    # Timing the backward alone reuses one graph (retain_graph=True), which compiled
    # FlexAttention refuses with donated buffers.
    try:
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
    except (ImportError, AttributeError):
        pass
    rows = []
    meta = dict(tag=args.tag, device=torch.cuda.get_device_name(), torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M"), min_reps=args.min_reps, timing="steady_blocks",
                warmup_ms=args.warmup, rounds=args.rounds)
    if args.impls:
        meta["impls"] = args.impls
    for cfg in args.configs.split(","):
        names = args.masks.split(",")
        if cfg.startswith("128k"):
            names = [m for m in names if m in ("full", "causal", "causal_document", "document", "share_question")]
        def save(row):  # after every row, so a time limit loses nothing measured
            rows.append(row)
            with open(out_dir / f"gpu_{args.tag}.json", "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

        bench_config(cfg, names, args, torch, on_row=save)
        torch.cuda.empty_cache()
        # Each configuration compiles flex_attention for its own shapes; without a reset, a
        # run of two configurations reached dynamo's recompile limit (8) in the second, whose
        # flex_attention then ran uncompiled and asked for the whole score matrix (32K, B=4,
        # H=64: 1 TiB), so its Flex and FA4-Flex columns failed (history/gpu_d64_32k_v71.json).
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
