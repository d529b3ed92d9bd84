"""What every mask builder returns, and the facts of the column-wise format."""

from typing import NamedTuple

import numpy as np

BLOCK_MASK_SIZE = 128  # granularity of block_mask, fixed by Paddle's API


def block_count(length: int) -> int:
    """block_mask blocks along a sequence of `length` tokens (the last one may be partial)."""
    return -(-length // BLOCK_MASK_SIZE)


# Bounds per key column the format allows: causal (LTS) or (LTS, LTE); non-causal
# (LTS, UTE) or (LTS, LTE, UTS, UTE).
BOUND_COUNTS = {True: (1, 2), False: (2, 4)}


class MaskSpec(NamedTuple):
    """A column-wise mask, ready for `flashmask_attention(q, k, v, spec)` (which
    takes `causal` from it) or `flashmask_attention(q, k, v, spec.startend_row_indices, causal=spec.causal)`.

    startend_row_indices: int32 ndarray [batch, num_mask_heads, seqlen_k, num_bounds].
    causal: the `causal` flag the bounds are meant for.
    """

    startend_row_indices: np.ndarray
    causal: bool


def check_bound_count(num_bounds: int, causal: bool, where: str = "flashmask_attention") -> None:
    allowed = BOUND_COUNTS[bool(causal)]
    if num_bounds not in allowed:
        raise ValueError(
            f"{where}: startend_row_indices.shape[-1] must be {allowed[0]} or "
            f"{allowed[1]} when causal={bool(causal)}, got {num_bounds}"
        )
