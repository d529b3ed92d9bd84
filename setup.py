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
    PADDLE_FLASHMASK_CUDA_ARCHS="80 90a"   GPU architectures (the default; the nvcc
                                  flags of every CUDA build are in tools/cuda_flags.py)
    MAX_JOBS=N                    compile N sources at once (default: every CPU;
                                  Paddle's own variable, which 3.x reads itself)

Supported Paddle: 2.6 and 3.x, CPU and CUDA builds (one source; the differences
are feature-tested here and in paddle_flashmask/_ops.py).

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

import functools
import glob
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

try:
    import paddle
    from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # The nvcc location BuildExtension itself uses: a module global of cpp_extension.py in
    # Paddle 2.6 and 3.x alike (only 3.x re-exports it from paddle.utils.cpp_extension).
    from paddle.utils.cpp_extension import cpp_extension as paddle_cpp_extension
    from paddle.utils.cpp_extension.cpp_extension import CUDA_HOME
except ImportError as e:  # pip's isolated build env has no Paddle
    sys.exit(
        f"paddle_flashmask: building needs PaddlePaddle importable ({e}). Install it first "
        "(pip install paddlepaddle==3.3.1, or paddlepaddle-gpu) and build with "
        "`pip install --no-build-isolation .`"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import cpu_flags  # noqa: E402  (tools/cpu_flags.py: the host compiler flags of the CPU kernel)
import cuda_flags  # noqa: E402  (tools/cuda_flags.py: the nvcc flags of every CUDA build)
LIBRARY = "paddle_flashmask._flashmask_ops"  # keep in sync with paddle_flashmask/_ops.py


def version():
    with open(os.path.join(ROOT, "paddle_flashmask", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def rel(*parts):
    # setuptools wants source paths relative to setup.py.
    return os.path.relpath(os.path.join(ROOT, *parts), ROOT)


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
    archs = os.environ.get("PADDLE_FLASHMASK_CUDA_ARCHS", " ".join(cuda_flags.DEFAULT_ARCHS)).split()
    return cuda_flags.compile_flags(archs)


@functools.lru_cache(maxsize=None)
def nvcc_dryrun_report():
    """What nvcc would run for a CUDA file (its stderr under --dryrun), asked once."""
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    cmd = [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stderr


def nvcc_dirs(variable):
    """Directories in one variable of nvcc's dry-run report (INCLUDES, SYSTEM_INCLUDES,
    LIBRARIES): where the toolkit nvcc belongs to keeps its headers and libraries, also
    when CUDA_HOME is only a prefix (/usr/local) with a bin/nvcc in it."""
    paths = []
    for line in nvcc_dryrun_report().splitlines():
        if line.startswith(f"#$ {variable}="):
            paths += re.findall(r"/[^\"\s]+", line.split("=", 1)[1])
    return [os.path.normpath(p) for p in paths if os.path.isdir(p)]


def cuda_host_includes():
    """CUDA's headers for the host compiler, which builds flashmask_op.cc with
    PADDLE_WITH_CUDA: Paddle's headers then include cuda_runtime.h and <thrust/complex.h>,
    which CUDA 13 keeps under include/cccl."""
    return nvcc_dirs("INCLUDES") + nvcc_dirs("SYSTEM_INCLUDES")


def cudart_dirs():
    """Where libcudart is (BuildExtension links -lcudart, looking only in CUDA_HOME/lib64)."""
    return [d for d in nvcc_dirs("LIBRARIES") if os.path.basename(d) != "stubs"]


def paddle_feature_macros():
    """-D flags for what the installed Paddle's custom-op API has (one source builds on 2.6
    and 3.x). FLASHMASK_PADDLE_HAS_CONTIGUOUS: paddle::Tensor::contiguous() exists (3.x,
    which can hand a custom op strided views; 2.6 has no strided tensors in its custom-op
    API)."""
    header = os.path.join(
        os.path.dirname(paddle.__file__), "include", "paddle", "phi", "api", "include", "tensor.h"
    )
    try:
        with open(header) as f:
            has_contiguous = re.search(r"\bTensor\s+contiguous\s*\(", f.read()) is not None
    except OSError:
        has_contiguous = False
    return ["-DFLASHMASK_PADDLE_HAS_CONTIGUOUS"] if has_contiguous else []


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
    # c++17 for the host compiler too: BuildExtension adds -std=c++14 where none is given
    # (Paddle 2.6), and CUDA 13's thrust/CUB headers, which Paddle's headers include with
    # PADDLE_WITH_CUDA, need 17.
    feature_macros = paddle_feature_macros()
    # The compiler setuptools will use.
    cxx = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    cxx_flags = [*cpu_flags.compile_flags(cxx), *feature_macros]
    common = {"depends": headers, "extra_link_args": list(cpu_flags.LINK)}

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
            include_dirs=include_dirs
            + [os.path.join(ROOT, "csrc", "cuda")]
            + cuda_host_includes(),
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags() + feature_macros},
            library_dirs=cudart_dirs(),
            runtime_library_dirs=cudart_dirs(),
            **common,
        )
    ext.name = LIBRARY
    return ext


# Paddle 3.x's BuildExtension compiles MAX_JOBS sources at once itself; 2.6's one by one.
PADDLE_COMPILES_IN_PARALLEL = hasattr(paddle_cpp_extension, "_get_num_workers")


def build_jobs():
    value = os.environ.get("MAX_JOBS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            sys.exit(f"paddle_flashmask: MAX_JOBS must be a positive integer, got {value!r}")
        return int(value)
    return os.cpu_count() or 1


class ParallelSpawn:
    """Runs the compiler's compile commands `jobs` at a time.

    Installed as the compiler's `spawn`: BuildExtension still builds every command
    line one after another (its per-file nvcc/cxx switch mutates the shared compiler,
    so it cannot itself run in threads), but a command with `-c` is queued instead of
    awaited; the first other command (the link) waits for all of them."""

    def __init__(self, spawn, jobs, total):
        self._spawn = spawn
        self._total = total
        self._pool = ThreadPoolExecutor(max_workers=jobs)
        self._pending = []
        self._done = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def _run(self, cmd, kwargs):
        t0 = time.monotonic()
        self._spawn(cmd, **kwargs)
        with self._lock:
            self._done += 1
            src = next((a for a in cmd if a.endswith((".cu", ".cc"))), cmd[0])
            print(
                f"paddle_flashmask: [{self._done}/{self._total}] {os.path.basename(src)} "
                f"({time.monotonic() - t0:.0f} s)",
                flush=True,
            )

    def __call__(self, cmd, **kwargs):
        if "-c" in cmd:
            self._pending.append(self._pool.submit(self._run, list(cmd), kwargs))
            return
        self.wait()
        self._spawn(cmd, **kwargs)

    def wait(self):
        for future in self._pending:
            future.result()  # re-raises a failed compile
        if self._pending:
            print(
                f"paddle_flashmask: compiled {len(self._pending)} sources in "
                f"{time.monotonic() - self._start:.0f} s",
                flush=True,
            )
        self._pending = []


class BuildFlashMaskExtension(BuildExtension):
    """Paddle's compile step, in parallel also on Paddle 2.6, without its packaging extras.

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

    def build_extension(self, ext):
        if PADDLE_COMPILES_IN_PARALLEL:
            super().build_extension(ext)
            return
        jobs = build_jobs()
        print(f"paddle_flashmask: compiling {len(ext.sources)} sources, {jobs} at a time", flush=True)
        spawn = ParallelSpawn(self.compiler.spawn, jobs, len(ext.sources))
        self.compiler.spawn = spawn
        try:
            super().build_extension(ext)
            spawn.wait()  # nothing left when the link ran; an up-to-date build links nothing
        finally:
            del self.compiler.spawn  # the class's method again
        # Paddle 2.6 writes the object files into build_lib itself, from where they would
        # be installed into site-packages; they belong with the other build files.
        os.makedirs(self.build_temp, exist_ok=True)
        for obj in glob.glob(os.path.join(self.build_lib, "*.o")):
            os.replace(obj, os.path.join(self.build_temp, os.path.basename(obj)))

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
