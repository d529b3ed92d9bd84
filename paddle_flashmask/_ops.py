"""The compiled `flashmask_attention_op`, registered with Paddle on first call.

`import paddle_flashmask` never loads it: the library is found and registered
the first time `flashmask_attention_op` runs. setup.py builds it as
`paddle_flashmask/_flashmask_ops.so`. Looked up, in order: next to this file
(installed package, or in-place build), then in the installed distribution
(when this file is a source checkout that shadows it, e.g. tests run from the
repository root), and failing both, in a source checkout, built in place once
(`python setup.py build_ext --inplace`).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
from importlib import metadata

from paddle import _C_ops
from paddle.jit.marker import unified

_OP_NAME = "flashmask_attention_op"
_DISTRIBUTION = "paddle_flashmask"
_LIBRARY_STEM = "_flashmask_ops"  # setup.py's LIBRARY, inside this package
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.dirname(_PACKAGE_DIR)

_load_lock = threading.Lock()
_loaded = False


def _is_library(name: str) -> bool:
    return name.startswith(_LIBRARY_STEM + ".") and name.endswith((".so", ".dylib", ".pyd"))


def _find_library() -> str | None:
    local = sorted(
        p
        for p in glob.glob(os.path.join(_PACKAGE_DIR, _LIBRARY_STEM + ".*"))
        if _is_library(os.path.basename(p))
    )
    if local:
        return local[0]
    # Every install of the distribution, not just the first: a source checkout's
    # paddle_flashmask.egg-info (left by a build) is found first and lists no library.
    for dist in metadata.distributions(name=_DISTRIBUTION):
        for f in dist.files or []:
            if _is_library(f.name) and os.path.exists(f.locate()):
                return str(f.locate())
    return None


def _build_in_place() -> None:
    print(
        "paddle_flashmask: compiling the operator in this source checkout (once, about a minute)...",
        file=sys.stderr,
        flush=True,
    )
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    result = subprocess.run(cmd, cwd=_SOURCE_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImportError(
            f"paddle_flashmask: building the operator failed (`{' '.join(cmd)}` in {_SOURCE_ROOT}):\n"
            + result.stdout[-4000:]
            + result.stderr[-4000:]
        )


def _load() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        library = _find_library()
        if library is None and os.path.exists(os.path.join(_SOURCE_ROOT, "setup.py")):
            _build_in_place()
            library = _find_library()
        if library is None:
            raise ImportError(
                "paddle_flashmask: the compiled operator is missing. Install the package from its "
                "source directory with Paddle already installed:\n"
                "    pip install --no-build-isolation .\n"
                "(or `python setup.py build_ext --inplace` to use the checkout without installing)"
            )
        from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

        load_op_meta_info_and_register_op(library)
        _loaded = True


# `unified`: the same code serves eager mode and static graphs, so
# paddle.jit.to_static must call it as is rather than transcribe it.
@unified
def flashmask_attention_op(
    q, k, v, startend_row_indices, block_mask, causal: bool, softmax_scale: float, deterministic: bool
):
    """Runs the operator on already validated inputs; returns (out, softmax_lse).

    Differentiable with respect to q, k and v; works eagerly and under
    paddle.jit.to_static (PIR static graphs). `deterministic` asks for a
    backward whose gradients are bitwise identical run to run.
    """
    _load()
    # `deterministic`: wired to the op's attr by the C++ change
    out, lse = _C_ops._run_custom_op(
        _OP_NAME, q, k, v, startend_row_indices, block_mask, bool(causal), float(softmax_scale)
    )
    return out, lse
