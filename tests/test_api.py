"""The public Paddle API: signature, argument handling, errors, every mask builder."""

import inspect
import os
import subprocess
import sys
import unittest

import numpy as np
import paddle

import paddle_flashmask
from paddle_flashmask import masks, reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def _tensors(rng, shapes, dtype="float32"):
    return [
        paddle.to_tensor(rng.standard_normal(s).astype(np.float32)).astype(dtype) for s in shapes
    ]


def _grads(out_fn, q, k, v, dout):
    for t in (q, k, v):
        t.stop_gradient = False
    out = out_fn(q, k, v)
    (out * dout).sum().backward()
    return out.numpy(), [t.grad.numpy() for t in (q, k, v)]


# Paddle >= 3.0 has its own (GPU-only) flashmask_attention; 2.6 has none.
PADDLE_HAS_FLASHMASK = hasattr(paddle.nn.functional, "flashmask_attention")


class TestSignature(unittest.TestCase):
    @unittest.skipUnless(PADDLE_HAS_FLASHMASK, f"Paddle {paddle.__version__} has no flashmask_attention")
    def test_same_signature_as_paddle(self):
        ours = inspect.signature(paddle_flashmask.flashmask_attention).parameters
        paddles = inspect.signature(paddle.nn.functional.flashmask_attention).parameters
        self.assertEqual(list(ours), list(paddles))
        for name in ours:
            self.assertEqual(ours[name].kind, paddles[name].kind, name)
            self.assertEqual(ours[name].default, paddles[name].default, name)

    def test_import_needs_no_paddle_and_no_op(self):
        # masks, reference and the package itself work with Paddle made unimportable.
        code = (
            "import sys; sys.modules['paddle'] = None\n"
            "import paddle_flashmask, paddle_flashmask.masks as m, paddle_flashmask.reference\n"
            "m.to_dense(*m.causal_mask(4))\n"
            "assert 'paddle_flashmask._ops' not in sys.modules\n"
            "try:\n    paddle_flashmask.flashmask_attention\nexcept ImportError:\n    print('ok')\n"
        )
        result = _run_python(code)
        self.assertEqual(result.stdout.strip(), "ok", result.stderr)

    def test_patch_paddle(self):
        import paddle.nn.functional as F

        original = getattr(F, "flashmask_attention", None)
        try:
            if original is not None:  # Paddle >= 3.0: left alone unless forced
                self.assertFalse(paddle_flashmask.patch_paddle())
                self.assertIs(F.flashmask_attention, original)
                self.assertTrue(paddle_flashmask.patch_paddle(force=True))
                self.assertIs(F.flashmask_attention, paddle_flashmask.flashmask_attention)
                del F.flashmask_attention  # as on Paddle 2.6
            self.assertTrue(paddle_flashmask.patch_paddle())
            self.assertIs(F.flashmask_attention, paddle_flashmask.flashmask_attention)
        finally:
            if original is None:
                del F.flashmask_attention
            else:
                F.flashmask_attention = original


class TestAgainstReference(unittest.TestCase):
    """Every mask builder through the public API, forward and all three gradients."""

    def setUp(self):
        self.rng = np.random.default_rng(0)

    def check(self, spec, seqlen=40, heads=4, heads_k=2, dim=16, block_mask=None):
        batch = spec.startend_row_indices.shape[0]
        q, k, v = _tensors(self.rng, [(batch, seqlen, heads, dim), (batch, seqlen, heads_k, dim), (batch, seqlen, heads_k, dim)])
        dout = self.rng.standard_normal((batch, seqlen, heads, dim)).astype(np.float32)

        def run(q, k, v):
            return paddle_flashmask.flashmask_attention(
                q, k, v, spec.startend_row_indices, causal=spec.causal, block_mask=block_mask
            )

        out, grads = _grads(run, q, k, v, paddle.to_tensor(dout))
        args = (q.numpy(), k.numpy(), v.numpy(), spec.startend_row_indices, spec.causal)
        ref_out, _ = reference.attention_forward(*args, block_mask=block_mask)
        ref_grads = reference.attention_backward(*args, dout, block_mask=block_mask)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
        for got, want, name in zip(grads, ref_grads, "qkv"):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg="d" + name)

    def test_every_builder(self):
        n = 40
        cases = {
            "full": masks.full_mask(n, batch=2),
            "causal": masks.causal_mask(n),
            "sliding_window": masks.sliding_window_mask(n, 7),
            "causal_document": masks.causal_document_mask([[10, 30], [25, 15]]),
            "document": masks.document_mask([3, 17, 20]),
            "share_question": masks.share_question_mask([(6, [14, 20])]),
            "global_sliding_window": masks.global_sliding_window_mask(n, 4, 5),
            "causal_blockwise": masks.causal_blockwise_mask([10, 10, 20]),
            "prefix_lm_causal": masks.prefix_lm_causal_mask(n, 13),
            "prefix_lm_document": masks.prefix_lm_document_mask([(5, 25), (10, 15)]),
            "qk_sparse": masks.qk_sparse_mask(n, [(3, 12), (30, 33)]),
            "random_eviction": masks.random_eviction_mask(n, num_heads=4, seed=1),
        }
        for name, spec in cases.items():
            with self.subTest(name):
                self.check(spec)

    def test_block_mask(self):
        n = 300
        keep = np.ones((1, 2, 3, 3), np.int32)
        keep[0, 0, 1, 0] = 0
        keep[0, 1, 2, 2] = 0
        spec = masks.MaskSpec(np.repeat(masks.causal_mask(n).startend_row_indices, 2, axis=1), True)
        self.check(spec, seqlen=n, heads=4, heads_k=2, dim=8, block_mask=keep)

    def test_no_indices_is_plain_attention(self):
        for causal in (False, True):
            q, k, v = _tensors(self.rng, [(2, 33, 2, 8)] * 3)
            out = paddle_flashmask.flashmask_attention(q, k, v, causal=causal)
            spec = masks.causal_mask(33, 2) if causal else masks.full_mask(33, 2)
            ref, _ = reference.attention_forward(q.numpy(), k.numpy(), v.numpy(), *spec)
            np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)

    def test_window_size_equals_its_indices(self):
        q, k, v = _tensors(self.rng, [(1, 50, 2, 8)] * 3)
        for causal, window in ((True, 6), (False, (3, 9)), (False, 4)):
            with self.subTest(causal=causal, window=window):
                got = paddle_flashmask.flashmask_attention(q, k, v, causal=causal, window_size=window)
                idx = masks.window_size_to_indices(window, causal, 50, 50)
                want = paddle_flashmask.flashmask_attention(q, k, v, paddle.to_tensor(idx), causal=causal)
                np.testing.assert_array_equal(got.numpy(), want.numpy())

    def test_return_order_and_lse(self):
        q, k, v = _tensors(self.rng, [(1, 20, 2, 8)] * 3)
        idx = masks.causal_document_mask([8, 12]).startend_row_indices.copy()
        idx[0, 0, :8, 0] = 0  # the first document's keys are hidden from everyone: rows 0-7 see nothing
        out, lse, seed_offset = paddle_flashmask.flashmask_attention(
            q, k, v, idx, causal=True, return_softmax_lse=True, return_seed_offset=True
        )
        self.assertEqual(lse.shape, [1, 2, 20])
        self.assertEqual(lse.dtype, paddle.float32)
        self.assertEqual(seed_offset.numpy().tolist(), [0, 0])
        self.assertTrue(np.isneginf(lse.numpy()[:, :, :8]).all())
        self.assertTrue((out.numpy()[:, :8] == 0).all())
        _, ref_lse = reference.attention_forward(q.numpy(), k.numpy(), v.numpy(), idx, True)
        np.testing.assert_allclose(lse.numpy()[:, :, 8:], ref_lse[:, :, 8:], rtol=1e-5)
        # Without the seed the pair is (out, lse), the same values.
        out_only, lse_only = paddle_flashmask.flashmask_attention(q, k, v, idx, causal=True, return_softmax_lse=True)
        np.testing.assert_array_equal(out_only.numpy(), out.numpy())
        np.testing.assert_array_equal(lse_only.numpy(), lse.numpy())
        for t in (q, k, v):
            t.stop_gradient = False
        paddle_flashmask.flashmask_attention(q, k, v, idx, causal=True).sum().backward()
        for t in (q, k, v):
            self.assertTrue(np.isfinite(t.grad.numpy()).all())

    def test_softmax_scale_and_unequal_lengths(self):
        q, = _tensors(self.rng, [(2, 13, 4, 8)])
        k, v = _tensors(self.rng, [(2, 29, 1, 8)] * 2)
        spec = masks.MaskSpec(masks.causal_document_mask([[9, 20], [29]]).startend_row_indices.copy(), True)
        spec.startend_row_indices[...] = np.minimum(spec.startend_row_indices, 13)
        out = paddle_flashmask.flashmask_attention(q, k, v, spec.startend_row_indices, causal=True, softmax_scale=0.7)
        ref, _ = reference.attention_forward(q.numpy(), k.numpy(), v.numpy(), *spec, softmax_scale=0.7)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)

    def test_low_precision(self):
        spec = masks.causal_document_mask([30, 34])
        for dtype in ("float16", "bfloat16"):
            with self.subTest(dtype):
                q, k, v = _tensors(self.rng, [(1, 64, 2, 32)] * 3, dtype)
                out = paddle_flashmask.flashmask_attention(q, k, v, spec.startend_row_indices, causal=True)
                self.assertEqual(out.dtype, q.dtype)
                ref, _ = reference.attention_forward(
                    q.astype("float32").numpy(), k.astype("float32").numpy(), v.astype("float32").numpy(), *spec
                )
                err = np.abs(out.astype("float32").numpy() - ref).max()
                self.assertLess(err, 2e-2 if dtype == "bfloat16" else 3e-3)

    def test_static_graph(self):
        spec = masks.causal_document_mask([10, 22])
        q, k, v = _tensors(self.rng, [(1, 32, 2, 8)] * 3)
        idx = paddle.to_tensor(spec.startend_row_indices)

        def attend(q, k, v, idx):
            return paddle_flashmask.flashmask_attention(q, k, v, idx, causal=True)

        static = paddle.jit.to_static(attend, full_graph=True)
        np.testing.assert_allclose(static(q, k, v, idx).numpy(), attend(q, k, v, idx).numpy(), rtol=1e-6)

    def test_static_graph_with_unknown_sizes(self):
        """InputSpec None for batch and sequence lengths: the front end leaves those checks to
        the op, and a call whose bounds are built on the host asks for the sizes by name."""
        spec = masks.causal_document_mask([10, 22])
        q, k, v = _tensors(self.rng, [(1, 32, 2, 8)] * 3)
        idx = paddle.to_tensor(spec.startend_row_indices)
        inputs = [paddle.static.InputSpec([None, None, 2, 8], "float32") for _ in range(3)]

        def attend(q, k, v, idx):
            return paddle_flashmask.flashmask_attention(q, k, v, idx, causal=True)

        static = paddle.jit.to_static(
            attend, input_spec=inputs + [paddle.static.InputSpec([None, 1, None, 1], "int32")], full_graph=True
        )
        np.testing.assert_allclose(static(q, k, v, idx).numpy(), attend(q, k, v, idx).numpy(), rtol=1e-6)

        def attend_without_mask(q, k, v):
            return paddle_flashmask.flashmask_attention(q, k, v, causal=True)

        static = paddle.jit.to_static(attend_without_mask, input_spec=inputs, full_graph=True)
        with self.assertRaisesRegex(ValueError, "`query` batch, `query` seqlen_q, `key` seqlen_k must be known"):
            static(q, k, v)


class TestBadInput(unittest.TestCase):
    """Each bad argument raises an error that names it; nothing crashes."""

    def setUp(self):
        rng = np.random.default_rng(0)
        self.q, self.k, self.v = _tensors(rng, [(2, 16, 4, 8), (2, 16, 2, 8), (2, 16, 2, 8)])
        self.idx = np.repeat(masks.causal_mask(16).startend_row_indices, 2, axis=0)

    def assert_raises(self, exc, pattern, q=None, k=None, v=None, idx=None, causal=True, **kwargs):
        """Calls the API with the fixture's arguments, some replaced, and expects `exc`."""
        pick = lambda given, default: default if given is None else given  # noqa: E731
        with self.assertRaisesRegex(exc, pattern):
            paddle_flashmask.flashmask_attention(
                pick(q, self.q), pick(k, self.k), pick(v, self.v), pick(idx, self.idx), causal=causal, **kwargs
            )

    def test_errors(self):
        idx = self.idx
        r = self.assert_raises
        r(TypeError, "query.*dtype", q=self.q.astype("int32"))
        r(TypeError, "key.*dtype", k=self.k.astype("float16"))
        r(ValueError, "query.*4-D", q=self.q.reshape([2, 16, 32]))
        r(ValueError, "key.*batch", k=self.k[:1], v=self.v[:1])
        r(ValueError, "value.*shape", v=self.v[:, :8])
        r(ValueError, "multiple of", k=paddle.concat([self.k, self.k[:, :, :1]], 2), v=paddle.concat([self.v, self.v[:, :, :1]], 2))
        r(ValueError, "head_dim", q=paddle.zeros([2, 16, 4, 300]), k=paddle.zeros([2, 16, 2, 300]), v=paddle.zeros([2, 16, 2, 300]))
        r(ValueError, "key.*head_dim", k=paddle.zeros([2, 16, 2, 4]), v=paddle.zeros([2, 16, 2, 4]))
        r(TypeError, "startend_row_indices.*int32", idx=idx.astype(np.int64))
        r(TypeError, "startend_row_indices.*int32", idx=paddle.to_tensor(idx).astype("int64"))
        r(ValueError, "startend_row_indices.*4-D", idx=idx[0])
        r(ValueError, "startend_row_indices.*shape", idx=idx[:1])
        r(ValueError, "startend_row_indices.*shape", idx=idx[:, :, :8])
        r(ValueError, "startend_row_indices.*shape", idx=np.repeat(idx, 3, axis=1))
        r(ValueError, "shape\\[-1\\] must be 1 or 2 when causal=True", idx=np.repeat(idx, 4, axis=3))
        r(ValueError, "shape\\[-1\\] must be 2 or 4 when causal=False", idx=idx, causal=False)
        r(NotImplementedError, "dropout", dropout=0.1)
        r(ValueError, "window_size.*startend_row_indices", window_size=3)
        r(ValueError, "block_mask.*shape", block_mask=np.ones((2, 1, 2, 1), np.int32))
        r(TypeError, "block_mask.*int32", block_mask=np.ones((2, 1, 1, 1), np.int64))
        with self.assertRaisesRegex(ValueError, "block_mask.*startend_row_indices"):
            paddle_flashmask.flashmask_attention(self.q, self.k, self.v, block_mask=np.ones((2, 1, 1, 1), np.int32))

    def test_dropout_at_inference_is_fine(self):
        """With training=False dropout does not apply: the output is the one without it."""
        out = paddle_flashmask.flashmask_attention(self.q, self.k, self.v, self.idx, causal=True, dropout=0.5, training=False)
        without = paddle_flashmask.flashmask_attention(self.q, self.k, self.v, self.idx, causal=True)
        np.testing.assert_array_equal(out.numpy(), without.numpy())


if __name__ == "__main__":
    unittest.main()
