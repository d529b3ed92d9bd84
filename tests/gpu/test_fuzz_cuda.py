"""GPU fuzz test: the CPU property test's random calls (tests/strategies.py), in
float16/bfloat16 through the torch binding on CUDA, forward, LSE and gradients
judged by FlashAttention's rule against an fp32 reference (tests/gpu/helpers.py),
with float32's roundoff of the summed terms allowed where gradients are sums of
cancelling terms (a lone key's dK is exactly zero: its residue is pure rounding).

FLASHMASK_FUZZ_EXAMPLES=5000 for a longer random search.
"""

import pytest
from hypothesis import given

from tests.strategies import cases, fuzz_settings

torch = pytest.importorskip("torch")

from tests.gpu.test_flashmask_cuda import _run_case  # noqa: E402 - needs torch

GPU_DTYPES = ("float16", "bfloat16")
DEFAULT_EXAMPLES = 200
MAX_SEQLEN = 700  # several 128-row tiles and block-mask blocks, ragged ends
MAX_WORK = 200_000_000  # B*H*Sq*Sk*D of one example: the fp32 reference stays cheap


@given(cases(GPU_DTYPES, max_seqlen=MAX_SEQLEN, max_work=MAX_WORK))
@fuzz_settings(DEFAULT_EXAMPLES)
def test_cuda_against_fp32_reference(case):
    rng = case.rng()
    idx = case.indices(rng)
    _run_case(
        idx,
        case.causal,
        batch=case.batch,
        seqlen_q=case.seqlen_q,
        seqlen_k=case.seqlen_k,
        heads=case.num_heads,
        heads_k=case.num_heads_k,
        head_dim=case.head_dim,
        dtype=getattr(torch, case.dtype),
        scale=case.softmax_scale,
        block_mask=case.block_mask(rng, idx.shape[1]),
        seed=case.seed,
        roundoff_floor=True,
        # A call without a mask and a window_size call go through the API as such (the
        # mask-less tiles, the host-built window bounds); idx is what they mean.
        pass_indices=case.mask_kind == "bounds",
        window_size=case.window_size,
    )
