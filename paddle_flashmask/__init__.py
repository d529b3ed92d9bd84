"""paddle_flashmask: FlashMask attention (column-wise sparse masks) for PaddlePaddle.

`import paddle_flashmask` needs neither Paddle's compiled op nor a GPU: the
Paddle API is imported on first use, and `paddle_flashmask.masks`,
`paddle_flashmask.reference` and `paddle_flashmask.torch` never import Paddle.
"""

import importlib

__version__ = "0.1.0"

_PADDLE_API = ("flashmask_attention", "patch_paddle")

__all__ = list(_PADDLE_API) + ["masks", "__version__"]


def __getattr__(name):
    # Lazily, so that the NumPy/PyTorch parts of the package work without Paddle.
    if name in _PADDLE_API:
        return getattr(importlib.import_module("paddle_flashmask.api"), name)
    if name == "masks":
        return importlib.import_module("paddle_flashmask.masks")
    raise AttributeError(f"module 'paddle_flashmask' has no attribute {name!r}")
