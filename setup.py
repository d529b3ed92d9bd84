"""Builds the `flashmask_attention_op` Paddle custom operator and installs the
`paddle_flashmask` Python package around it.

The operator is compiled against Paddle's headers and libpaddle. With the CPU
Paddle 3.3.1, a plain `pip install .` works (pyproject.toml gives pip's isolated
build environment that Paddle). With any other Paddle, a CUDA build above all,
build against the installed one:

    pip install paddlepaddle-gpu setuptools wheel      # or any other Paddle
    pip install --no-build-isolation .

Environment variables:
    PADDLE_FLASHMASK_CPU_ONLY=1   skip the CUDA sources even where Paddle has CUDA
    PADDLE_FLASHMASK_NATIVE=0     no -march=native (for a build that must run on
                                  other CPUs than the one compiling it)
    PADDLE_FLASHMASK_CUDA_ARCHS="80 90a"   GPU architectures (the default; as in
                                  tools/build_cuda.sh). CuTe/CUTLASS headers come
                                  from the nvidia-cutlass wheel when installed.

For a source checkout without installing, `python setup.py build_ext --inplace`
puts the library next to the sources (paddle_flashmask._ops also does this on
first use).

Why not paddle.utils.cpp_extension.setup: it names the extension after the
distribution and installs a generated `<name>.py` stub (moved to
`<name>/__init__.py`), which would replace this package's `__init__.py`. So
this uses setuptools.setup with Paddle's CppExtension/CUDAExtension (include
dirs, libpaddle linkage) and BuildExtension (compiler handling, nvcc), and the
library becomes the private module file `paddle_flashmask/_flashmask_ops.so`,
which paddle_flashmask._ops registers with Paddle on first use.
"""

import glob
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

try:
    import paddle
    from paddle.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pip's isolated build env has no Paddle
    sys.exit(
        f"paddle_flashmask: building needs PaddlePaddle importable ({e}). Install it first "
        "(pip install paddlepaddle==3.3.1, or paddlepaddle-gpu) and build with "
        "`pip install --no-build-isolation .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "paddle_flashmask._flashmask_ops"  # keep in sync with paddle_flashmask/_ops.py


def version():
    with open(os.path.join(ROOT, "paddle_flashmask", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def rel(*parts):
    # setuptools wants source paths relative to setup.py.
    return os.path.relpath(os.path.join(ROOT, *parts), ROOT)


def compiler_accepts(flag):
    """Whether the compiler setuptools will use builds an empty file with `flag`."""
    cxx = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "empty.cc")
        open(src, "w").close()
        cmd = [cxx, flag, "-c", src, "-o", os.path.join(tmp, "empty.o")]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def want_cuda():
    if (
        os.environ.get("PADDLE_FLASHMASK_CPU_ONLY", "0") == "1"
        or not paddle.is_compiled_with_cuda()
    ):
        return False
    if CUDA_HOME is None:  # where Paddle's BuildExtension looks for bin/nvcc
        print("paddle_flashmask: Paddle has CUDA but nvcc was not found; building CPU only")
        return False
    return True


def nvcc_flags():
    archs = os.environ.get("PADDLE_FLASHMASK_CUDA_ARCHS", "80 90a").split()
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", *gencode]


def cutlass_include():
    """CuTe/CUTLASS headers shipped by the `nvidia-cutlass` wheel, if installed."""
    try:
        import cutlass_library
    except ImportError:
        print("paddle_flashmask: nvidia-cutlass not installed; building without CuTe headers")
        return []
    return [os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")]


def extension():
    cpu_sources = sorted(glob.glob(rel("csrc", "cpu", "*.cc"))) + [
        rel("csrc", "paddle", "flashmask_op.cc")
    ]
    headers = [
        path
        for pattern in ("*.h", "*.cuh")
        for path in glob.glob(rel("csrc", "**", pattern), recursive=True)
    ]
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
    cxx_flags = ["-O3", "-fopenmp"]
    if os.environ.get("PADDLE_FLASHMASK_NATIVE", "1") != "0" and compiler_accepts("-march=native"):
        cxx_flags.append("-march=native")
    common = {"depends": headers, "extra_link_args": ["-fopenmp"]}

    if not want_cuda():
        ext = CppExtension(
            sources=cpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            **common,
        )
    else:
        cuda_sources = sorted(glob.glob(rel("csrc", "cuda", "**", "*.cu"), recursive=True))
        cuda_sources += sorted(glob.glob(rel("csrc", "paddle", "*_gpu.cu")))
        ext = CUDAExtension(
            sources=cpu_sources + cuda_sources,
            include_dirs=include_dirs + [os.path.join(ROOT, "csrc", "cuda")] + cutlass_include(),
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags()},
            **common,
        )
    ext.name = LIBRARY
    return ext


class BuildFlashMaskExtension(BuildExtension):
    """Paddle's compile step without its packaging extras.

    BuildExtension.run() also writes a `<library>.py` loader stub next to the
    library (shadowed by the library itself when both sit in one package
    directory) and renames in-place builds to `*_pd_.so`; paddle_flashmask._ops
    loads the library itself, so plain setuptools behaviour is kept instead.
    """

    def finalize_options(self):
        super().finalize_options()
        # Paddle places object files under build_lib joined with build_temp; an
        # absolute build_temp keeps them out of build_lib (and so out of the wheel).
        self.build_temp = os.path.abspath(self.build_temp)

    def run(self):
        build_ext.run(self)


setup(
    name="paddle_flashmask",
    version=version(),
    description="FlashMask attention (column-wise sparse masks) for PaddlePaddle, on CPU and GPU",
    packages=find_packages(include=["paddle_flashmask", "paddle_flashmask.*"]),
    python_requires=">=3.8",
    install_requires=["numpy"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildFlashMaskExtension},
    zip_safe=False,
)
