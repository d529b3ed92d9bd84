"""Per-kernel CUDA times of our forward, backward and fwd+bwd call, in bench_gpu.py's three
timing modes, to tell whether a fwd+bwd call costs more than its parts and where.

    python tools/fused_call_profile.py CONFIGS MASKS OUT.json [IMPL]  # e.g. 8k-128,32k-128 document,full

IMPL: ours (default) or cudnn (torch's scaled_dot_product_attention on its cuDNN backend, full
and causal only), to compare the kernels each launches and their times on the same shapes.

For each config and mask: the event-timed median of each mode (blocks of 15 calls, L2 flushed
before each, as bench_gpu.py timed them before it took the modes in turns) and, from
torch.profiler over 5 more calls of each mode, every kernel's mean time per call.
"""
import collections
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
from bench_gpu import CONFIGS, build_mask, median_event_ms, ours_indices  # noqa: E402
from paddle_flashmask.torch import flashmask_attention  # noqa: E402

PROFILED_CALLS, TIMED_CALLS, MIN_KERNEL_MS = 5, 15, 0.005


def _profiled(step):
    """Mean CUDA time per call of each kernel `step` launches (names cut to 70 characters),
    over PROFILED_CALLS calls."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_CALLS):
            step()
        torch.cuda.synchronize()
    per = collections.defaultdict(float)
    for e in prof.events():
        if e.device_type.name == "CUDA":
            per[e.name[:70]] += e.device_time / 1e3 / PROFILED_CALLS
    return per


def kernel_ms(fn, flush):
    """Mean CUDA time per call of each kernel of fn, with L2 flushed before each call and the
    flush's own kernels (profiled alone) taken out."""
    def step():
        flush.zero_()
        fn()

    per = _profiled(step)
    for name, ms in _profiled(flush.zero_).items():
        per[name] -= ms
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda x: -x[1]) if v > MIN_KERNEL_MS}


def attention_inputs(impl, b, n, h, d):
    """q, k, v (leaves that take gradients) and dout, random bf16, in the layout `impl` takes as
    bench_gpu.py gives it: [B, N, H, D] for ours, contiguous [B, H, N, D] copies for cuDNN's SDPA."""
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    if impl == "cudnn":
        q, k, v, do = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))
    for x in (q, k, v):
        x.requires_grad_(True)
    return q, k, v, do


def attention_call(impl, spec, mname):
    """The call to profile, on attention_inputs' tensors: ours as bench_gpu.py calls it (full and
    causal without bounds), or cuDNN's SDPA as bench_gpu.py's cuDNN column calls it."""
    if impl == "ours":
        idx = ours_indices(mname, torch.from_numpy(spec.startend_row_indices).cuda())
        return lambda q, k, v: flashmask_attention(q, k, v, idx, causal=spec.causal)
    if impl != "cudnn" or mname not in ("full", "causal"):
        sys.exit(f"not {impl} on {mname}: ours runs every mask, cudnn full and causal only")

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=spec.causal)

    return sdpa


def profile_mask(cfg, mname, flush, impl):
    n, b, d, h = CONFIGS[cfg]
    q, k, v, do = attention_inputs(impl, b, n, h, d)
    attend = attention_call(impl, build_mask(mname, n, b, h), mname)
    out = attend(q, k, v)

    def fwd():
        with torch.no_grad():
            return attend(q, k, v)

    def bwd():
        for x in (q, k, v):
            x.grad = None
        out.backward(do, retain_graph=True)

    def fwdbwd():
        for x in (q, k, v):
            x.grad = None
        attend(q, k, v).backward(do)

    row = {}
    for name, fn in (("fwd", fwd), ("bwd", bwd), ("fwdbwd", fwdbwd)):
        for _ in range(3):
            fn()
        row[name + "_event_ms"] = median_event_ms(torch, fn, TIMED_CALLS, flush)
        row[name + "_kernels_ms"] = kernel_ms(fn, flush)
    return row


def main():
    configs, mask_names, out_path = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
    impl = sys.argv[4] if len(sys.argv) > 4 else "ours"
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    res = {}
    for cfg in configs:
        for mname in mask_names:
            row = res[f"{cfg}/{mname}/{impl}"] = profile_mask(cfg, mname, flush, impl)
            f, b, fb = (row[m + "_event_ms"] for m in ("fwd", "bwd", "fwdbwd"))
            print(f"{cfg} {mname} {impl}: fwd {f:.2f} bwd {b:.2f} fwd+bwd {fb:.2f} ms ({fb / (f + b):.3f} of the parts)")
            for m in ("fwd", "bwd", "fwdbwd"):
                print(f"  {m}: {json.dumps(row[m + '_kernels_ms'])}")
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
