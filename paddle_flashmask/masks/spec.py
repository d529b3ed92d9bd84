"""What every mask builder returns."""

from typing import NamedTuple

import numpy as np


class MaskSpec(NamedTuple):
    """A column-wise mask, ready for `flashmask_attention(q, k, v, spec.startend_row_indices, causal=spec.causal)`.

    startend_row_indices: int32 ndarray [batch, num_mask_heads, seqlen_k, num_bounds].
    causal: the `causal` flag the bounds are meant for.
    """

    startend_row_indices: np.ndarray
    causal: bool
