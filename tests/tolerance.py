"""FlashAttention-3's tolerance rule for low-precision kernels, shared by the GPU tests
of the torch binding (tests/gpu) and of the Paddle op (tests/gpu_paddle) and by the CPU
fuzz test's float16/bfloat16 cases (tests/test_fuzz.py).

A kernel's error against a float32/float64 reference may be at most `factor` times
that of a plain low-precision computation of the same function, plus FA3's absolute
allowance: about one unit in the last place of the low-precision dtype at the reference's
scale (its tests' `2 * (ref + 0.3 - 0.3 - ref).abs().max()` in that dtype), what rounding
a result to the dtype costs by itself; on a tensor of a few elements the low-precision
computation's own error is a lottery (one element of a 2-token call: 6e-5 where the
kernel, bitwise the same on both of its paths, was 1.1 units off). NaN and inf never pass.
"""

from __future__ import annotations

import numpy as np

from tests.lowp import round_to

FACTOR = 2.0
# Where terms cancel to a (near) zero result, float32 accumulation leaves a residue of
# about its unit roundoff times the size of the terms, which a low-precision computation
# may happen to avoid: the fuzz tests allow ROUNDOFF_FACTOR times that much.
FLOAT32_ROUNDOFF = 2.0**-24
ROUNDOFF_FACTOR = 16
# Significant bits (the implicit one included) of the low-precision dtypes.
SIGNIFICANT_BITS = {"float16": 11, "bfloat16": 8, "float32": 24}


# The float64 products of the gradient allowances, [B, S, H, D] operands and [B, H, Sq, Sk]
# scores, by batched matmul (np.einsum's own loops took seconds per fuzz case).
def _scores(x, y):
    """x [B, Sq, H, D], y [B, Sk, H, D] -> x y^T [B, H, Sq, Sk]."""
    return np.matmul(x.transpose(0, 2, 1, 3), y.transpose(0, 2, 3, 1))


def _over_keys(a, y):
    """a [B, H, Sq, Sk], y [B, Sk, H, D] -> a y [B, Sq, H, D]."""
    return np.matmul(a, y.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


def _over_queries(a, x):
    """a [B, H, Sq, Sk], x [B, Sq, H, D] -> a^T x [B, Sk, H, D]."""
    return np.matmul(a.transpose(0, 1, 3, 2), x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


def _row_dot(x, y):
    """x, y [B, S, H, D] -> sum over D, [B, H, S]."""
    return (x * y).sum(axis=3).transpose(0, 2, 1)


def _group_sum(x, heads_k):
    """x [B, Sk, H, D] per query head -> [B, Sk, heads_k, D], summed over each key head's group."""
    return x.reshape(x.shape[:2] + (heads_k, x.shape[2] // heads_k, x.shape[3])).sum(axis=3)


def rounding_allowance(ref, dtype: str) -> float:
    """One unit in the last place of `dtype` at max|ref| + 0.3 (FA3's absolute allowance)."""
    scale = float(np.abs(np.asarray(ref, dtype=np.float64)).max(initial=0.0)) + 0.3
    return float(2.0 ** (np.floor(np.log2(scale)) - SIGNIFICANT_BITS[dtype] + 1))


def assert_close_fa(name, ours, ref, lowp, dtype, factor=FACTOR, floor=0.0):
    """ours, ref, lowp: array-likes of one shape; dtype: the low-precision computation's
    ("float16", "bfloat16"); floor: a further absolute allowance (e.g. roundoff_floor).
    Returns (our error, low-precision error)."""
    ours, ref, lowp = (np.asarray(x, dtype=np.float64) for x in (ours, ref, lowp))
    assert ours.shape == ref.shape == lowp.shape, f"{name}: shapes {ours.shape} {ref.shape} {lowp.shape}"
    assert not np.isnan(ours).any(), f"{name}: NaN in output"
    assert np.isfinite(ours).all(), f"{name}: inf in output"
    if ours.size == 0:
        return 0.0, 0.0
    err = float(np.abs(ours - ref).max())
    lowp_err = float(np.abs(lowp - ref).max())
    scale = float(np.abs(ref).max())
    tol = factor * lowp_err + max(1e-4 * max(scale, 1e-3) + 1e-5, floor, rounding_allowance(ref, dtype))
    assert err <= tol, (
        f"{name}: max err {err:.3e} > tol {tol:.3e} (low-precision computation's err {lowp_err:.3e})"
    )
    return err, lowp_err


def roundoff_floor(term_size: float) -> float:
    return ROUNDOFF_FACTOR * FLOAT32_ROUNDOFF * term_size


class BackwardTerms:
    """The float64 terms of a FlashAttention-style backward, computed once for the three
    allowances below (NumPy, layouts [B, S, H, D], allowed [B, H, Sq, Sk] expanded to query
    heads, lse [B, H, Sq] of the float64 reference): P from the reference's lse (0 where
    masked or the row is empty), dP = dO V^T and D = rowsum(dO * O)."""

    def __init__(self, q, k, v, dout, out, allowed, lse, scale):
        self.q, self.k, self.dout, self.out, self.scale = q, k, dout, out, scale
        self.heads_k = k.shape[2]
        group = q.shape[2] // self.heads_k
        self.k_full, v_full = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
        live = np.isfinite(lse)[..., None] & allowed
        logits = _scores(q, self.k_full) * scale - np.where(np.isfinite(lse), lse, 0.0)[..., None]
        self.p = np.where(live, np.exp(np.where(live, logits, 0.0)), 0.0)
        self.dp = _scores(dout, v_full)
        self.rowsum = _row_dot(dout, out)[..., None]

    def _per_key(self, x):
        """[B, H, Sq, Sk] summed over queries and each key head's group -> [B, heads_k, Sk]."""
        batch = x.shape[0]
        return x.sum(axis=2).reshape(batch, self.heads_k, -1, x.shape[3]).sum(axis=2)

    def _dq_dk(self, ds):
        """dQ = dS K and dK = dS^T Q (scaled) of a score gradient ds [B, H, Sq, Sk]."""
        dq = _over_keys(ds, self.k_full) * self.scale
        dk = _group_sum(_over_queries(ds, self.q), self.heads_k) * self.scale
        return dq, dk

    def term_sizes(self):
        """The largest sum of |terms| behind one element of dq, dk and dv. The terms of dS =
        P (dP - D) carry the rounding of dP and of D, so a sharp softmax has large terms that
        cancel to a small gradient."""
        rowsum_terms = _row_dot(np.abs(self.dout), np.abs(self.out))[..., None]
        ds_terms = self.p * (np.abs(self.dp - self.rowsum) + rowsum_terms)
        return (
            self.scale * ds_terms.sum(axis=3).max(initial=0.0) * np.abs(self.k).max(initial=0.0),
            self.scale * self._per_key(ds_terms).max(initial=0.0) * np.abs(self.q).max(initial=0.0),
            self._per_key(self.p).max(initial=0.0) * np.abs(self.dout).max(initial=0.0),
        )

    def output_rounding_shift(self, out_error):
        """The largest change of one element of dq and of dk (dv has none) that a kernel's
        rounding of its output causes: a FlashAttention-style backward takes D from the
        output it is given, so an error out_error in O moves D by rowsum(dO * out_error) and
        dS by -P times that. On a call of a few tokens this one rounding can outweigh the
        low-precision computation's whole error."""
        ds = -self.p * _row_dot(self.dout, out_error)[..., None]
        return tuple(float(np.abs(x).max(initial=0.0)) for x in self._dq_dk(ds))

    def operand_rounding_shift(self, dtype: str):
        """The largest change of one element of dq, dk and dv that the backward's rounding of
        P and dS to `dtype` causes, before its products dV = P^T dO, dK = dS^T Q and dQ = dS K
        with fp32 accumulators. The plain low-precision computation rounds them too, but its
        own error on a call of a few tokens is a lottery (one fp16 2 x 2 call: 1.3e-4 against
        the kernel's 8.5e-4), so this rounding is allowed as such."""
        ds = self.p * (self.dp - self.rowsum)
        # The kernel rounds its float32 P and dS; round_to takes them through float32 as well.
        p_err, ds_err = (round_to(x, dtype).astype(np.float64) - x for x in (self.p, ds))
        dv = _group_sum(_over_queries(p_err, self.dout), self.heads_k)
        return tuple(float(np.abs(x).max(initial=0.0)) for x in (*self._dq_dk(ds_err), dv))
