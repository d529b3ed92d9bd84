"""Mask library: column-wise masks of the FlashMask paper, and their dense forms.

NumPy only (no Paddle, no PyTorch): every builder returns a MaskSpec whose
int32 `startend_row_indices` any binding accepts as is.
"""

from paddle_flashmask.masks.builders import (
    causal_blockwise_mask,
    causal_document_mask,
    causal_mask,
    document_mask,
    full_mask,
    global_sliding_window_mask,
    no_mask_indices,
    prefix_lm_causal_mask,
    prefix_lm_document_mask,
    qk_sparse_mask,
    random_eviction_mask,
    share_question_mask,
    sliding_window_mask,
    window_size_to_indices,
)
from paddle_flashmask.masks.dense import expand_mask_heads, from_dense, to_dense
from paddle_flashmask.masks.picture import render_text, save_png
from paddle_flashmask.masks.spec import MaskSpec

__all__ = [
    "MaskSpec",
    "full_mask",
    "causal_mask",
    "sliding_window_mask",
    "causal_document_mask",
    "document_mask",
    "share_question_mask",
    "global_sliding_window_mask",
    "causal_blockwise_mask",
    "prefix_lm_causal_mask",
    "prefix_lm_document_mask",
    "qk_sparse_mask",
    "random_eviction_mask",
    "window_size_to_indices",
    "no_mask_indices",
    "to_dense",
    "from_dense",
    "expand_mask_heads",
    "render_text",
    "save_png",
]
