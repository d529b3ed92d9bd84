"""The front-end core (paddle_flashmask._frontend): one validation pass shared by
the Paddle API and the torch binding, its policies, and its shape limits."""

import dataclasses
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
import paddle
import pytest

import paddle_flashmask
from paddle_flashmask import _frontend, _ops, api, masks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_DIM = _frontend.MAX_DIM
# Paddle tensors as if they lived on a GPU: the policies of that device apply.
PADDLE_ON_GPU = dataclasses.replace(api._PADDLE, is_gpu=lambda t: True)


class _Described:
    """A tensor known by its shape and dtype alone: shapes of any size, nothing allocated."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype


# A GPU framework of described tensors (the front end needs no data but the block mask's).
DESCRIBED_ON_GPU = _frontend.Framework(
    tensor_name="described tensor",
    is_tensor=lambda x: isinstance(x, _Described),
    shape=lambda t: t.shape,
    dtype_name=lambda t: t.dtype,
    device=lambda t: "gpu:0",
    is_gpu=lambda t: True,
    runs_on_cpu=False,
    to_tensor=lambda array, like: _Described(array.shape, str(array.dtype)),
    values=lambda t: None,
    reusable=lambda t: False,
)


def _resolve(fw, q, k, v, startend_row_indices=None, **kwargs):
    arguments = dict(
        dropout=0.0,
        causal=False,
        window_size=None,
        return_softmax_lse=False,
        return_seed_offset=False,
        fixed_seed_offset=None,
        rng_name="",
        training=True,
        name=None,
        softmax_scale=None,
        block_mask=None,
    )
    arguments.update(kwargs)
    return _frontend.resolve(fw, q, k, v, startend_row_indices, **arguments)


def _paddle_qkv(head_dim, dtype="float16", seqlen=8):
    return [paddle.zeros([1, seqlen, 2, head_dim], dtype=dtype) for _ in range(3)]


class TestDeterministicSwitch(unittest.TestCase):
    def test_environment_and_framework_flag(self):
        for value, expected in (("1", True), ("true", True), ("YES", True), (" On ", True), ("0", False), ("", False), ("no", False)):
            with self.subTest(value=value), mock.patch.dict(os.environ, {_frontend.DETERMINISTIC_ENV: value}):
                self.assertIs(_frontend.deterministic_requested(False), expected)
                self.assertTrue(_frontend.deterministic_requested(True))
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertFalse(_frontend.deterministic_requested(False))

    def test_paddle_api_passes_it_to_the_op(self):
        q, k, v = _paddle_qkv(8, "float32")
        for value, expected in (("1", True), ("0", False)):
            with self.subTest(value=value), mock.patch.dict(os.environ, {_frontend.DETERMINISTIC_ENV: value}):
                with mock.patch.object(_ops, "flashmask_attention_op", wraps=_ops.flashmask_attention_op) as op:
                    paddle_flashmask.flashmask_attention(q, k, v, causal=True)
                self.assertIs(op.call_args.args[-1], expected)


class TestMasksNothing(unittest.TestCase):
    """The op hears that the bounds mask nothing (the Hopper forward's mask-less tiles) only
    when the caller gave no mask at all."""

    def test_paddle_api_passes_it_to_the_op(self):
        q, k, v = _paddle_qkv(8, "float32")
        given = paddle.to_tensor(masks.full_mask(8).startend_row_indices)
        cases = (
            ("no mask", {}, True),
            ("no mask, causal", {"causal": True}, True),
            ("startend_row_indices", {"startend_row_indices": given}, False),
            ("window_size", {"window_size": 2}, False),
        )
        for label, kwargs, expected in cases:
            with self.subTest(label), mock.patch.object(
                _ops, "flashmask_attention_op", wraps=_ops.flashmask_attention_op
            ) as op:
                paddle_flashmask.flashmask_attention(q, k, v, **kwargs)
                self.assertIs(op.call_args.kwargs["masks_nothing"], expected)


class TestNoMaskBounds(unittest.TestCase):
    """A call without a mask runs on bounds that mask nothing beyond `causal`, built once per
    device, shape and causal flag and reused by later calls (no host copy per call), at
    most NO_MASK_CACHE_SIZE of them, the least recently used dropped."""

    def setUp(self):
        _frontend._no_mask_cache.clear()

    def _op_bounds(self, seqlen, **kwargs):
        q, k, v = _paddle_qkv(8, "float32", seqlen=seqlen)
        with mock.patch.object(_ops, "flashmask_attention_op", wraps=_ops.flashmask_attention_op) as op:
            paddle_flashmask.flashmask_attention(q, k, v, **kwargs)
        return op.call_args.args[3]

    def test_reused_across_calls_with_the_values_of_no_mask_indices(self):
        for causal in (False, True):
            with self.subTest(causal=causal):
                first = self._op_bounds(8, causal=causal)
                self.assertIs(self._op_bounds(8, causal=causal), first)
                np.testing.assert_array_equal(first.numpy(), masks.no_mask_indices(causal, 1, 8, 8))
        self.assertIsNot(self._op_bounds(8, causal=True), self._op_bounds(8, causal=False))
        self.assertIsNot(self._op_bounds(9), self._op_bounds(8))

    def test_least_recently_used_dropped(self):
        size = _frontend.NO_MASK_CACHE_SIZE
        oldest = self._op_bounds(8)
        kept = self._op_bounds(9)
        for seqlen in range(10, 10 + size - 2):  # the cache is full, nothing dropped yet
            self._op_bounds(seqlen)
        self.assertIs(self._op_bounds(9), kept)  # used again: now the most recent
        self._op_bounds(100)  # one past the size: the least recently used (seqlen 8) goes
        self.assertEqual(len(_frontend._no_mask_cache), size)
        self.assertIs(self._op_bounds(9), kept)
        rebuilt = self._op_bounds(8)
        self.assertIsNot(rebuilt, oldest)
        np.testing.assert_array_equal(rebuilt.numpy(), oldest.numpy())

    def test_not_kept_where_the_framework_forbids_it(self):
        fw = dataclasses.replace(api._PADDLE, reusable=lambda t: False)
        q, k, v = _paddle_qkv(8, "float32")
        first = _resolve(fw, q, k, v).startend_row_indices
        self.assertIsNot(_resolve(fw, q, k, v).startend_row_indices, first)
        self.assertEqual(len(_frontend._no_mask_cache), 0)


class TestShapeLimits(unittest.TestCase):
    """Each dimension must fit the kernels' 32-bit shape fields; element counts are not
    limited (64-bit offsets). Checked from the shapes alone: nothing is allocated."""

    def test_each_dimension_past_int32_is_refused(self):
        small = (1, 8, 1, 64)
        named_dims = (("query", ("batch", "seqlen_q", "num_heads")), ("key", ("batch", "seqlen_k", "num_heads_k")))
        for name, dims in named_dims:
            for axis, dim in enumerate(dims):  # head_dim has its own range
                big = tuple(MAX_DIM + 1 if i == axis else s for i, s in enumerate(small))
                shapes = (big, small, small) if name == "query" else (small, big, big)
                with self.subTest(name=name, dim=dim), self.assertRaisesRegex(
                    ValueError, f"`{name}` {dim} must be at most {MAX_DIM} .*got {MAX_DIM + 1}"
                ):
                    _frontend.check_shapes(*shapes)

    def test_a_dimension_at_int32_max_passes(self):
        dims = _frontend.check_shapes((1, MAX_DIM, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1))
        self.assertEqual(dims.seqlen_q, MAX_DIM)

    def test_more_than_2_to_the_31_elements_pass(self):
        # key and value of 2^31 + 64 elements; B * H * Sq of the LSE past 2^31.
        dims = _frontend.check_shapes((1, 8, 1, 64), (1, 2**25 + 1, 1, 64), (1, 2**25 + 1, 1, 64))
        self.assertEqual(dims.seqlen_k, 2**25 + 1)
        dims = _frontend.check_shapes((2**16, 2**11, 2**4, 1), (2**16, 1, 2**4, 1), (2**16, 1, 2**4, 1))
        self.assertEqual((dims.batch, dims.seqlen_q, dims.num_heads), (2**16, 2**11, 2**4))

    def test_bounds_of_more_than_2_to_the_31_elements_pass(self):
        dims = _frontend.check_shapes((1, 8, 2**20, 1), (1, 2**10, 2**20, 1), (1, 2**10, 2**20, 1))
        _frontend.check_mask_shapes(dims, False, (1, 2**20, 2**10, 4))

    def test_the_context_parallel_benchmark_at_512k_passes(self):
        """The whole front end on the 512K-token query of benchmarks/bench_cp.py (2^31
        elements), described by shapes alone."""
        q = _Described((1, 2**19, 32, 128), "bfloat16")
        kv = _Described((1, 2**19, 8, 128), "bfloat16")
        call = _resolve(DESCRIBED_ON_GPU, q, kv, kv, _Described((1, 1, 2**19, 1), "int32"), causal=True)
        self.assertEqual(call.dims, _frontend.AttentionDims(1, 2**19, 2**19, 32, 8, 128))


class TestPolicies(unittest.TestCase):
    def test_head_dims_1_to_256_on_gpu_and_cpu(self):
        for fw in (PADDLE_ON_GPU, api._PADDLE):
            for head_dim in (1, 7, 80, 200, 256):
                with self.subTest(gpu=fw is PADDLE_ON_GPU, head_dim=head_dim):
                    q, k, v = _paddle_qkv(head_dim)
                    call = _resolve(fw, q, k, v)
                    self.assertIs(call.query, q)  # handed on as given: no padding in Python
                    self.assertEqual(call.dims.head_dim, head_dim)
            for head_dim in (0, 257, 512):
                with self.subTest(gpu=fw is PADDLE_ON_GPU, head_dim=head_dim):
                    with self.assertRaisesRegex(ValueError, "`query` head_dim must be in \\[1, 256\\]"):
                        _resolve(fw, *_paddle_qkv(head_dim))

    def test_dtypes_per_device(self):
        with self.assertRaisesRegex(TypeError, "`query` dtype must be one of \\['float16', 'bfloat16'\\] on GPU, got float32"):
            _resolve(PADDLE_ON_GPU, *_paddle_qkv(64, "float32"))
        for dtype in ("float32", "float16", "bfloat16"):
            _resolve(api._PADDLE, *_paddle_qkv(64, dtype))
        for dtype in ("float16", "bfloat16"):
            _resolve(PADDLE_ON_GPU, *_paddle_qkv(64, dtype))

    def test_same_errors_from_both_front_ends(self):
        torch = pytest.importorskip("torch")
        from paddle_flashmask import torch as torch_binding

        torch_on_gpu = dataclasses.replace(torch_binding._TORCH, is_gpu=lambda t: True)

        def torch_qkv(head_dim, dtype="float16"):
            return [torch.zeros(1, 8, 2, head_dim, dtype=getattr(torch, dtype)) for _ in range(3)]

        bad_calls = (
            (lambda fw, qkv: _resolve(fw, *qkv(64, "float32")), TypeError),
            (lambda fw, qkv: _resolve(fw, *qkv(300)), ValueError),
            (lambda fw, qkv: _resolve(fw, *qkv(64), softmax_scale=float("nan")), ValueError),
            (lambda fw, qkv: _resolve(fw, *qkv(64), causal="False"), TypeError),
            (lambda fw, qkv: _resolve(fw, *qkv(64), window_size=(1, 2, 3)), ValueError),
            (lambda fw, qkv: _resolve(fw, *qkv(64), masks.full_mask(8), causal=True), ValueError),
        )
        for bad_call, exception in bad_calls:
            messages = []
            for fw, qkv in ((PADDLE_ON_GPU, _paddle_qkv), (torch_on_gpu, torch_qkv)):
                with self.assertRaises(exception) as caught:
                    bad_call(fw, qkv)
                messages.append(str(caught.exception))
            self.assertEqual(messages[0], messages[1])
        call = _resolve(torch_on_gpu, *torch_qkv(80), masks.causal_mask(8))
        self.assertEqual(tuple(call.query.shape), (1, 8, 2, 80))  # the library pads, not Python
        self.assertIsInstance(call.startend_row_indices, torch.Tensor)

    def test_numpy_bool_is_a_bool(self):
        call = _resolve(api._PADDLE, *_paddle_qkv(8, "float32"), causal=np.bool_(True))
        self.assertIs(call.causal, True)


class TestMaskSpecArgument(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.q, self.k, self.v = (paddle.to_tensor(rng.standard_normal((1, 24, 2, 8)).astype("float32")) for _ in range(3))

    def test_spec_brings_its_causal_flag(self):
        for spec in (masks.causal_document_mask([10, 14]), masks.document_mask([10, 14])):
            with self.subTest(causal=spec.causal):
                want = paddle_flashmask.flashmask_attention(self.q, self.k, self.v, spec.startend_row_indices, causal=spec.causal)
                got = paddle_flashmask.flashmask_attention(self.q, self.k, self.v, spec)
                np.testing.assert_array_equal(got.numpy(), want.numpy())
                same = paddle_flashmask.flashmask_attention(self.q, self.k, self.v, spec, causal=spec.causal)
                np.testing.assert_array_equal(same.numpy(), want.numpy())

    def test_causal_true_with_a_non_causal_spec_is_refused(self):
        with self.assertRaisesRegex(ValueError, "`causal=True` disagrees with the MaskSpec"):
            paddle_flashmask.flashmask_attention(self.q, self.k, self.v, masks.document_mask([24]), causal=True)

    def test_pictures_take_a_spec(self):
        spec = masks.share_question_mask([(2, [2, 2])])
        self.assertEqual(masks.render_text(spec), masks.render_text(masks.to_dense(spec)))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "mask.png")
            masks.save_png(spec, path)
            self.assertGreater(os.path.getsize(path), 0)


class TestOnePass(unittest.TestCase):
    def test_api_validates_once(self):
        q, k, v = _paddle_qkv(8, "float32", seqlen=130)
        with mock.patch.object(_frontend, "resolve", wraps=_frontend.resolve) as resolve:
            paddle_flashmask.flashmask_attention(q, k, v, masks.causal_mask(130), block_mask=np.ones((1, 1, 2, 2), np.int32))
        self.assertEqual(resolve.call_count, 1)

    def test_block_mask_values_read_once(self):
        reads = []

        def values(t):
            reads.append(t)
            return t.numpy()

        fw = dataclasses.replace(api._PADDLE, values=values)
        q, k, v = _paddle_qkv(8, "float32", seqlen=130)
        block_mask = paddle.to_tensor(np.ones((1, 1, 2, 2), np.int32))
        _resolve(fw, q, k, v, masks.causal_mask(130), block_mask=block_mask)
        self.assertEqual(len(reads), 1)
        block_mask[0, 0, 1, 1] = 3
        with self.assertRaisesRegex(ValueError, "`block_mask` values must be 0 .* or 1 .*got 3 at \\[0, 0, 1, 1\\]"):
            _resolve(fw, q, k, v, masks.causal_mask(130), block_mask=block_mask)

    def test_eager_tensors_are_not_static(self):
        # Paddle's Variable claims eager tensors in isinstance checks (dygraph mode): an eager
        # block_mask's values must still be checked, and on the tensor's own place.
        q, k, v = _paddle_qkv(8, "float32", seqlen=130)
        self.assertFalse(api._is_static(q))
        self.assertEqual(api._device(q), str(q.place))
        block_mask = paddle.to_tensor(np.ones((1, 1, 2, 2), np.int32))
        block_mask[0, 0, 0, 1] = 2
        with self.assertRaisesRegex(ValueError, "`block_mask` values must be 0 .* or 1 .*got 2 at \\[0, 0, 0, 1\\]"):
            paddle_flashmask.flashmask_attention(q, k, v, masks.causal_mask(130), block_mask=block_mask)

    def test_no_import_cycle(self):
        # masks never imports the core (the core imports masks): each imports alone.
        code = (
            "import sys; sys.modules['paddle_flashmask._frontend'] = None\n"
            "import paddle_flashmask.masks as m; m.to_dense(m.causal_mask(4)); print('ok')\n"
        )
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
        self.assertEqual(result.stdout.strip(), "ok", result.stderr)


class TestLibraryLookup(unittest.TestCase):
    def test_newest_build_wins(self):
        """An old in-place build next to the sources must not shadow a newer install."""
        with tempfile.TemporaryDirectory() as package, tempfile.TemporaryDirectory() as site:
            in_place = os.path.join(package, "_flashmask_ops.so")
            installed = os.path.join(site, "_flashmask_ops.so")
            for path, mtime in ((in_place, 1_000), (installed, 2_000)):
                open(path, "wb").close()
                os.utime(path, (mtime, mtime))
            record = mock.Mock()
            record.name = "_flashmask_ops.so"
            record.locate.return_value = installed
            dist = mock.Mock(files=[record])
            with mock.patch.object(_ops, "_PACKAGE_DIR", package), mock.patch.object(
                _ops.metadata, "distributions", return_value=[dist]
            ):
                self.assertEqual(_ops._find_library(), installed)
                os.utime(in_place, (3_000, 3_000))
                self.assertEqual(_ops._find_library(), in_place)
                os.remove(installed)
                self.assertEqual(_ops._find_library(), in_place)


if __name__ == "__main__":
    unittest.main()
