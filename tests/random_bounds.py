"""Random `startend_row_indices` of every form, shared by the CPU and GPU tests."""

import numpy as np

# (causal, number of bounds): every form the API accepts.
BOUND_FORMS = ((True, 1), (True, 2), (False, 2), (False, 4))


def random_bounds(rng, batch, heads, seqlen_q, seqlen_k, num_bounds, causal):
    """int32 [batch, heads, seqlen_k, num_bounds] mixing ordered intervals, empty
    intervals (start >= end) and values outside [0, seqlen_q]."""
    shape = (batch, heads, seqlen_k)
    a = rng.integers(-2, seqlen_q + 3, size=shape)
    b = rng.integers(-2, seqlen_q + 3, size=shape)
    ordered = rng.random(shape) < 0.8
    start, end = np.where(ordered, np.minimum(a, b), a), np.where(ordered, np.maximum(a, b), b)
    if num_bounds == 1:
        cols = [start]
    elif num_bounds == 2 and causal:
        cols = [start, end]
    elif num_bounds == 2:
        # LTS in the lower part, UTE in the upper part, as real masks have them.
        cols = [end, start]
    else:
        c = rng.integers(-2, seqlen_q + 3, size=shape)
        d = rng.integers(-2, seqlen_q + 3, size=shape)
        cols = [start, end, np.minimum(c, d), np.maximum(c, d)]
    return np.ascontiguousarray(np.stack(cols, -1), dtype=np.int32)
