"""Scores that jump from one key block to the next, for the online softmax's rescaling.

The kernels move a row's reference maximum only when a key tile's probabilities against it
would pass 2^8 (kRescaleSlack, csrc/include/flashmask/softmax.h: the CPU kernel compares the
tile's maximum, the Hopper forwards a thread's partial row sums, taken without the maximum and
redone with it when they pass) and rescale the output only then. Random inputs at the default
scale rarely make a later tile's scores jump that far; these keys do, block after block: with
queries of positive entries, key block b is scaled by 1 + step * b (rising) or the same factors
reversed (falling), so both tile orders (the CPU's and CUDA's forwards visit key tiles
ascending or, causal, from the diagonal down) meet jumps on every tile, and with a smaller step
jumps that stay within the slack. Shared by the CPU tests (tests/test_cpu_kernel.py) and the GPU
tests (tests/gpu)."""

from __future__ import annotations

import numpy as np

# Key block of the ramp: the CPU kernel's key tile; the Hopper kernels' 128- and 176-key tiles
# then see two or three steps at once.
RAMP_BLOCK = 64


def ramp_factors(seqlen_k: int, step: float, rising: bool = True) -> np.ndarray:
    """Per key, 1 + step * (its block index), [seqlen_k] float32; reversed when not rising."""
    factors = 1.0 + step * (np.arange(seqlen_k) // RAMP_BLOCK)
    return (factors if rising else factors[::-1].copy()).astype(np.float32)
