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


def _probabilities(torch, q, k, allowed, scale):
    """(p [B, H, Sq, Sk] in q's dtype, lse float32) of the masked softmax; fully masked rows
    get p = 0 and lse = -inf."""
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    l = p.sum(dim=-1, keepdim=True)
    lse = (m.float() + torch.log(l.float())).squeeze(-1)
    return p / torch.where(l == 0, torch.ones_like(l), l), lse


def attention_ref(torch, q, k, v, allowed, scale, upcast=True):
    """softmax(Q K^T * scale, masked) V, fully masked rows -> 0. Returns (out, lse)."""
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    p, lse = _probabilities(torch, q, k, allowed, scale)
    v = v.repeat_interleave(q.shape[2] // v.shape[2], dim=2)
    out = torch.einsum("bhqk,bkhd->bqhd", p.to(v.dtype), v)
    return out.to(dtype) if not upcast else out, lse


def attention_grads_lowp(torch, q, k, v, out, dout, allowed, scale):
    """dq, dk, dv computed plainly in q's dtype by FlashAttention's formulation,
    dS = P (dP - D) with D = rowsum(dO * O) from the low-precision output `out`, as every
    FlashAttention-style kernel computes it. (Autograd's softmax backward uses rowsum(dP * P)
    instead and so misses the error that rounding O puts into D, which a sharp softmax
    carries into dQ and dK.)"""
    with torch.no_grad():
        p, _ = _probabilities(torch, q, k, allowed, scale)
        group = q.shape[2] // k.shape[2]
        k_full, v_full = (t.repeat_interleave(group, dim=2) for t in (k, v))
        dp = torch.einsum("bqhd,bkhd->bhqk", dout, v_full)
        d = torch.einsum("bqhd,bqhd->bhq", dout, out)[..., None]
        ds = p * (dp - d)
        fold = tuple(k.shape[:3]) + (group, k.shape[3])
        dq = torch.einsum("bhqk,bkhd->bqhd", ds, k_full) * scale
        dk = (torch.einsum("bhqk,bqhd->bkhd", ds, q) * scale).reshape(fold).sum(dim=3)
        dv = torch.einsum("bhqk,bqhd->bkhd", p, dout).reshape(fold).sum(dim=3)
    return dq, dk, dv


def assert_close_fa(name, ours, ref, pt, factor=tolerance.FACTOR, floor=0.0):
    """FlashAttention's rule on torch tensors (tests/tolerance.py); pt is the low-precision
    computation, in its own dtype."""
    return tolerance.assert_close_fa(
        name, *(t.detach().float().cpu().numpy() for t in (ours, ref, pt)), str(pt.dtype).replace("torch.", ""),
        factor=factor, floor=floor,
    )


def fresh_seed():
    s = int.from_bytes(os.urandom(4), "little")
    print(f"seed={s}")
    return s


def rng_for(seed):
    return np.random.default_rng(seed)
