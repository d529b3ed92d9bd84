"""tools/clock_under_load.py: nvidia-smi's lines read, and a block's rate, clock and rate per GHz."""

import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import clock_under_load  # noqa: E402


class ClockUnderLoadTest(unittest.TestCase):
    def test_smi_lines(self):
        self.assertEqual(clock_under_load.parse_smi_line("1620, 691.37\n"), (1620.0, 691.37))
        self.assertIsNone(clock_under_load.parse_smi_line("[N/A], 691.37"))
        self.assertIsNone(clock_under_load.parse_smi_line("Failed to initialize NVML"))

    def test_block_row(self):
        # three calls of 2 ms doing 1.2e12 FLOPs: 600 TFLOPs/s; clock samples 1500 and 1600 MHz
        row = clock_under_load.block_row([2.0, 2.0, 3.0], [(1500.0, 690.0), (1600.0, 692.0)], 1.2e12)
        self.assertAlmostEqual(row["tflops"], 600.0)
        self.assertEqual((row["calls"], row["samples"]), (3, 2))
        self.assertAlmostEqual(row["sm_mhz"], 1550.0)
        self.assertAlmostEqual(row["power_w"], 691.0)
        self.assertAlmostEqual(row["tflops_per_ghz"], 600.0 / 1.55)

    def test_block_without_samples(self):
        row = clock_under_load.block_row([1.0], [], 1e12)
        self.assertIsNone(row["sm_mhz"])
        self.assertIsNone(row["tflops_per_ghz"])


if __name__ == "__main__":
    unittest.main()
