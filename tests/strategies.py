"""Hypothesis strategies for random flashmask_attention calls, shared by the CPU
property test (tests/test_fuzz.py) and the GPU fuzz test (tests/gpu/test_fuzz_cuda.py).

A drawn `Case` fixes the shapes, dtype, bound form, mask heads, block mask and
softmax scale; its arrays come from a NumPy generator seeded by the case, so
a failing example replays exactly. FLASHMASK_FUZZ_EXAMPLES sets how many
examples a fuzz test runs (default: a few hundred, derandomized so CI runs the
same ones; set it, e.g. to 5000, for a longer random search).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from paddle_flashmask import masks
from paddle_flashmask._frontend import AttentionDims
from paddle_flashmask._kernels import COMPILED_HEAD_DIMS, MAX_HEAD_DIM
from paddle_flashmask.masks.spec import block_count
from tests.random_bounds import BOUND_FORMS, random_bounds

FUZZ_EXAMPLES_ENV = "FLASHMASK_FUZZ_EXAMPLES"
# How the mask reaches the API: random bounds of a form, no bounds (plain
# full/causal attention), or window_size.
MASK_KINDS = ("bounds", "none", "window")


def fuzz_settings(default_examples: int) -> settings:
    """`default_examples` derandomized examples, or FLASHMASK_FUZZ_EXAMPLES random ones."""
    requested = os.environ.get(FUZZ_EXAMPLES_ENV)
    return settings(
        max_examples=int(requested) if requested else default_examples,
        derandomize=not requested,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


@dataclass(frozen=True)
class Case(AttentionDims):
    dtype: str
    causal: bool
    num_bounds: int
    num_mask_heads: int
    mask_kind: str
    window_size: Optional[tuple]
    with_block_mask: bool
    softmax_scale: Optional[float]
    seed: int

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def indices(self, rng: np.random.Generator) -> np.ndarray:
        """int32 [B, Hm, Sk, bounds]: the bounds the call runs with, whatever its mask kind."""
        if self.mask_kind == "none":
            return masks.no_mask_indices(self.causal, self.batch, self.seqlen_q, self.seqlen_k)
        if self.mask_kind == "window":
            return masks.window_size_to_indices(self.window_size, self.causal, self.seqlen_q, self.seqlen_k, self.batch)
        return random_bounds(
            rng, self.batch, self.num_mask_heads, self.seqlen_q, self.seqlen_k, self.num_bounds, self.causal
        )

    def block_mask(self, rng: np.random.Generator, num_mask_heads: int) -> Optional[np.ndarray]:
        if not self.with_block_mask:
            return None
        blocks = (block_count(self.seqlen_q), block_count(self.seqlen_k))
        return rng.integers(0, 2, size=(self.batch, num_mask_heads) + blocks).astype(np.int32)

    def qkv_shapes(self):
        q = (self.batch, self.seqlen_q, self.num_heads, self.head_dim)
        kv = (self.batch, self.seqlen_k, self.num_heads_k, self.head_dim)
        return q, kv, kv


@st.composite
def cases(draw, dtypes, max_seqlen: int, max_work: int) -> Case:
    """Random calls: any bound form or mask kind, GQA/MQA, Sq != Sk, 1/Hk/H mask
    heads, block masks, head_dim 1..256. `max_work` caps B*H*Sq*Sk*D (the
    float64 reference's cost) by shortening the sequences."""
    causal, num_bounds = draw(st.sampled_from(BOUND_FORMS))
    num_heads_k = draw(st.integers(1, 2))
    num_heads = num_heads_k * draw(st.integers(1, 3))
    batch = draw(st.integers(1, 2))
    # Mostly small head dims, the kernels' native ones, and any other up to the largest.
    head_dim = draw(
        st.one_of(st.integers(1, 32), st.sampled_from(COMPILED_HEAD_DIMS), st.integers(33, MAX_HEAD_DIM))
    )
    seqlen_cap = max(1, min(max_seqlen, int((max_work / (batch * num_heads * head_dim)) ** 0.5)))
    seqlen_q = draw(st.integers(1, seqlen_cap))
    seqlen_k = draw(st.one_of(st.just(seqlen_q), st.integers(1, seqlen_cap)))
    mask_kind = draw(st.sampled_from(MASK_KINDS))
    window_size = None
    if mask_kind == "window":
        window_size = (draw(st.integers(0, seqlen_k)), draw(st.integers(0, seqlen_k)))
    # The API takes a block mask only with startend_row_indices.
    with_block_mask = mask_kind == "bounds" and draw(st.booleans())
    return Case(
        batch=batch,
        seqlen_q=seqlen_q,
        seqlen_k=seqlen_k,
        num_heads=num_heads,
        num_heads_k=num_heads_k,
        head_dim=head_dim,
        dtype=draw(st.sampled_from(dtypes)),
        causal=causal,
        num_bounds=num_bounds,
        num_mask_heads=draw(st.sampled_from(sorted({1, num_heads_k, num_heads}))),
        mask_kind=mask_kind,
        window_size=window_size,
        with_block_mask=with_block_mask,
        softmax_scale=draw(st.one_of(st.none(), st.floats(0.05, 2.0))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
