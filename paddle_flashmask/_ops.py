"""The compiled `flashmask_attention_op`, registered with Paddle on first call.

`import paddle_flashmask` never loads it: the library is found and registered
the first time `flashmask_attention_op` runs. setup.py builds it as
`paddle_flashmask/_flashmask_ops.so`. Looked up next to this file (installed
package, or in-place build) and in the installed distribution (when this file is
a source checkout that shadows it, e.g. tests run from the repository root); the
newest of those is loaded. Failing both, a source checkout builds it in place
once (`python setup.py build_ext --inplace`).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
from importlib import metadata

import paddle

try:  # Paddle >= 3.0: one entry point for eager mode and PIR static graphs
    from paddle._C_ops import _run_custom_op
    from paddle.jit.marker import unified
except ImportError:  # Paddle 2.6: eager and legacy static graphs go separate ways
    _run_custom_op = None
    unified = paddle.jit.not_to_static


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
    """The newest build of the library: next to this file (installed package or an
    in-place build) or in an installed distribution. Newest, because a source
    checkout can hold both an old in-place build and a fresh install (`make install`
    after a change): the older one would run stale code."""
    candidates = [
        p for p in glob.glob(os.path.join(_PACKAGE_DIR, _LIBRARY_STEM + ".*")) if _is_library(os.path.basename(p))
    ]
    # Every install of the distribution, not just the first: a source checkout's
    # paddle_flashmask.egg-info (left by a build) is found first and lists no library.
    for dist in metadata.distributions(name=_DISTRIBUTION):
        for f in dist.files or []:
            if _is_library(f.name) and os.path.exists(f.locate()):
                candidates.append(str(f.locate()))
    return max(candidates, key=os.path.getmtime, default=None)


def has_cuda_kernels() -> bool:
    """Whether the compiled op holds the CUDA kernels (built against a CUDA Paddle with
    nvcc found), so that it runs on GPU tensors."""
    import ctypes

    library = _find_library()
    return library is not None and hasattr(ctypes.CDLL(library), "flashmask_cuda_abi_version")


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


def _append_static_op(q, k, v, startend_row_indices, block_mask, attrs):
    """Paddle 2.6 static graph (paddle.jit.to_static): the op appended to the program."""
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(_OP_NAME)
    out = helper.create_variable_for_type_inference(q.dtype)
    lse = helper.create_variable_for_type_inference(paddle.float32)
    inputs = {"q": q, "k": k, "v": v, "startend_row_indices": startend_row_indices}
    if block_mask is not None:
        inputs["block_mask"] = block_mask
    helper.append_op(
        type=_OP_NAME, inputs=inputs, outputs={"out": out, "softmax_lse": lse}, attrs=attrs
    )
    return out, lse


# `unified`: the same code serves eager mode and static graphs, so
# paddle.jit.to_static must call it as is rather than transcribe it.
@unified
def flashmask_attention_op(
    q,
    k,
    v,
    startend_row_indices,
    block_mask,
    causal: bool,
    softmax_scale: float,
    deterministic: bool,
    masks_nothing: bool = False,
):
    """Runs the operator on already validated inputs; returns (out, softmax_lse).

    Differentiable with respect to q, k and v; works eagerly and under
    paddle.jit.to_static. `deterministic` makes the GPU backward bitwise
    reproducible (the CPU one always is). `masks_nothing` says the bounds mask
    nothing beyond `causal` (the caller gave no mask), which lets the Hopper
    forward take its mask-less key tiles.
    """
    _load()
    args = (q, k, v, startend_row_indices, block_mask)
    attrs = (bool(causal), float(softmax_scale), bool(deterministic), bool(masks_nothing))
    if _run_custom_op is not None:
        out, lse = _run_custom_op(_OP_NAME, *args, *attrs)
    elif paddle.in_dynamic_mode():
        from paddle.base import core

        out, lse = core.eager._run_custom_op(_OP_NAME, *args, *attrs)
    else:
        names = ("causal", "softmax_scale", "deterministic", "masks_nothing")
        out, lse = _append_static_op(*args, dict(zip(names, attrs)))
    return out, lse
