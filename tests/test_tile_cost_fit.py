"""tools/tile_cost_fit.py: its tile counts on a small causal mask, counted by hand, and its fit,
which recovers the costs that made a set of times."""

import os
import sys
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import tile_cost_fit  # noqa: E402
from paddle_flashmask import masks  # noqa: E402


class TileCountTest(unittest.TestCase):
    def test_causal_tiles_by_hand(self):
        # 256 tokens, 64 x 64 tiles: 4 diagonal tiles hold a triangle each (partial), the 6 below
        # are whole, the 6 above hold nothing; 256 * 257 / 2 pairs; two batches double it.
        (c,) = tile_cost_fit.tile_counts(masks.causal_mask(256, batch=2), 256, [(64, 64)])
        self.assertEqual(c, {"whole": 12, "partial": 8, "pairs": 2 * 256 * 257 // 2})

    def test_ragged_last_block(self):
        # 200 tokens in 64-row blocks of 128 columns: the last row block has 8 rows and stays
        # whole; the last column block has 72 columns, and the kernels mask a short key tile's
        # missing columns, so it is partial in every row block, as they count it.
        (c,) = tile_cost_fit.tile_counts(masks.full_mask(200, batch=1), 200, [(64, 128)])
        self.assertEqual(c, {"whole": 4, "partial": 4, "pairs": 200 * 200})

    def test_idle_consumers_by_hand(self):
        # 384 causal tokens in D=64's 192-row blocks (three consumers of 64 rows) x 128-key tiles.
        # Block 0 visits tiles 1 and 0; on tile 1 (keys 128-255) its consumers of rows 0-63 and
        # 64-127 see nothing, and tile 1 is their list's first. Block 1 visits tiles 2, 1, 0; on
        # tile 2 (keys 256-383) its consumer of rows 192-255 sees nothing. So 3 of 15
        # consumer-tiles are idle, all at a list's end, all passed.
        spec = masks.causal_mask(384, batch=1)
        counts = tile_cost_fit.idle_consumer_tiles(spec, 384, (192, 128), 0)
        self.assertEqual(counts, {"all": 15, "idle": 3, "passed": 3})

    def test_shifted_blocks_by_hand(self):
        # 256 causal tokens in 64-row blocks shifted back by 32 rows: [-32, 32) holds rows 0-31
        # and cuts the first diagonal tile (partial); each full block after it crosses two
        # diagonal tiles (partial) and lies below 1, 2 then 3 whole ones; the last, rows 224-255,
        # crosses one. So 6 whole and 8 partial tiles where the unshifted blocks have 6 and 4.
        spec = masks.causal_mask(256, batch=1)
        shifted, unshifted = (tile_cost_fit.tile_counts(spec, 256, [(64, 64)], [s])[0] for s in (32, 0))
        self.assertEqual(shifted, {"whole": 6, "partial": 8, "pairs": 256 * 257 // 2})
        self.assertEqual(unshifted, {"whole": 6, "partial": 4, "pairs": 256 * 257 // 2})

    def test_shapes_in_one_pass(self):
        # The forward's and backward's shapes counted together (one pass over the segments
        # between both shapes' block edges, the forward's shifted) match each counted alone.
        spec = masks.sliding_window_mask(1000, 100, batch=1)
        shapes, shifts = [(192, 128), (128, 128)], [152, 0]
        together = tile_cost_fit.tile_counts(spec, 1000, shapes, shifts)
        alone = [tile_cost_fit.tile_counts(spec, 1000, [shape], [shift])[0] for shape, shift in zip(shapes, shifts)]
        self.assertEqual(together, alone)

    def test_shift_candidates(self):
        # D=64's 192-row blocks: first the ragged one first (8192 = 42 x 192 + 128: 64 rows back),
        # then 64 and 128 rows more (mod 192); the 128-row kernels do not shift.
        self.assertEqual(tile_cost_fit.shift_candidates(8192, 64, 192), [64, 128, 0])
        self.assertEqual(tile_cost_fit.shift_candidates(192 * 7, 64, 192), [0, 64, 128])
        self.assertEqual(tile_cost_fit.shift_candidates(8000, 128, 128), [0])

    def test_kernel_shift_cost_as_the_kernel_printed_it(self):
        # fwd_shift_cost_kernel's costs of the three candidates, printed on the H200 by a build of
        # v80 with a printf (perf-notes v80): 4000 rows, global rows ending at 288 (shifts 32, 96,
        # 160), and the bench's global_sliding_window at 8K (shifts 64, 128, 0).
        spec = masks.global_sliding_window_mask(4000, 288, 64)
        costs = [tile_cost_fit.kernel_shift_cost(spec, 4000, (192, 128), s) for s in (32, 96, 160)]
        self.assertEqual(costs, [24541, 24164, 27890])
        spec = tile_cost_fit.bench_gpu.build_mask("global_sliding_window", 8192, 16, 4)
        costs = [tile_cost_fit.kernel_shift_cost(spec, 8192, (192, 128), s) for s in (64, 128, 0)]
        self.assertEqual(costs, [1610064, 1591744, 1610064])

    def test_chosen_shift_avoids_a_straddled_edge(self):
        # global_sliding_window's global rows ending on one candidate's block edge (4096 rows:
        # candidates 128, 0, 64, edges at 192m - shift): under the others one block straddles the
        # edge and is partial on every key tile past the band, by more than the margin (the GPU
        # test test_row_shift_choice runs the kernel on the same masks).
        n, rows = 4096, 192
        candidates = tile_cost_fit.shift_candidates(n, 64, rows)
        self.assertEqual(candidates, [128, 0, 64])
        for global_tokens, want in ((256, 128), (192, 0), (320, 64)):
            spec = masks.global_sliding_window_mask(n, global_tokens, 64, batch=1)
            costs = [tile_cost_fit.kernel_shift_cost(spec, n, (rows, 128), s) for s in candidates]
            self.assertEqual(tile_cost_fit.chosen_shift(candidates, costs), want, global_tokens)

    def test_small_savings_keep_the_first_shift(self):
        # 3072 rows, global rows ending at 320 (the 64-row shift's edge): it saves 0.65% of the
        # cost, under the header's margin, so the first candidate stays.
        n, rows = 3072, 192
        candidates = tile_cost_fit.shift_candidates(n, 64, rows)
        spec = masks.global_sliding_window_mask(n, 320, 64, batch=1)
        costs = [tile_cost_fit.kernel_shift_cost(spec, n, (rows, 128), s) for s in candidates]
        self.assertEqual(tile_cost_fit.chosen_shift(candidates, costs), 0)

    def test_kernel_shift_costs_from_the_header(self):
        w = tile_cost_fit.kernel_shift_costs()
        self.assertEqual(w["WholeTile"], 100)
        self.assertGreater(w["PartialTile"], w["WholeTile"])
        self.assertGreater(w["Item"], 0)
        self.assertEqual(w["MinSavingPct"], 1)


class FitTest(unittest.TestCase):
    def test_recovers_costs(self):
        rng = np.random.default_rng(0)
        design = rng.integers(100, 1000, size=(7, 3)).astype(float)
        costs = np.array([0.012, 0.017, 0.011])
        np.testing.assert_allclose(tile_cost_fit.fit_costs(design, design @ costs), costs, rtol=1e-9)

    def test_too_few_masks(self):
        with self.assertRaisesRegex(ValueError, "at least 5"):
            tile_cost_fit.fit_costs(np.ones((3, 3)), np.ones(3))


if __name__ == "__main__":
    unittest.main()
