"""GPU tests of the CUDA kernels through paddle_flashmask.torch.

They skip cleanly without PyTorch, without a CUDA device, or without the built
library (tools/build_cuda.sh); FLASHMASK_REQUIRE_CUDA=1 turns any of those skips into
a failure (the GPU runs set it, so that a run cannot pass with nothing tested).
"""

import os
import pathlib

import pytest

os.environ.setdefault("FLASHMASK_POISON", "1")  # outputs are NaN-filled before every launch


def _skip_reason():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    from paddle_flashmask.torch import _lib

    if _lib.find_library() is None:
        return "libflashmask_cuda.so not built (tools/build_cuda.sh)"
    return None


def pytest_collection_modifyitems(config, items):
    # This hook sees the whole session's items: mark only this folder's (a prefix test on
    # the path string would take tests/gpu_paddle's too).
    here = pathlib.Path(__file__).resolve().parent
    mine = [item for item in items if pathlib.Path(str(item.fspath)).resolve().is_relative_to(here)]
    if not mine:
        return
    reason = _skip_reason()
    if reason is None:
        return
    if os.environ.get("FLASHMASK_REQUIRE_CUDA") == "1":
        raise RuntimeError(f"FLASHMASK_REQUIRE_CUDA=1 but {reason}")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason))
