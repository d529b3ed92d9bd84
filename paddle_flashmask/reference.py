"""Float64 NumPy reference of FlashMask attention, written from the documented semantics.

Deliberately the plain O(N^2) computation through the dense mask
(`masks.to_dense`): every kernel is tested against it. Layout [B, S, H, D];
lse is [B, H, Sq]; a row with every key masked gives output 0, lse -inf and
zero gradients.
"""

from __future__ import annotations

import numpy as np

from paddle_flashmask.masks.dense import expand_mask_heads, to_dense


def _probabilities(q, k, startend_row_indices, causal, softmax_scale, block_mask):
    """Returns (p [B,H,Sq,Sk], lse [B,H,Sq], k expanded to query heads [B,Sk,H,D])."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    _, seqlen_q, num_heads, head_dim = q.shape
    num_heads_k = k.shape[2]
    scale = head_dim**-0.5 if softmax_scale is None else float(softmax_scale)
    k_full = np.repeat(k, num_heads // num_heads_k, axis=2)
    allowed = to_dense(startend_row_indices, causal, seqlen_q=seqlen_q, block_mask=block_mask)
    allowed = expand_mask_heads(allowed, num_heads, num_heads_k)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k_full) * scale
    scores = np.where(allowed, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    empty = ~np.isfinite(row_max)
    row_max = np.where(empty, 0.0, row_max)
    p = np.exp(scores - row_max)
    denom = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(empty, -np.inf, row_max + np.log(np.where(empty, 1.0, denom)))[..., 0]
    p = np.where(empty, 0.0, p / np.where(empty, 1.0, denom))
    return p, lse, scale, k_full


def attention_forward(q, k, v, startend_row_indices, causal, softmax_scale=None, block_mask=None):
    """Returns (out [B,Sq,H,D] float64, lse [B,H,Sq] float64)."""
    p, lse, _, _ = _probabilities(q, k, startend_row_indices, causal, softmax_scale, block_mask)
    v = np.asarray(v, dtype=np.float64)
    v_full = np.repeat(v, p.shape[1] // v.shape[2], axis=2)
    out = np.einsum("bhqk,bkhd->bqhd", p, v_full)
    return out, lse


def attention_backward(
    q, k, v, startend_row_indices, causal, dout, softmax_scale=None, block_mask=None
):
    """Gradients of sum(out * dout): returns (dq, dk, dv) float64, shaped like q, k, v."""
    p, _, scale, k_full = _probabilities(q, k, startend_row_indices, causal, softmax_scale, block_mask)
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    dout = np.asarray(dout, dtype=np.float64)
    batch, seqlen_k, num_heads_k, head_dim = v.shape
    group = p.shape[1] // num_heads_k
    v_full = np.repeat(v, group, axis=2)
    dp = np.einsum("bqhd,bkhd->bhqk", dout, v_full)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = np.einsum("bhqk,bkhd->bqhd", ds, k_full) * scale
    dk_full = np.einsum("bhqk,bqhd->bkhd", ds, q) * scale
    dv_full = np.einsum("bhqk,bqhd->bkhd", p, dout)
    fold = (batch, seqlen_k, num_heads_k, group, head_dim)
    return dq, dk_full.reshape(fold).sum(axis=3), dv_full.reshape(fold).sum(axis=3)
