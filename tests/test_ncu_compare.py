"""tools/ncu_compare.py's mbarrier_of on a hand-written source page's lines: a wait whose first
try ptxas hoisted above other work, one found only at its retry loop, and branches that poll
nothing (one of them on a predicate a compare set after a try_wait)."""

import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import ncu_compare  # noqa: E402

# (address, instruction) as the source page lists them (absolute addresses).
PAGE = [
    (0x1000, "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR9+0x34460], R68"),
    (0x1010, "FFMA.FTZ R53, R53, UR6, -R64"),
    (0x1020, "@!P0  BRA 0x1080"),  # first try hoisted two instructions up
    (0x1030, "@!P1  BRA 0x1090"),  # P1 set by no try_wait before it: its retry loop names the barrier
    (0x1040, "@P2   BRA 0x1000"),  # an ordinary branch
    (0x1050, "ISETP.NE.AND P0, PT, R2, RZ, PT"),
    (0x1060, "@!P0  BRA 0x1000"),  # P0 last set by a compare, not by the try_wait above
    (0x1070, "EXIT"),
    (0x1080, "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR9+0x34460], R68"),
    (0x1090, "SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [R3+UR24+0x34410], R0"),
]


class MbarrierOf(unittest.TestCase):
    def setUp(self):
        self.lines = [dict(address=a, text=t) for a, t in PAGE]

    def test_hoisted_try(self):
        self.assertEqual(ncu_compare.mbarrier_of(self.lines, 2), "[UR9+0x34460]")

    def test_retry_loop(self):
        self.assertEqual(ncu_compare.mbarrier_of(self.lines, 3), "[R3+UR24+0x34410]")

    def test_not_a_wait(self):
        self.assertEqual(ncu_compare.mbarrier_of(self.lines, 4), "")  # target is a try_wait of P0, not P2
        self.assertEqual(ncu_compare.mbarrier_of(self.lines, 1), "")  # not a branch
        self.assertEqual(ncu_compare.mbarrier_of(self.lines, 6), "")  # P0 reset by the ISETP


if __name__ == "__main__":
    unittest.main()
