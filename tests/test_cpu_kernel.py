"""The CPU kernel through the Paddle op, against the float64 NumPy reference.

Calls `paddle_flashmask._ops` directly (no Python-side validation), so the
op's own checks are exercised too.
"""

import ctypes
import ctypes.util
import os
import unittest

import numpy as np
import paddle

from paddle_flashmask import _ops, reference
from tests.random_bounds import BOUND_FORMS, random_bounds
from tests.score_ramps import ramp_factors
from tools.cpu_flags import cpuinfo

paddle.set_device("cpu")

FP32_TOL = 1e-5
# fp16/bf16: inputs and outputs are rounded to 11 / 8 significant bits (the
# arithmetic is fp32); observed errors are about 4x below these.
LOW_PRECISION_TOL = {"float16": 2e-3, "bfloat16": 1.5e-2}


def _rel_err(actual, expected):
    """max |actual - expected| relative to the tensor's scale: its largest |value|, or 1 if
    smaller (a gradient that is ~0, e.g. dq with one key per row, is compared absolutely)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(np.abs(expected).max(initial=0.0), 1.0)
    return np.abs(np.asarray(actual, dtype=np.float64) - expected).max(initial=0.0) / scale


def _to_paddle(x, dtype, grad=False):
    t = paddle.to_tensor(x).astype(dtype)
    t.stop_gradient = not grad
    return t


def _np64(t):
    return t.astype("float32").numpy().astype(np.float64)


def _run_op(q, k, v, idx, causal, dout, dtype="float32", scale=None, block_mask=None):
    """Forward and backward through the op; NumPy float64 results."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qt, kt, vt = (_to_paddle(x, dtype, grad=True) for x in (q, k, v))
    bm = None if block_mask is None else paddle.to_tensor(block_mask)
    out, lse = _ops.flashmask_attention_op(qt, kt, vt, paddle.to_tensor(idx), bm, causal, scale, False)
    paddle.autograd.backward([out], [_to_paddle(dout, dtype)])
    return _np64(out), lse.numpy(), _np64(qt.grad), _np64(kt.grad), _np64(vt.grad)


def _rounded(x, dtype):
    """x as the kernel sees it after the cast to `dtype`."""
    return paddle.to_tensor(x).astype(dtype).astype("float32").numpy().astype(np.float64)


class CpuKernelTestCase(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(1234)

    def random_inputs(self, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim):
        def normal(*shape):
            return self.rng.standard_normal(shape).astype(np.float32)

        return (
            normal(batch, seqlen_q, heads, head_dim),
            normal(batch, seqlen_k, heads_k, head_dim),
            normal(batch, seqlen_k, heads_k, head_dim),
            normal(batch, seqlen_q, heads, head_dim),
        )

    def check(
        self,
        batch=1,
        seqlen_q=64,
        seqlen_k=64,
        heads=2,
        heads_k=2,
        head_dim=32,
        mask_heads=1,
        causal=True,
        num_bounds=1,
        dtype="float32",
        scale=None,
        idx=None,
        block_mask=None,
        key_ramp=None,
    ):
        """Runs one configuration, compares out, lse, dq, dk, dv with the reference and
        returns the op's (NumPy) results. key_ramp=(step, rising): positive queries and keys
        scaled by score_ramps.ramp_factors."""
        q, k, v, dout = self.random_inputs(batch, seqlen_q, seqlen_k, heads, heads_k, head_dim)
        if key_ramp is not None:
            q, k = np.abs(q), np.abs(k) * ramp_factors(seqlen_k, *key_ramp)[None, :, None, None]
        if idx is None:
            idx = random_bounds(self.rng, batch, mask_heads, seqlen_q, seqlen_k, num_bounds, causal)
        got = _run_op(q, k, v, idx, causal, dout, dtype, scale, block_mask)
        if dtype != "float32":
            q, k, v, dout = (_rounded(x, dtype) for x in (q, k, v, dout))
        out, lse = reference.attention_forward(q, k, v, idx, causal, scale, block_mask)
        grads = reference.attention_backward(q, k, v, idx, causal, dout, scale, block_mask)
        tol = FP32_TOL if dtype == "float32" else LOW_PRECISION_TOL[dtype]
        for name, actual, expected in zip(
            ("out", "dq", "dk", "dv"), got[:1] + got[2:], (out,) + grads
        ):
            self.assertTrue(np.isfinite(actual).all(), f"{name} has NaN/inf")
            self.assertLessEqual(_rel_err(actual, expected), tol, name)
        got_lse = got[1]
        np.testing.assert_array_equal(np.isneginf(got_lse), np.isneginf(lse), "rows with lse -inf")
        finite = np.isfinite(lse)
        # lse comes from fp32 scores of the (rounded) inputs whatever the dtype.
        np.testing.assert_allclose(got_lse[finite], lse[finite], rtol=1e-5, atol=1e-5)
        return got


class TestBoundForms(CpuKernelTestCase):
    """Random bounds of every form: out-of-range values and empty intervals included."""

    def test_every_form(self):
        for causal, num_bounds in BOUND_FORMS:
            for seqlen_q, seqlen_k in ((150, 150), (70, 200), (200, 70)):
                with self.subTest(causal=causal, num_bounds=num_bounds, sq=seqlen_q, sk=seqlen_k):
                    self.check(
                        batch=2,
                        seqlen_q=seqlen_q,
                        seqlen_k=seqlen_k,
                        mask_heads=2,
                        causal=causal,
                        num_bounds=num_bounds,
                    )

    def test_bounds_at_the_int32_extremes(self):
        """INT32_MIN and INT32_MAX among the bounds (a masked interval from row 0, to the last
        row, or empty): a partial tile's row arithmetic must not overflow on them."""
        limits = np.iinfo(np.int32)
        for causal, num_bounds in BOUND_FORMS:
            with self.subTest(causal=causal, num_bounds=num_bounds):
                idx = random_bounds(self.rng, 2, 2, 150, 150, num_bounds, causal)
                extreme = self.rng.random(idx.shape) < 0.2
                idx[extreme] = self.rng.choice([limits.min, limits.max], size=int(extreme.sum()))
                self.check(batch=2, seqlen_q=150, seqlen_k=150, mask_heads=2, causal=causal, idx=idx)

    def test_scores_jumping_by_key_blocks(self):
        """Every key tile's scores above (rising) or below (falling) the last's: steps of ~14
        log2 units per 64 keys (median), past the lazy rescaling's slack of 8, and of ~5, within
        it. Five key blocks: at nine (scores up to ~150 log2 units) fp32's roundoff of dq's
        cancelling terms alone reached the fixed tolerance, on every ISA alike."""
        for step in (1.5, 0.5):
            for rising in (True, False):
                for causal, num_bounds in ((True, 1), (False, 2)):
                    with self.subTest(step=step, rising=rising, causal=causal):
                        self.check(seqlen_q=200, seqlen_k=320, causal=causal, num_bounds=num_bounds,
                                   head_dim=64, key_ramp=(step, rising))
                with self.subTest(step=step, rising=rising, dtype="bfloat16"):
                    self.check(seqlen_q=200, seqlen_k=320, head_dim=64, dtype="bfloat16", key_ramp=(step, rising))

    def test_softmax_scale(self):
        for scale in (0.05, 1.0, 0.0):
            with self.subTest(scale=scale):
                self.check(seqlen_q=80, seqlen_k=96, causal=False, num_bounds=4, scale=scale)


class TestHeads(CpuKernelTestCase):
    def test_gqa_and_mqa(self):
        for heads, heads_k in ((8, 2), (4, 1)):
            for mask_heads in sorted({1, heads_k, heads}):
                with self.subTest(heads=heads, heads_k=heads_k, mask_heads=mask_heads):
                    self.check(
                        seqlen_q=96,
                        seqlen_k=96,
                        heads=heads,
                        heads_k=heads_k,
                        head_dim=16,
                        mask_heads=mask_heads,
                        causal=False,
                        num_bounds=2,
                    )

    def test_head_dims(self):
        for head_dim in (1, 7, 33, 64, 100, 128, 256):
            with self.subTest(head_dim=head_dim):
                self.check(seqlen_q=70, seqlen_k=70, heads=1, heads_k=1, head_dim=head_dim)


class TestSizes(CpuKernelTestCase):
    def test_odd_sizes(self):
        for seqlen_q, seqlen_k in ((1, 1), (1, 17), (17, 1), (17, 17), (127, 129), (129, 127)):
            for causal, num_bounds in ((True, 2), (False, 4)):
                with self.subTest(sq=seqlen_q, sk=seqlen_k, causal=causal):
                    self.check(
                        seqlen_q=seqlen_q,
                        seqlen_k=seqlen_k,
                        heads=1,
                        heads_k=1,
                        head_dim=8,
                        causal=causal,
                        num_bounds=num_bounds,
                    )

    def test_no_mask_ragged_tiles(self):
        # Bounds that mask nothing (what the API passes for startend_row_indices=None):
        # whole tiles are unmasked, and the ragged last key tile must still drop its padding.
        for causal in (False, True):
            with self.subTest(causal=causal):
                idx = np.zeros((1, 1, 100, 1 if causal else 2), dtype=np.int32)
                idx[..., 0] = 90
                self.check(seqlen_q=90, seqlen_k=100, causal=causal, idx=idx)

    def test_long_sequence(self):
        self.check(
            seqlen_q=1000, seqlen_k=1000, heads=1, heads_k=1, head_dim=8, causal=True, num_bounds=1
        )

    def test_key_tiles_swept_together(self):
        """The backward takes several key tiles of a work item through the query tiles at a
        time (backward_impl.h, keys_per_sweep: 4 at head_dim 32, 2 at 128). With 16 key
        heads each key head is two items: at head_dim 32, 7 key tiles as items of 3 and 4
        (one sweep each, the first short); at 128, 3 key tiles as items of 1 and 2; the last
        key tile ragged, with partial and skipped tiles of random per-head bounds."""
        for head_dim, seqlen, causal, num_bounds in ((32, 400, True, 2), (128, 190, False, 4)):
            with self.subTest(head_dim=head_dim, causal=causal):
                self.check(
                    batch=2, seqlen_q=seqlen, seqlen_k=seqlen, heads=8, heads_k=8, head_dim=head_dim,
                    mask_heads=8, causal=causal, num_bounds=num_bounds,
                )


class TestLowPrecision(CpuKernelTestCase):
    def test_fp16_bf16(self):
        for dtype in ("float16", "bfloat16"):
            for causal, num_bounds in ((True, 1), (False, 4)):
                with self.subTest(dtype=dtype, causal=causal):
                    self.check(
                        seqlen_q=100,
                        seqlen_k=130,
                        heads=4,
                        heads_k=2,
                        head_dim=40,
                        mask_heads=2,
                        causal=causal,
                        num_bounds=num_bounds,
                        dtype=dtype,
                    )


class TestMaskedRows(CpuKernelTestCase):
    def test_fully_masked_rows(self):
        # Non-causal (LTS, UTE): rows >= 90 masked in every column, and rows < 5.
        seqlen = 130
        idx = np.zeros((1, 1, seqlen, 2), dtype=np.int32)
        idx[..., 0], idx[..., 1] = 90, 5
        out, lse, dq, _, _ = self.check(seqlen_q=seqlen, seqlen_k=seqlen, causal=False, idx=idx)
        for rows in (slice(0, 5), slice(90, seqlen)):
            self.assertTrue((out[:, rows] == 0).all())
            self.assertTrue((dq[:, rows] == 0).all())
            self.assertTrue(np.isneginf(lse[:, :, rows]).all())

    def test_everything_masked(self):
        idx = np.zeros((1, 1, 40, 1), dtype=np.int32)  # causal, LTS = 0: every row masked
        out, lse, dq, dk, dv = self.check(seqlen_q=40, seqlen_k=40, causal=True, idx=idx)
        for x in (out, dq, dk, dv):
            self.assertTrue((x == 0).all())
        self.assertTrue(np.isneginf(lse).all())


class TestBlockMask(CpuKernelTestCase):
    def test_block_mask(self):
        for causal, num_bounds in ((True, 1), (False, 2)):
            with self.subTest(causal=causal):
                seqlen_q, seqlen_k = 300, 400
                block_mask = self.rng.integers(0, 2, size=(2, 2, 3, 4)).astype(np.int32)
                block_mask[0, 0, 1, :] = 0  # a block row with every block skipped: masked rows
                self.check(
                    batch=2,
                    seqlen_q=seqlen_q,
                    seqlen_k=seqlen_k,
                    heads=4,
                    heads_k=2,
                    head_dim=16,
                    mask_heads=2,
                    causal=causal,
                    num_bounds=num_bounds,
                    block_mask=block_mask,
                )


class TestOpBehaviour(CpuKernelTestCase):
    def test_deterministic(self):
        """Bitwise equal run to run, and whatever the number of threads."""
        q, k, v, dout = self.random_inputs(1, 200, 200, 4, 2, 32)
        idx = random_bounds(self.rng, 1, 2, 200, 200, 2, False)
        runs = [_run_op(q, k, v, idx, False, dout) for _ in range(2)]
        gomp = ctypes.util.find_library("gomp")
        if gomp is not None:  # the OpenMP runtime GCC builds link; absent elsewhere
            omp = ctypes.CDLL(gomp)
            threads = omp.omp_get_max_threads()
            omp.omp_set_num_threads(1)
            try:
                runs.append(_run_op(q, k, v, idx, False, dout))
            finally:
                omp.omp_set_num_threads(threads)
        for run in runs[1:]:
            for a, b in zip(runs[0], run):
                np.testing.assert_array_equal(a, b)

    def test_streaming_stores_change_nothing(self):
        """Outputs of 4 MiB or more, and the forward's packed keys, leave by streaming stores
        where a call's working set exceeds the last-level cache (csrc/cpu/tile_io.h);
        FLASHMASK_CPU_STREAMING_STORES=0 or 1 forces the choice. Both write the same values:
        out, dq, dk, dv of 4 MiB each, and key heads packed in groups with a smaller last one
        (head_dim 256: two key heads per group of the key packing, three groups) over a
        ragged last key tile."""
        for batch, seqlen, heads, heads_k, head_dim in ((1, 2048, 8, 8, 64), (2, 300, 10, 5, 256)):
            with self.subTest(seqlen=seqlen, heads_k=heads_k, head_dim=head_dim):
                q, k, v, dout = self.random_inputs(batch, seqlen, seqlen, heads, heads_k, head_dim)
                idx = random_bounds(self.rng, batch, 1, seqlen, seqlen, 1, True)
                runs = []
                previous = os.environ.get("FLASHMASK_CPU_STREAMING_STORES")
                try:
                    for flag in ("0", "1"):
                        os.environ["FLASHMASK_CPU_STREAMING_STORES"] = flag
                        runs.append(_run_op(q, k, v, idx, True, dout))
                finally:
                    _restore_env("FLASHMASK_CPU_STREAMING_STORES", previous)
                for a, b in zip(*runs):
                    np.testing.assert_array_equal(a, b)

    def test_non_contiguous_inputs(self):
        q, k, v, _ = self.random_inputs(1, 50, 50, 2, 2, 16)
        idx = random_bounds(self.rng, 1, 1, 50, 50, 1, True)
        qkv = paddle.to_tensor(np.concatenate([q, k, v], axis=2))
        views = [qkv[:, :, 2 * i : 2 * i + 2] for i in range(3)]
        out, _ = _ops.flashmask_attention_op(*views, paddle.to_tensor(idx), None, True, 0.25, False)
        expected, _ = reference.attention_forward(q, k, v, idx, True, 0.25)
        self.assertLessEqual(_rel_err(out.numpy(), expected), FP32_TOL)

    def test_to_static(self):
        q, k, v, dout = self.random_inputs(2, 64, 80, 4, 2, 16)
        idx = random_bounds(self.rng, 2, 2, 64, 80, 4, False)

        def attention(q, k, v, idx):
            out, lse = _ops.flashmask_attention_op(q, k, v, idx, None, False, 0.3, False)
            return out, lse

        spec = [
            paddle.static.InputSpec([None, None, 4, 16], "float32"),
            paddle.static.InputSpec([None, None, 2, 16], "float32"),
            paddle.static.InputSpec([None, None, 2, 16], "float32"),
            paddle.static.InputSpec([None, 2, None, 4], "int32"),
        ]
        static_attention = paddle.jit.to_static(attention, input_spec=spec, full_graph=True)
        results = []
        for fn in (attention, static_attention):
            qt, kt, vt = (_to_paddle(x, "float32", grad=True) for x in (q, k, v))
            out, lse = fn(qt, kt, vt, paddle.to_tensor(idx))
            paddle.autograd.backward([out], [paddle.to_tensor(dout)])
            results.append(
                [out.numpy(), lse.numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()]
            )
        for eager, static in zip(*results):
            np.testing.assert_allclose(static, eager, rtol=1e-6, atol=1e-6)


# The kernel's instruction-set variants (csrc/cpu/isa.h), weakest first. The
# classes above run the best one this machine has; FLASHMASK_CPU_ISA caps the
# choice (a cap above what the CPU has runs the best it has).
ISA_VARIANTS = ("generic", "avx2", "avx512", "avx512_bf16", "amx_bf16")


class IsaVariantMixin:
    """Runs a test class's checks under FLASHMASK_CPU_ISA=`isa`."""

    isa = None

    def setUp(self):
        super().setUp()
        previous = os.environ.get("FLASHMASK_CPU_ISA")
        os.environ["FLASHMASK_CPU_ISA"] = self.isa
        self.addCleanup(_restore_env, "FLASHMASK_CPU_ISA", previous)


def _restore_env(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# Every form, odd sizes, fp16/bf16 and masked rows under each weaker variant
# (the best one runs above), so CI covers the fallbacks on any machine.
for _isa in ISA_VARIANTS[:-1]:
    for _base in (TestBoundForms, TestSizes, TestLowPrecision, TestMaskedRows):
        _name = f"{_base.__name__}_{_isa}"
        globals()[_name] = type(_name, (IsaVariantMixin, _base), {"isa": _isa})
del _isa, _base, _name


class TestIsaVariantsAgree(CpuKernelTestCase):
    def _run_capped(self, isa, *args, **kwargs):
        """_run_op under FLASHMASK_CPU_ISA=isa (None: unset, the default choice)."""
        previous = os.environ.get("FLASHMASK_CPU_ISA")
        if isa is None:
            os.environ.pop("FLASHMASK_CPU_ISA", None)
        else:
            os.environ["FLASHMASK_CPU_ISA"] = isa
        try:
            return _run_op(*args, **kwargs)
        finally:
            _restore_env("FLASHMASK_CPU_ISA", previous)

    def test_default_runs_one_of_the_variants(self):
        """Without a cap the kernel picks a variant, for bf16 inputs by a measurement of
        vdpbf16ps against the fp32 FMAs (csrc/cpu/isa.cc): its results are bitwise those
        of one of the capped variants."""
        q, k, v, dout = self.random_inputs(1, 150, 150, 2, 2, 64)
        idx = random_bounds(self.rng, 1, 2, 150, 150, 1, True)
        for dtype in ("float32", "bfloat16"):
            default = self._run_capped(None, q, k, v, idx, True, dout, dtype)
            matches = []
            for isa in ISA_VARIANTS:
                capped = self._run_capped(isa, q, k, v, idx, True, dout, dtype)
                if all(np.array_equal(a, b, equal_nan=True) for a, b in zip(default, capped)):
                    matches.append(isa)
            with self.subTest(dtype=dtype):
                self.assertTrue(matches, "the default's results match no capped variant's")

    def test_bf16_products_match_fp32_products(self):
        """bf16 inputs: the AVX512-BF16 and AMX paths (products in bf16) agree with the fp32
        path within the bf16 tolerance, each where the CPU has it (elsewhere its cap runs the
        fp32 path, which would be compared with itself)."""
        present = [isa for isa in ("avx512_bf16", "amx_bf16") if isa in cpuinfo()[1]]
        if not present:
            self.skipTest("the CPU has neither AVX512-BF16 nor AMX-BF16")
        q, k, v, dout = self.random_inputs(2, 200, 180, 4, 2, 64)
        idx = random_bounds(self.rng, 2, 2, 200, 180, 2, True)
        results = {isa: self._run_capped(isa, q, k, v, idx, True, dout, "bfloat16") for isa in ["avx512"] + present}
        for isa in present:
            for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), results[isa], results["avx512"]):
                finite = np.isfinite(b)
                with self.subTest(isa=isa, output=name):
                    self.assertLessEqual(_rel_err(a[finite], b[finite]), LOW_PRECISION_TOL["bfloat16"])


class TestOpChecks(CpuKernelTestCase):
    """The op validates its inputs itself: bad calls raise, never crash."""

    def assert_rejects(self, message, q, k, v, idx, block_mask=None, causal=True, scale=0.5):
        with self.assertRaisesRegex(Exception, message):
            _ops.flashmask_attention_op(q, k, v, idx, block_mask, causal, scale, False)

    def test_rejects_bad_inputs(self):
        def f32(*shape):
            return paddle.zeros(shape, "float32")

        def i32(*shape):
            return paddle.zeros(shape, "int32")

        q, k, idx = f32(1, 8, 4, 16), f32(1, 8, 2, 16), i32(1, 1, 8, 1)
        self.assert_rejects(r"`q` must be 4-D", f32(8, 4, 16), k, k, idx)
        self.assert_rejects(r"`v` must have the shape of `k`", q, k, f32(1, 9, 2, 16), idx)
        self.assert_rejects(
            r"`k` and `v` must have the dtype of `q`", q, k.astype("float16"), k, idx
        )
        self.assert_rejects(r"`q` dtype must be", q.astype("float64"), k, k, idx)
        for scale in (float("nan"), float("inf"), -0.5):
            self.assert_rejects(r"`softmax_scale` must be finite and >= 0", q, k, k, idx, scale=scale)
        self.assert_rejects(r"multiple of num_heads of `k`", f32(1, 8, 3, 16), k, k, idx)
        self.assert_rejects(r"`k` must be \[batch", q, f32(1, 8, 2, 8), f32(1, 8, 2, 8), idx)
        self.assert_rejects(
            r"`startend_row_indices` dtype must be int32", q, k, k, idx.astype("int64")
        )
        self.assert_rejects(r"`startend_row_indices` must be", q, k, k, i32(1, 1, 8, 4))
        self.assert_rejects(
            r"`startend_row_indices` must be", q, k, k, i32(1, 1, 8, 1), causal=False
        )
        self.assert_rejects(r"`startend_row_indices` must be", q, k, k, i32(1, 3, 8, 1))
        self.assert_rejects(r"`startend_row_indices` must be", q, k, k, i32(1, 1, 7, 1))
        self.assert_rejects(r"`block_mask` must be", q, k, k, idx, block_mask=i32(1, 1, 2, 1))
        self.assert_rejects(
            r"`block_mask` dtype must be int32", q, k, k, idx, block_mask=f32(1, 1, 1, 1)
        )
        self.assert_rejects(
            r"head_dim must be at most 256",
            f32(1, 8, 4, 300),
            f32(1, 8, 2, 300),
            f32(1, 8, 2, 300),
            idx,
        )


if __name__ == "__main__":
    unittest.main()
