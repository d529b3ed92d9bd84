"""NumPy <-> Paddle GPU tensors without Paddle's own GPU kernels, and the references.

Inputs are drawn in NumPy, rounded to the test dtype there (so the float64 reference
sees exactly what the kernel sees), cast on the CPU and copied to the GPU; results
are copied back and cast on the CPU. The low-precision computation (tests/lowp.py) sets
the error budget (tests/tolerance.py).
"""

from __future__ import annotations

import os

import numpy as np
import paddle

from paddle_flashmask import reference
from tests import tolerance
from tests.lowp import lowp_attention, round_to

DTYPES = ("float16", "bfloat16")


def to_gpu(x: np.ndarray, dtype: str, requires_grad: bool = False):
    """A Paddle GPU tensor of `dtype` holding `x` (cast on the CPU, then copied)."""
    t = paddle.to_tensor(np.ascontiguousarray(x, dtype=np.float32), place=paddle.CPUPlace())
    t = t.astype(dtype).cuda()
    t.stop_gradient = not requires_grad
    return t


def to_numpy(t) -> np.ndarray:
    """float32 NumPy copy of a Paddle tensor (copied to the CPU, cast there)."""
    t = t.cpu()
    return (t if t.dtype == paddle.float32 else t.astype("float32")).numpy()


def fresh_seed() -> int:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed={seed}")
    return seed


def random_inputs(rng, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype):
    """q, k, v, dout as float32 arrays exactly representable in `dtype`."""
    shapes = [(batch, seqlen_q, heads, head_dim), (batch, seqlen_k, heads_k, head_dim)] * 2
    q, k, dout, v = (round_to(rng.standard_normal(s, dtype=np.float32), dtype) for s in shapes)
    return q, k, v, dout


def run_case(
    rng,
    idx,
    causal,
    *,
    batch=2,
    seqlen_q=None,
    heads=4,
    heads_k=2,
    head_dim=128,
    dtype="bfloat16",
    scale=None,
    block_mask=None,
):
    """Forward and gradients through Paddle against the float64 reference, FA3's rule.
    Returns (out, lse, (dq, dk, dv)) as float32 NumPy arrays."""
    import paddle_flashmask

    seqlen_k = idx.shape[2]
    seqlen_q = seqlen_k if seqlen_q is None else seqlen_q
    q, k, v, dout = random_inputs(rng, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype)
    qt, kt, vt = (to_gpu(x, dtype, requires_grad=True) for x in (q, k, v))
    out_t, lse_t = paddle_flashmask.flashmask_attention(
        qt, kt, vt, idx, causal=causal, softmax_scale=scale, block_mask=block_mask,
        return_softmax_lse=True,
    )
    grads_t = paddle.grad([out_t], [qt, kt, vt], grad_outputs=[to_gpu(dout, dtype)])
    out, lse = to_numpy(out_t), to_numpy(lse_t)
    grads = tuple(to_numpy(g) for g in grads_t)

    sc = head_dim**-0.5 if scale is None else scale
    out_ref, lse_ref = reference.attention_forward(q, k, v, idx, causal, sc, block_mask)
    grads_ref = reference.attention_backward(q, k, v, idx, causal, dout, sc, block_mask)
    out_lp, grads_lp = lowp_attention(q, k, v, dout, idx, causal, sc, block_mask, dtype)
    tolerance.assert_close_fa("out", out, out_ref, out_lp, dtype)
    assert_lse_close(lse, lse_ref)
    for name, g, g_ref, g_lp in zip(("dq", "dk", "dv"), grads, grads_ref, grads_lp):
        tolerance.assert_close_fa(name, g, g_ref, g_lp, dtype)
    return out, lse, grads


def assert_lse_close(lse, lse_ref):
    """Same -inf pattern (rows with every key masked), finite values close to float64."""
    assert not np.isnan(lse).any(), "lse: NaN"
    assert np.array_equal(np.isneginf(lse), np.isneginf(lse_ref)), "lse: -inf pattern differs"
    finite = np.isfinite(lse_ref)
    if finite.any():
        err = float(np.abs(lse[finite] - lse_ref[finite]).max())
        assert err < 2e-3, f"lse err {err}"
