#!/usr/bin/env python3
"""The nvcc flags of every CUDA build, in one place: setup.py (the Paddle op) imports
this module; tools/build_cuda.sh (the framework-free library) and .ci/check_cuda_build.sh
(CI's compile check) run it.

    python3 tools/cuda_flags.py compile [--archs "80 90a"] [--opt=-O2]
    python3 tools/cuda_flags.py gencode [--archs "80 90a"]

`compile` prints the flags of one source's compile, `gencode` only the architecture
flags (the link step needs them again). Include directories and -D macros are the
callers' own: they depend on what is being built.
"""

import argparse

# sm_80 (A100 and everything since, through the mma.sync kernels) and sm_90a (the Hopper
# kernels: wgmma and TMA need the arch-specific "a" target).
DEFAULT_ARCHS = ("80", "90a")
OPTIMIZATION = "-O3"
# -lineinfo keeps profiles and compute-sanitizer reports mapped to source lines;
# -fPIC because every build links a shared library.
COMMON = ("-std=c++17", "--use_fast_math", "-lineinfo", "-Xcompiler", "-fPIC")


def gencode(archs=DEFAULT_ARCHS):
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def compile_flags(archs=DEFAULT_ARCHS, optimization=OPTIMIZATION):
    """`optimization` replaces -O3, e.g. CI's -O2, which compiles faster and still checks
    that every kernel builds."""
    return [optimization, *COMMON, *gencode(archs)]


def main():
    parser = argparse.ArgumentParser(description="Print the nvcc flags of the CUDA builds.")
    parser.add_argument("what", choices=("compile", "gencode"))
    parser.add_argument("--archs", default=" ".join(DEFAULT_ARCHS), help='e.g. "80 90a"')
    parser.add_argument("--opt", default=OPTIMIZATION, help="optimisation level (default -O3)")
    args = parser.parse_args()
    archs = args.archs.split()
    if not archs:
        parser.error("--archs must name at least one architecture")
    flags = compile_flags(archs, args.opt) if args.what == "compile" else gencode(archs)
    print(" ".join(flags))


if __name__ == "__main__":
    main()
