"""GPU tests of the CUDA kernels through paddle_flashmask.torch.

They skip cleanly without PyTorch, without a CUDA device, or without the built
library (tools/build_cuda.sh); set FLASHMASK_REQUIRE_CUDA=1 to turn a missing
library into a failure (the GPU runs do).
"""

import os

import pytest

os.environ.setdefault("FLASHMASK_POISON", "1")  # outputs are NaN-filled before every launch


def pytest_collection_modifyitems(config, items):
    reason = None
    try:
        import torch
    except ImportError:
        reason = "PyTorch is not installed"
    else:
        if not torch.cuda.is_available():
            reason = "no CUDA device"
        else:
            from paddle_flashmask.torch import _lib

            if _lib.find_library() is None:
                if os.environ.get("FLASHMASK_REQUIRE_CUDA") == "1":
                    raise RuntimeError("libflashmask_cuda.so not built (tools/build_cuda.sh)")
                reason = "libflashmask_cuda.so not built (tools/build_cuda.sh)"
    if reason is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))
