"""The mask library against masks written straight from each mask's definition."""

import inspect
import unittest

import numpy as np

from paddle_flashmask import masks
from tests.random_bounds import BOUND_FORMS, random_bounds


def _loop_dense(idx, causal, seqlen_q):
    """Paddle's documented semantics, one column at a time (the docstring's loop)."""
    batch, heads, seqlen_k, num_bounds = idx.shape
    allowed = np.ones((batch, heads, seqlen_q, seqlen_k), dtype=bool)
    has_end = (causal and num_bounds == 2) or (not causal and num_bounds == 4)
    offset = seqlen_k - seqlen_q
    for b in range(batch):
        for h in range(heads):
            for j in range(seqlen_k):
                lo, hi = max(idx[b, h, j, 0], 0), seqlen_q
                if has_end:
                    hi = min(max(idx[b, h, j, 1], 0), seqlen_q)
                allowed[b, h, lo:hi, j] = False
                if causal:
                    allowed[b, h, : max(j - offset, 0), j] = False
                elif has_end:
                    lo, hi = max(idx[b, h, j, 2], 0), max(idx[b, h, j, 3], 0)
                    allowed[b, h, lo:hi, j] = False
                else:
                    allowed[b, h, : max(idx[b, h, j, 1], 0), j] = False
    return allowed


def _doc_ids(lengths):
    return np.repeat(np.arange(len(lengths)), lengths)


class TestBuildersFromDefinitions(unittest.TestCase):
    """Each builder's dense mask equals the mask written from its definition."""

    def check(self, spec, expected, seqlen_q=None):
        got = masks.to_dense(*spec, seqlen_q=seqlen_q)
        np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))
        self.assertEqual(spec.startend_row_indices.dtype, np.int32)

    def setUp(self):
        self.rng = np.random.default_rng(0)
        self.n = 37
        self.i = np.arange(self.n)[:, None]
        self.j = np.arange(self.n)[None, :]

    def test_full_and_causal(self):
        self.check(masks.full_mask(self.n, batch=2), np.ones((self.n, self.n), bool))
        self.check(masks.causal_mask(self.n), self.j <= self.i)

    def test_sliding_window(self):
        for w in (0, 1, 5, 100):
            self.check(masks.sliding_window_mask(self.n, w), (self.j <= self.i) & (self.j >= self.i - w))

    def test_documents(self):
        lengths = [5, 1, 20, 11]
        d = _doc_ids(lengths)
        same = d[:, None] == d[None, :]
        self.check(masks.causal_document_mask(lengths), same & (self.j <= self.i))
        self.check(masks.document_mask(lengths), same)

    def test_documents_batch(self):
        batch = [[5, 32], [37], [1, 1, 35]]
        spec = masks.causal_document_mask(batch)
        self.assertEqual(spec.startend_row_indices.shape, (3, 1, 37, 1))
        dense = masks.to_dense(*spec)
        for b, lengths in enumerate(batch):
            d = _doc_ids(lengths)
            np.testing.assert_array_equal(dense[b, 0], (d[:, None] == d[None, :]) & (self.j <= self.i))
        with self.assertRaisesRegex(ValueError, "same total length"):
            masks.causal_document_mask([[3, 4], [5]])

    def test_share_question(self):
        docs = [(4, [3, 5]), (2, [6, 7, 10])]
        owner, part = [], []  # document of each token, and 0 = question / k = k-th answer
        for doc, (question, answers) in enumerate(docs):
            owner += [doc] * (question + sum(answers))
            part += [0] * question + sum(([k + 1] * a for k, a in enumerate(answers)), [])
        owner, part = np.array(owner), np.array(part)
        same_doc = owner[:, None] == owner[None, :]
        key_visible = (part[None, :] == 0) | (part[None, :] == part[:, None])
        self.check(masks.share_question_mask(docs), same_doc & key_visible & (self.j <= self.i))

    def test_global_sliding_window(self):
        g, w = 4, 3
        band = np.abs(self.i - self.j) <= w
        glob = (self.i < g) | (self.j < g)
        self.check(masks.global_sliding_window_mask(self.n, g, w), band | glob)

    def test_causal_blockwise(self):
        lengths = [10, 7, 20]
        d = _doc_ids(lengths)
        last = d == len(lengths) - 1
        visible = (d[:, None] == d[None, :]) | last[:, None]
        self.check(masks.causal_blockwise_mask(lengths), visible & (self.j <= self.i))

    def test_prefix_lm(self):
        p = 9
        self.check(masks.prefix_lm_causal_mask(self.n, p), (self.j <= self.i) | (self.j < p))
        docs = [(3, 10), (0, 7), (20, 20)]
        d = _doc_ids([n for _, n in docs])
        starts = np.cumsum([0] + [n for _, n in docs])[:-1]
        in_prefix = np.arange(self.n) < (starts + [p for p, _ in docs])[d]
        expected = (d[:, None] == d[None, :]) & ((self.j <= self.i) | in_prefix[None, :])
        self.check(masks.prefix_lm_document_mask(docs), expected)

    def test_qk_sparse(self):
        spans = [(3, 9), (20, 21)]
        in_span = np.full(self.n, -1)
        for k, (s, e) in enumerate(spans):
            in_span[s:e] = k
        # A span's queries skip the span's keys up to and including themselves.
        hidden = (in_span[:, None] >= 0) & (in_span[:, None] == in_span[None, :])
        self.check(masks.qk_sparse_mask(self.n, spans), (self.j <= self.i) & ~hidden)

    def test_random_eviction(self):
        spec = masks.random_eviction_mask(self.n, num_heads=3, batch=2, seed=5)
        self.assertEqual(spec.startend_row_indices.shape, (2, 3, self.n, 1))
        dense = masks.to_dense(*spec)
        lts = spec.startend_row_indices[..., 0]
        self.assertTrue((lts > np.arange(self.n)).all(), "a key is never evicted before it is seen")
        evicted = (lts < self.n).mean()
        self.assertTrue(0.3 < evicted < 0.7, evicted)
        self.assertFalse((dense[0, 0] == dense[0, 1]).all(), "heads differ")


class TestDocstringPictures(unittest.TestCase):
    """The picture in each builder's docstring is what the builder makes."""

    CASES = {
        "full_mask": lambda: masks.full_mask(4),
        "causal_mask": lambda: masks.causal_mask(4),
        "sliding_window_mask": lambda: masks.sliding_window_mask(6, 2),
        "causal_document_mask": lambda: masks.causal_document_mask([2, 3, 1]),
        "document_mask": lambda: masks.document_mask([2, 3, 1]),
        "share_question_mask": lambda: masks.share_question_mask([(2, [2, 2])]),
        "global_sliding_window_mask": lambda: masks.global_sliding_window_mask(6, 1, 1),
        "causal_blockwise_mask": lambda: masks.causal_blockwise_mask([2, 2, 2]),
        "prefix_lm_causal_mask": lambda: masks.prefix_lm_causal_mask(6, 3),
        "prefix_lm_document_mask": lambda: masks.prefix_lm_document_mask([(2, 3), (1, 3)]),
        "qk_sparse_mask": lambda: masks.qk_sparse_mask(8, [(2, 5)]),
        "random_eviction_mask": lambda: masks.random_eviction_mask(6, 1, seed=3),
    }

    def test_pictures(self):
        for name, build in self.CASES.items():
            with self.subTest(name):
                picture = masks.render_text(masks.to_dense(*build()))
                self.assertIn(picture, inspect.getdoc(getattr(masks, name)))


class TestDenseConversions(unittest.TestCase):
    def test_to_dense_matches_documented_loop(self):
        rng = np.random.default_rng(1)
        for causal, num_bounds in BOUND_FORMS:
            for seqlen_q, seqlen_k in ((17, 17), (9, 23), (23, 9)):
                with self.subTest(causal=causal, bounds=num_bounds, sq=seqlen_q, sk=seqlen_k):
                    idx = random_bounds(rng, 2, 3, seqlen_q, seqlen_k, num_bounds, causal)
                    np.testing.assert_array_equal(
                        masks.to_dense(idx, causal, seqlen_q=seqlen_q), _loop_dense(idx, causal, seqlen_q)
                    )

    def test_block_mask(self):
        n = 300
        spec = masks.causal_mask(n)
        keep = np.ones((1, 1, 3, 3), np.int32)
        keep[0, 0, 2, 1] = 0
        dense = masks.to_dense(*spec, block_mask=keep)
        self.assertFalse(dense[0, 0, 256:, 128:256].any())
        np.testing.assert_array_equal(dense[0, 0, :256], masks.to_dense(*spec)[0, 0, :256])

    def test_from_dense_round_trip(self):
        rng = np.random.default_rng(2)
        for causal, num_bounds in BOUND_FORMS:
            with self.subTest(causal=causal, bounds=num_bounds):
                idx = random_bounds(rng, 2, 2, 31, 31, num_bounds, causal)
                dense = masks.to_dense(idx, causal)
                spec = masks.from_dense(dense)
                np.testing.assert_array_equal(masks.to_dense(*spec), dense)
                self.assertLessEqual(spec.startend_row_indices.shape[-1], num_bounds if causal == spec.causal else 4)

    def test_from_dense_picks_smallest_form(self):
        spec = masks.from_dense(masks.to_dense(*masks.causal_document_mask([3, 4])))
        self.assertEqual((spec.causal, spec.startend_row_indices.shape[-1]), (True, 1))
        spec = masks.from_dense(masks.to_dense(*masks.document_mask([3, 4])))
        self.assertEqual((spec.causal, spec.startend_row_indices.shape[-1]), (False, 2))

    def test_from_dense_names_the_bad_column(self):
        allowed = np.ones((6, 6), bool)
        allowed[[1, 3, 5], 4] = False  # three separate masked runs in column 4
        with self.assertRaisesRegex(ValueError, "column 4"):
            masks.from_dense(allowed)
        with self.assertRaisesRegex(ValueError, "later column"):
            masks.from_dense(np.ones((4, 4), bool), causal=True)

    def test_window_size_matches_paddle_conversion(self):
        # Paddle's own conversion (seqlen_q == seqlen_k): LTS = j + left + 1, UTE = j - right, clipped.
        n = 20
        j = np.arange(n)
        idx = masks.window_size_to_indices((3, 5), False, n, n, batch=2)
        self.assertEqual(idx.shape, (2, 1, n, 2))
        np.testing.assert_array_equal(idx[1, 0, :, 0], np.clip(j + 4, 0, n))
        np.testing.assert_array_equal(idx[1, 0, :, 1], np.clip(j - 5, 0, n))
        causal = masks.window_size_to_indices(3, True, n, n)
        np.testing.assert_array_equal(causal[0, 0, :, 0], np.clip(j + 4, 0, n))

    def test_to_dense_rows_are_those_rows_of_the_whole_mask(self):
        spec = masks.causal_document_mask([[130, 150, 20]] * 2)
        keep = np.random.default_rng(0).integers(0, 2, size=(2, 1, 3, 3)).astype(np.int32)
        rows = np.array([299, 0, 150, 129])
        np.testing.assert_array_equal(masks.to_dense(spec, block_mask=keep, rows=rows),
                                      masks.to_dense(spec, block_mask=keep)[:, :, rows])
        with self.assertRaisesRegex(ValueError, "rows"):
            masks.to_dense(spec, rows=[300])

    def test_window_size_from_its_definition(self):
        # Query i, aligned to i' = i + seqlen_k - seqlen_q (bottom-right, as causal), attends to
        # keys [i' - left, i' + right] (right = 0 when causal); seqlen_q != seqlen_k included.
        for sq, sk, window, causal in (
            (20, 20, (3, 5), False), (13, 29, (4, 2), False), (29, 13, (2, 7), False),
            (13, 29, 5, True), (29, 13, 3, True), (7, 40, (0, 0), False), (40, 7, 0, True),
        ):
            with self.subTest(sq=sq, sk=sk, window=window, causal=causal):
                left, right = (window, window) if isinstance(window, int) else window
                i = np.arange(sq)[:, None] + sk - sq
                j = np.arange(sk)[None, :]
                want = (j >= i - left) & (j <= i + (0 if causal else right))
                idx = masks.window_size_to_indices(window, causal, sq, sk)
                np.testing.assert_array_equal(masks.to_dense(idx, causal, seqlen_q=sq)[0, 0], want)

    def test_picture_png(self):
        import os
        import tempfile

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib not installed")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "mask.png")
            masks.save_png(masks.to_dense(*masks.share_question_mask([(3, [4, 4])])), path, "share question")
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
