"""benchmarks/cpu_kernels.py and its timing program, and the CPU kernel's build: the hot
helpers that the softmax loops call are compiled inline (an out-of-line exponential made
every score a scalar call: GCC 13 with -march=native, docs/cpu-kernel.md), and the AVX2
variant's exponentials are vector code (with trapping math GCC left them scalar: AVX2 on
Zen 3, docs/cpu-kernel.md)."""

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np

from paddle_flashmask import _ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import cpu_kernels  # noqa: E402

# Called per score or per row inside the softmax loops (tile_math.h, microkernel.h): forced
# inline. A symbol that starts with one of these is an out-of-line copy, or contains one after a
# space: nm -C prints a function template's instantiation with its return type first.
HOT_HELPERS = ("flashmask::cpu::fast_exp2(", "flashmask::cpu::exp2_of<", "flashmask::cpu::ScalarF32::",
               "flashmask::cpu::scale_row(", "flashmask::cpu::ScalarRows::", "flashmask::cpu::VectorRows<")


def op_library(test: unittest.TestCase) -> str:
    """The built op's shared library; fails `test` when there is none."""
    library = _ops._find_library()
    test.assertIsNotNone(library, "the op's library is not built")
    return library


class TestCpuKernelTiming(unittest.TestCase):
    def test_mask_file_holds_the_bounds(self):
        path = cpu_kernels.mask_file("share_question", 1024)
        spec = cpu_kernels.mask_spec("share_question", 1024)
        raw = np.fromfile(path, dtype=np.int32)
        heads, num_bounds, causal = raw[:3]
        self.assertEqual((heads, num_bounds, bool(causal)),
                         (spec.startend_row_indices.shape[1], spec.startend_row_indices.shape[3], spec.causal))  # fmt: skip
        np.testing.assert_array_equal(raw[3:], spec.startend_row_indices.ravel())

    def test_times_every_mask_every_round(self):
        binary = cpu_kernels.build()
        files = [cpu_kernels.mask_file(m, 1024) for m in ("causal", "document")]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        out = subprocess.run([binary, "bfloat16", "1024", "2", "64", "3", *files], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rows = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([r["file"] for r in rows], files)
        for r in rows:
            self.assertEqual(len(r["fwd_ms"]), 3)
            self.assertEqual(len(r["bwd_ms"]), 3)
            self.assertTrue(all(t > 0 for t in r["fwd_ms"] + r["bwd_ms"]))

    def test_bad_arguments_are_named(self):
        binary = cpu_kernels.build()
        result = subprocess.run([binary, "float64", "256", "2", "64", "1", "x"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 2)
        self.assertIn("DTYPE", result.stderr)


@unittest.skipIf(shutil.which("nm") is None, "needs nm (binutils)")
class TestHotHelpersInline(unittest.TestCase):
    def test_no_out_of_line_copy(self):
        library = op_library(self)
        symbols = subprocess.run(["nm", "-C", library], capture_output=True, text=True, check=True).stdout
        names = [line[19:] for line in symbols.splitlines()]  # after "<16 hex digits> <type> "
        for helper in HOT_HELPERS:
            copies = [name for name in names if name.startswith(helper) or " " + helper in name]
            self.assertEqual(copies, [], f"{helper} has an out-of-line copy in {library}")


@unittest.skipIf(shutil.which("nm") is None or shutil.which("objdump") is None, "needs nm and objdump (binutils)")
class TestAvx2ExponentialsVectorised(unittest.TestCase):
    def test_softmax_exponentials_on_ymm(self):
        """The forward's softmax of the AVX2 variant (operand policy on `Ymm`) holds packed
        FMAs on ymm registers: the exponentials' polynomial, 8 scores per instruction. Scalar, the
        same function holds none (the exponentials as vfmadd...ss, the rest of it vmulps and
        vmaxps)."""
        library = op_library(self)
        symbols = subprocess.run(["nm", library], capture_output=True, text=True, check=True).stdout.split()
        softmax = [name for name in symbols if "online_softmax" in name and "Ymm" in name]
        if not softmax:
            self.skipTest("no AVX2 variant's online_softmax symbol (not an x86 build, or inlined by this compiler)")
        for name in softmax:
            code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={name}", library],
                                  capture_output=True, text=True, check=True).stdout
            packed = [line for line in code.splitlines() if "vfmadd" in line and "ps" in line and "%ymm" in line]
            self.assertGreaterEqual(len(packed), 3, f"{name}: the exponentials' polynomial is not vector code")


if __name__ == "__main__":
    unittest.main()
