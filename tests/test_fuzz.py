"""Property test: random calls (tests/strategies.py) through the Paddle API on CPU
against the float64 reference, forward, LSE and all three gradients. float16 and
bfloat16 results are judged by FlashAttention's rule (tests/tolerance.py) against the
plain low-precision computation (tests/lowp.py), float32 results by a bound on float32's
rounding of the terms each result sums.

A few hundred derandomized examples in the normal run; FLASHMASK_FUZZ_EXAMPLES=5000
for a longer random search.
"""

import numpy as np
import paddle
from hypothesis import given

import paddle_flashmask
from paddle_flashmask import masks, reference
from tests import tolerance
from tests.lowp import lowp_attention
from tests.strategies import cases, fuzz_settings

CPU_DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_EXAMPLES = 500
MAX_SEQLEN = 200  # more than one 128-row block, so block masks bite
MAX_WORK = 1_500_000  # B*H*Sq*Sk*D of one example: keeps the run well under a minute
LOW_PRECISION = ("float16", "bfloat16")
# float32's allowed error: ERROR_FACTOR times the roundoff times the size of the terms
# each result sums (the inputs are rounded to the dtype before the reference
# sees them, so what is left is the kernel's own rounding). The roundoff is float32's
# (outputs and gradients are rounded to it) plus float32's times the largest logit term
# sum (softmax_scale * sum |q| |k|), which the exponent carries into P's relative
# error. For out the terms are bounded by max |v|;
# for the gradients the terms of dS = P (dP - D) carry the rounding of P and of
# D = rowsum(dO * O), so a sharp softmax has large terms that cancel to a small
# gradient (tolerance.BackwardTerms.term_sizes; the low-precision dtypes' gradients get
# float32's roundoff of those terms as a floor as well, tolerance.roundoff_floor).
FLOAT32_ROUNDOFF = tolerance.FLOAT32_ROUNDOFF
ERROR_FACTOR = tolerance.ROUNDOFF_FACTOR
# The LSE is float32 in every dtype, from the same rounded inputs: its error is float32's
# roundoff times the logit term sum (the logits' own rounding) and times |LSE| (exp/log).


def _softmax_scale(case) -> float:
    return case.head_dim**-0.5 if case.softmax_scale is None else case.softmax_scale


def _logit_term_sum(case, q, k) -> float:
    """The largest softmax_scale * sum |q| |k| behind one logit."""
    scale = _softmax_scale(case)
    group = case.num_heads // case.num_heads_k
    logit_terms = scale * np.einsum("bqhd,bkhd->bhqk", np.abs(q), np.repeat(np.abs(k), group, axis=2))
    return float(logit_terms.max(initial=0.0))


def _roundoff(case, q, k) -> float:
    return FLOAT32_ROUNDOFF + FLOAT32_ROUNDOFF * (1.0 + _logit_term_sum(case, q, k))


def _assert_close(name, got, want, term_size, roundoff, case):
    tolerance = ERROR_FACTOR * roundoff * max(1.0, float(np.abs(want).max(initial=0.0)), term_size)
    err = float(np.abs(got - want).max(initial=0.0))
    assert np.isfinite(got).all(), f"{name}: non-finite values for {case}"
    assert err <= tolerance, f"{name}: max error {err:.3e} > {tolerance:.3e} for {case}"


def _mask_arguments(case, idx, block_mask):
    if case.mask_kind == "window":
        return dict(window_size=case.window_size)
    if case.mask_kind == "none":
        return {}
    return dict(startend_row_indices=idx, block_mask=block_mask)


@given(cases(CPU_DTYPES, max_seqlen=MAX_SEQLEN, max_work=MAX_WORK))
@fuzz_settings(DEFAULT_EXAMPLES)
def test_cpu_against_float64_reference(case):
    rng = case.rng()
    idx = case.indices(rng)
    block_mask = case.block_mask(rng, idx.shape[1])
    q_shape, k_shape, v_shape = case.qkv_shapes()
    tensors = [
        paddle.to_tensor(rng.standard_normal(shape).astype(np.float32)).astype(case.dtype)
        for shape in (q_shape, k_shape, v_shape, q_shape)
    ]
    q, k, v, dout = tensors
    for t in (q, k, v):
        t.stop_gradient = False
    out, lse = paddle_flashmask.flashmask_attention(
        q,
        k,
        v,
        causal=case.causal,
        softmax_scale=case.softmax_scale,
        return_softmax_lse=True,
        **_mask_arguments(case, idx, block_mask),
    )
    paddle.autograd.backward([out], [dout])

    q64, k64, v64, dout64 = (t.astype("float32").numpy().astype(np.float64) for t in tensors)
    ref_args = (q64, k64, v64, idx, case.causal)
    ref_out, ref_lse = reference.attention_forward(*ref_args, case.softmax_scale, block_mask)
    ref_grads = reference.attention_backward(*ref_args, dout64, case.softmax_scale, block_mask)

    low = case.dtype in LOW_PRECISION
    if low:
        out_lp, grads_lp = lowp_attention(
            q64, k64, v64, dout64, idx, case.causal, _softmax_scale(case), block_mask, case.dtype
        )
        tolerance.assert_close_fa(f"out of {case}", out.astype("float32").numpy(), ref_out, out_lp, case.dtype)
    else:
        roundoff = _roundoff(case, q64, k64)
        _assert_close("out", out.numpy(), ref_out, np.abs(v64).max(), roundoff, case)
    lse = lse.numpy()
    empty = np.isneginf(ref_lse)
    np.testing.assert_array_equal(np.isneginf(lse), empty, err_msg=f"lse: -inf rows differ for {case}")
    lse_err = np.abs(lse[~empty] - ref_lse[~empty])
    lse_tolerance = ERROR_FACTOR * FLOAT32_ROUNDOFF * (
        1.0 + _logit_term_sum(case, q64, k64) + np.abs(ref_lse[~empty])
    )
    worst = float((lse_err / lse_tolerance).max(initial=0.0))
    assert worst <= 1.0, f"lse: error {worst:.2f}x the float32 roundoff bound for {case}"
    allowed = masks.expand_mask_heads(
        masks.to_dense(idx, case.causal, case.seqlen_q, block_mask), case.num_heads, case.num_heads_k
    )
    terms = tolerance.BackwardTerms(q64, k64, v64, dout64, ref_out, allowed, ref_lse, _softmax_scale(case))
    term_sizes = terms.term_sizes()
    if low:
        out_error = out.astype("float32").numpy().astype(np.float64) - ref_out
        shifts = terms.output_rounding_shift(out_error) + (0.0,)
    for i, (name, t, want, term_size) in enumerate(zip(("dq", "dk", "dv"), (q, k, v), ref_grads, term_sizes)):
        got = t.grad.astype("float32").numpy()
        if low:
            floor = tolerance.roundoff_floor(term_size) + shifts[i]
            tolerance.assert_close_fa(f"{name} of {case}", got, want, grads_lp[i], case.dtype, floor=floor)
        else:
            _assert_close(name, got, want, term_size, roundoff, case)
