#!/usr/bin/env python3
"""The host compiler's flags for the CPU kernel (csrc/cpu), in one place: setup.py (the
Paddle op) and benchmarks/cpu_kernels.py (the kernel timed without Paddle) import this
module, as setup.py imports cuda_flags.py for nvcc.

-march=native unless PADDLE_FLASHMASK_NATIVE=0 (a build that must run on other CPUs than
the one compiling it) or the compiler refuses it: the kernel picks its ISA variant at run
time either way (docs/cpu-kernel.md, "Why one translation unit per ISA").

-fno-trapping-math: the kernel never reads the floating-point exception flags. With
trapping math (GCC's default) GCC threads fast_exp2's clamp into branches, may not then
execute the arithmetic on both sides, and leaves every exponential loop scalar where the
vector ISA has no mask registers (AVX2, the generic variant): on an AVX2-only Zen 3 the
softmax ran one exponential per instruction sequence (docs/cpu-kernel.md, "AVX2 on Zen 3").
Unlike -ffast-math it allows no transformation that changes a value: only operations
executed on paths that did not run them before.

-fno-wrapv: the Python build's own flags, which setuptools and Paddle's cpp_extension put
ahead of these, carry -fwrapv (signed overflow wraps). GCC must then keep the kernel's 32-bit
index arithmetic wrapping instead of widening it into its addresses: the AVX-512 variant got
10% more scalar address instructions (same FMAs), and the op built by setup.py ran ~3%
slower than the same sources built by benchmarks/cpu_kernels.py (docs/cpu-kernel.md, "The
Python build's -fwrapv"). Coming later on the command line, -fno-wrapv wins; the kernel
relies on no signed overflow (a -fsanitize=signed-integer-overflow build ran clean).
"""

import os
import subprocess
import tempfile

COMMON = ("-O3", "-std=c++17", "-fopenmp", "-fno-trapping-math", "-fno-wrapv")
NATIVE = "-march=native"
LINK = ("-fopenmp",)


def cpuinfo():
    """(model name, feature flags) of the machine's first CPU in /proc/cpuinfo, the flags as
    Linux names them (avx512_bf16, amx_bf16, ...); (None, []) where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, []

    def field(name):
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(name)), None)

    return field("model name"), (field("flags") or "").split()


def compiler_accepts(compiler, flag):
    """Whether `compiler` builds an empty file with `flag`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "empty.cc")
        open(src, "w").close()
        cmd = [compiler, flag, "-c", src, "-o", os.path.join(tmp, "empty.o")]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def compile_flags(compiler):
    """The flags of one CPU source's compile with `compiler`."""
    native = os.environ.get("PADDLE_FLASHMASK_NATIVE", "1") != "0" and compiler_accepts(compiler, NATIVE)
    return [*COMMON, *([NATIVE] if native else [])]
