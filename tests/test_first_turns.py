"""tools/first_turns.py: which round of which build it compares, on a made-up A/B file."""

import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import first_turns  # noqa: E402


class FirstTurnRatiosTest(unittest.TestCase):
    def test_the_first_build_and_the_others_apart(self):
        turns = {
            "8k-64/sliding_window/fwd": {"old": [110.0, 100.0, 100.0, 102.0], "new": [100.0, 100.0, 99.0, 101.0]},
            "8k-64/full/bwd": {"old": [500.0, 500.0, 500.0, 500.0], "new": [505.0, 500.0, 500.0, 500.0]},
            "8k-64/causal/fwd": {"old": [1.0, 1.0, 1.0]},  # too few rounds: left out
            "meta": {"note": "not a turn"},
        }
        ratios = first_turns.first_turn_ratios(turns)
        self.assertEqual(ratios[("fwd", "masked", "first")], [1.1])
        self.assertEqual(ratios[("fwd", "masked", "others")], [1.0])
        self.assertEqual(ratios[("bwd", "dense", "first")], [1.0])
        self.assertEqual(ratios[("bwd", "dense", "others")], [1.01])
        self.assertNotIn(("fwd", "dense", "first"), ratios)


if __name__ == "__main__":
    unittest.main()
