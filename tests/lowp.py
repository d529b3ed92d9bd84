"""The plain low-precision attention computation in NumPy, with every intermediate rounded
to float16 or bfloat16 as a framework's ops in that dtype would: the error budget of
FlashAttention's rule (tests/tolerance.py) where no torch is at hand (the CPU fuzz test,
the Paddle GPU tests). tests/gpu/helpers.py computes the same in torch on the GPU.
"""

from __future__ import annotations

import numpy as np

from paddle_flashmask.masks.dense import expand_mask_heads, to_dense


def round_to(x, dtype: str) -> np.ndarray:
    """float32 values of `x` rounded to `dtype` (round to nearest even)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def lowp_attention(q, k, v, dout, idx, causal, scale, block_mask, dtype):
    """out and (dq, dk, dv) computed plainly with every intermediate rounded to dtype."""
    r = lambda x: round_to(x, dtype)  # noqa: E731
    heads, heads_k = q.shape[2], k.shape[2]
    group = heads // heads_k
    allowed = expand_mask_heads(to_dense(idx, causal, seqlen_q=q.shape[1], block_mask=block_mask), heads, heads_k)
    kf, vf = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    s = np.where(allowed, r(r(np.einsum("bqhd,bkhd->bhqk", q, kf)) * scale), -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = r(np.exp(s - m))
    denom = r(p.sum(axis=-1, keepdims=True))
    p = r(p / np.where(denom == 0, 1.0, denom))
    out = r(np.einsum("bhqk,bkhd->bqhd", p, vf))
    dp = r(np.einsum("bqhd,bkhd->bhqk", dout, vf))
    # D = rowsum(dO * O) from the rounded output, as the kernels compute it (tests/gpu/helpers.py
    # attention_grads_lowp says why).
    d = r(np.einsum("bqhd,bqhd->bhq", dout, out))[..., None]
    ds = r(p * r(dp - d))
    dq = r(r(np.einsum("bhqk,bkhd->bqhd", ds, kf)) * scale)
    fold = k.shape[:3] + (group, k.shape[3])
    dk = r(r(np.einsum("bhqk,bqhd->bkhd", ds, q)).reshape(fold).sum(axis=3) * scale)
    dv = r(np.einsum("bhqk,bqhd->bkhd", p, dout).reshape(fold).sum(axis=3))
    return out, (dq, dk, dv)
