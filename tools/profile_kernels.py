"""One fwd+bwd for ncu: python tools/profile_kernels.py [N] [B] [H] [D] [mask]."""
import sys

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
from bench_gpu import build_mask  # noqa: E402
from paddle_flashmask.torch import flashmask_attention  # noqa: E402

n, b, h, d = (int(x) for x in (sys.argv[1:5] if len(sys.argv) > 4 else (8192, 4, 32, 128)))
mask = sys.argv[5] if len(sys.argv) > 5 else "full"
spec = build_mask(mask, n, b, h)
q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
for x in (q, k, v):
    x.requires_grad_()
flashmask_attention(q, k, v, spec.startend_row_indices, causal=spec.causal).backward(do)
torch.cuda.synchronize()
print("done")
