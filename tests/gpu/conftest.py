"""GPU tests of the CUDA kernels through paddle_flashmask.torch.

They skip cleanly without PyTorch, without a CUDA device, or without the built
library (tools/build_cuda.sh); FLASHMASK_REQUIRE_CUDA=1 turns any of those skips into
a failure (the GPU runs set it, so that a run cannot pass with nothing tested).
"""

import os

from tests.gpu_suites import skip_unless_ready

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
    skip_unless_ready(items, __file__, _skip_reason, "FLASHMASK_REQUIRE_CUDA")
