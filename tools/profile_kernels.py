"""One fwd+bwd for ncu: python tools/profile_kernels.py [N] [B] [H] [D] [mask] [impl].

impl: ours (default), fa4 (FlashAttention-4 called directly, flash_attn.cute.flash_attn_func)
or cudnn (torch's scaled_dot_product_attention on its cuDNN backend, as bench_gpu.py's cuDNN
column); fa4 and cudnn run full and causal only, so that ncu can compare the kernels on the same
shapes. Ours is called as bench_gpu.py calls it (full and causal without bounds: the mask-less
kernels).
"""
import sys

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
sys.path.insert(0, "tools")
from bench_gpu import build_mask  # noqa: E402
from fused_call_profile import attention_call, attention_inputs  # noqa: E402

n, b, h, d = (int(x) for x in (sys.argv[1:5] if len(sys.argv) > 4 else (8192, 4, 32, 128)))
mask = sys.argv[5] if len(sys.argv) > 5 else "full"
impl = sys.argv[6] if len(sys.argv) > 6 else "ours"
spec = build_mask(mask, n, b, h)
q, k, v, do = attention_inputs(impl, b, n, h, d)  # fa4 takes [B, N, H, D], as ours
torch.cuda.nvtx.range_push("attention")  # the forward's kernels for ncu --nvtx (the backward runs on autograd's thread)
if impl == "fa4":
    if mask not in ("full", "causal"):
        sys.exit(f"fa4 runs the dense masks only (full, causal), not {mask}")
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(q, k, v, causal=mask == "causal")
    out = out[0] if isinstance(out, tuple) else out
else:  # ours or cudnn, called as fused_call_profile.py calls them
    out = attention_call(impl, spec, mask)(q, k, v)
out.backward(do)
torch.cuda.nvtx.range_pop()
torch.cuda.synchronize()
print("done")
