"""Reference attention in PyTorch (fp32 and plain low precision) and the
FlashAttention tolerance rule used by the GPU tests."""

from __future__ import annotations

import os

import numpy as np

from paddle_flashmask.masks import to_dense
from tests import tolerance


def dense_allowed(torch, idx, causal, seqlen_q, block_mask, num_heads, num_heads_k, device):
    """bool [B, H, Sq, Sk] (True = attend), expanded to query heads."""
    allowed = to_dense(idx, causal, seqlen_q=seqlen_q, block_mask=block_mask)
    t = torch.from_numpy(allowed).to(device)
    hm = t.shape[1]
    if hm == num_heads:
        return t
    if hm == 1:
        return t.expand(-1, num_heads, -1, -1)
    return t.repeat_interleave(num_heads // num_heads_k, dim=1)


def attention_ref(torch, q, k, v, allowed, scale, upcast=True):
    """softmax(Q K^T * scale, masked) V, fully masked rows -> 0. Returns (out, lse)."""
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    l = p.sum(dim=-1, keepdim=True)
    lse = (m.float() + torch.log(l.float())).squeeze(-1)
    p = p / torch.where(l == 0, torch.ones_like(l), l)
    out = torch.einsum("bhqk,bkhd->bqhd", p.to(v.dtype), v)
    return out.to(dtype) if not upcast else out, lse


def assert_close_fa(name, ours, ref, pt, factor=tolerance.FACTOR, floor=0.0):
    """FlashAttention's rule on torch tensors (tests/tolerance.py)."""
    return tolerance.assert_close_fa(
        name, *(t.detach().float().cpu().numpy() for t in (ours, ref, pt)), factor=factor, floor=floor
    )


def fresh_seed():
    s = int.from_bytes(os.urandom(4), "little")
    print(f"seed={s}")
    return s


def rng_for(seed):
    return np.random.default_rng(seed)
