"""tools/sass_tile_loop.py on small hand-written SASS listings in cuobjdump's format (a forward's
and a backward's): it finds the tile loop (not the item loop around it, nor a wait's retry stub
that branches back into it) and counts the unmasked path, leaving out the masking that a branch
after the first wgmma wait skips and counting every other branch whole."""

import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import sass_tile_loop  # noqa: E402

# (address, instruction): an item loop (0x10-0xd0) around the tile loop (0x20-0xb0); the masking
# (0x60-0x70) is skipped by the branch at 0x50; a retry stub at 0xf0 branches back to 0x30.
LISTING = [
    (0x00, "S2R R0, SR_TID.X"),
    (0x10, "IMAD.MOV.U32 R1, RZ, RZ, R0"),
    (0x20, "BAR.SYNC.DEFER_BLOCKING R7, 0x100"),
    (0x30, "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], RZ, !UPT"),
    (0x40, "WARPGROUP.DEPBAR.LE gsb0, 0x1"),
    (0x50, "@P0 BRA 0x80"),
    (0x60, "FSEL R24, R24, -INF, P1"),
    (0x70, "FSEL R25, R25, -INF, P1"),
    (0x80, "FMNMX R2, R24, R25, !PT"),
    (0x90, "MUFU.EX2 R24, R24"),
    (0xa0, "WARPGROUP.DEPBAR.LE gsb0, 0x0"),
    (0xb0, "@!P2 BRA 0x20"),
    (0xc0, "WARPGROUP.DEPBAR.LE gsb0, 0x1"),
    (0xd0, "@!P3 BRA 0x10"),
    (0xe0, "EXIT"),
    (0xf0, "@!P0 BRA 0x30"),
]


# A backward's tile loop (0x10-0xa0): the S^T wait is a gsb0 0x0 one, the masking (0x40) is
# skipped by the branch at 0x30, and the branch at 0x60 (an item's first tile, which has no late
# dQ) stays in the count; a retry stub at 0xc0 branches back over the EXIT.
LISTING_BWD = [
    (0x00, "S2R R0, SR_TID.X"),
    (0x10, "HGMMA.64x64x16.F32.BF16 R152, gdesc[UR24], RZ, !UPT"),
    (0x20, "WARPGROUP.DEPBAR.LE gsb0, 0x0"),
    (0x30, "@P0 BRA 0x50"),
    (0x40, "FSEL R152, R152, -INF, P1"),
    (0x50, "MUFU.EX2 R152, R152"),
    (0x60, "@P1 BRA 0x80"),
    (0x70, "HGMMA.64x64x16.F32.BF16 R88, gdesc[UR28].tnspA.tnspB, RZ, !UPT"),
    (0x80, "HGMMA.64x128x16.F32.BF16 R24, R184, gdesc[UR16].tnspB, R24, gsb0"),
    (0x90, "WARPGROUP.DEPBAR.LE gsb0, 0x0"),
    (0xa0, "@!P2 BRA 0x10"),
    (0xb0, "EXIT"),
    (0xc0, "@!P0 BRA 0x20"),
]


def listing(name, rows=LISTING):
    lines = [f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_SM90\""]
    lines += [f"        /*{a:04x}*/                   {ins} ;   /* 0x000000000000000000 */" for a, ins in rows]
    return "\n".join(lines) + "\n"


class TileLoopTest(unittest.TestCase):
    def setUp(self):
        self.code = sass_tile_loop.kernels(listing("_Z25flashmask_fwd_sm90_kernelv"))["_Z25flashmask_fwd_sm90_kernelv"]

    def test_the_listing_is_read_whole(self):
        self.assertEqual(len(self.code), len(LISTING))
        self.assertEqual(sass_tile_loop.opcode("@!P2 BRA 0x20"), "BRA")
        self.assertEqual(sass_tile_loop.opcode("HGMMA.64x128x16.F32.BF16 R24, gdesc[UR20], RZ"), "HGMMA")
        self.assertEqual(sass_tile_loop.opcode(""), "")  # an ncu source page's empty line

    def test_the_tile_loop_is_the_innermost_with_gemms_and_exponentials(self):
        self.assertEqual(sass_tile_loop.tile_loop(self.code), (0x20, 0xb0))

    def test_the_unmasked_path_skips_the_masking(self):
        path = sass_tile_loop.unmasked_path(self.code, 0x20, 0xb0)
        self.assertEqual([sass_tile_loop.opcode(i) for i in path],
                         ["BAR", "HGMMA", "WARPGROUP", "BRA", "FMNMX", "MUFU", "WARPGROUP", "BRA"])

    def test_the_backward_loop_and_path(self):
        name = "_Z25flashmask_bwd_sm90_kernelv"
        code = sass_tile_loop.kernels(listing(name, LISTING_BWD))[name]
        self.assertEqual(sass_tile_loop.tile_loop(code), (0x10, 0xa0))
        path = sass_tile_loop.unmasked_path(code, 0x10, 0xa0)
        self.assertEqual([sass_tile_loop.opcode(i) for i in path],
                         ["HGMMA", "WARPGROUP", "BRA", "MUFU", "BRA", "HGMMA", "HGMMA", "WARPGROUP", "BRA"])

    def test_no_loop_without_exponentials(self):
        code = [(a, i) for a, i in self.code if not i.startswith("MUFU")]
        self.assertIsNone(sass_tile_loop.tile_loop(code))

    def test_a_missing_kernel_is_named(self):
        with tempfile.NamedTemporaryFile("w", suffix=".sass", delete=False) as f:
            f.write(listing("_Z25flashmask_fwd_sm90_kernelv"))
        try:
            with self.assertRaises(SystemExit) as raised:
                sass_tile_loop.main([f.name, "--kernel", "bwd"])
            self.assertIn("--kernel", str(raised.exception))
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main()
