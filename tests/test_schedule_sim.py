"""tools/schedule_sim.py: its schedule on hand-made item lists, and its tail order against the
kernel's on the bench's masks (the items the H200 build moved, perf-notes v81)."""

import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import schedule_sim  # noqa: E402
from tile_cost_fit import bench_gpu  # noqa: E402


class ScheduleTest(unittest.TestCase):
    def test_equal_items_fill_every_sm(self):
        # 264 items of 5 tiles on 132 SMs: two rounds, no SM idle; the tail order moves none.
        lengths = [5] * 264
        self.assertEqual(schedule_sim.makespan(lengths, range(264), 132, 0.0), 10.0)
        self.assertEqual(schedule_sim.tail_order(lengths, 132), (list(range(264)), 0))

    def test_a_long_item_near_the_end_moves_to_the_front(self):
        # 4 SMs, 12 items of 1 tile, one of 12, two of 1: taken in order the long one starts at 3
        # and ends at 15; moved first, the other 14 fill the other three SMs by 5 and it ends at
        # 12. (The very last item never moves: it is its own mean, tail_order.cuh.)
        lengths = [1] * 12 + [12, 1, 1]
        order, moved = schedule_sim.tail_order(lengths, 4)
        self.assertEqual((order[0], moved), (12, 1))
        self.assertEqual(schedule_sim.makespan(lengths, range(15), 4, 0.0), 15.0)
        self.assertEqual(schedule_sim.makespan(lengths, order, 4, 0.0), 12.0)
        self.assertEqual(schedule_sim.tail_order([1] * 12 + [12], 4)[1], 0)

    def test_the_kernels_moved_items(self):
        # The items the tail order moved in the H200 build that printed them (v81), D=64, 8K:
        # forward and backward.
        printed = {"global_sliding_window": (18, 12), "causal": (48, 0), "causal_blockwise": (80, 0)}
        n, b, d, h = bench_gpu.CONFIGS["8k-64"]
        for mask, counts in printed.items():
            spec = bench_gpu.build_mask(mask, n, b, h)
            got = tuple(schedule_sim.tail_order(schedule_sim.item_lengths(spec, n, h, d, direction), 132)[1]
                        for direction in ("fwd", "bwd"))
            self.assertEqual(got, counts, mask)


if __name__ == "__main__":
    unittest.main()
