"""Small fwd+bwd cases for compute-sanitizer (memcheck, racecheck):

    compute-sanitizer --tool memcheck  --error-exitcode 1 python tests/gpu/sanitize_cases.py
    compute-sanitizer --tool racecheck --kernel-name kns=flashmask --error-exitcode 1 python tests/gpu/sanitize_cases.py

Covers every kernel (fwd, the D=128 forward's mask-less 176-key tiles, dkdv with/without
atomics, dq, the head_dim-256 split, the padded-head-dim copies), partial/odd tiles, GQA,
per-head masks, block masks, fully masked rows and query blocks, more persistent forward
work items than SMs, and each of the D=64 forward's row shifts.
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
# Run as a script, outside pytest's conftest: poison the outputs here too, so that an element a
# kernel never writes is NaN and fails the checks below instead of holding whatever was there.
os.environ.setdefault("FLASHMASK_POISON", "1")

from paddle_flashmask import masks  # noqa: E402
from paddle_flashmask.torch import flashmask_attention  # noqa: E402
from paddle_flashmask.masks.spec import block_count  # noqa: E402
from tests.random_bounds import random_bounds  # noqa: E402


def case(b, sq, sk, h, hk, d, causal, nb, hm, dtype, deterministic, block_mask=False, seed=0, idx=None,
         no_mask=False):
    os.environ["FLASHMASK_DETERMINISTIC"] = "1" if deterministic else "0"
    rng = np.random.default_rng(seed)
    if idx is None:
        idx = random_bounds(rng, b, hm, sq, sk, nb, causal)
    bm = None
    if block_mask:
        bm = (rng.random((b, hm, block_count(sq), block_count(sk))) < 0.7).astype(np.int32)
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dtype, requires_grad=True)
    k = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype, requires_grad=True)
    v = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype, requires_grad=True)
    out, lse = flashmask_attention(q, k, v, None if no_mask else idx, causal=causal, block_mask=bm,
                                   return_softmax_lse=True)
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    for name, t in (("out", out), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        if torch.isnan(t).any():
            raise SystemExit(f"NaN in {name} for case {(b, sq, sk, h, hk, d, causal, nb, hm)}")
    if torch.isnan(lse).any():
        raise SystemExit("NaN in lse")


def main():
    bf, fp = torch.bfloat16, torch.float16
    case(1, 129, 129, 2, 1, 64, True, 1, 1, bf, False)
    case(2, 200, 77, 4, 2, 128, False, 4, 4, fp, False, block_mask=True)
    case(1, 77, 200, 2, 2, 128, True, 2, 2, bf, True)
    case(1, 130, 130, 2, 1, 256, False, 2, 1, bf, False)
    case(1, 65, 190, 2, 2, 256, True, 1, 2, fp, True)
    case(2, 200, 333, 4, 2, 256, True, 2, 4, fp, False)
    case(1, 257, 257, 2, 2, 64, False, 4, 1, fp, True, block_mask=True)
    # More forward items (query blocks x heads) than SMs: several per persistent CTA.
    case(2, 1700, 1700, 5, 1, 64, True, 2, 5, bf, False, block_mask=True)
    # No mask, non-causal, D=128: the forward's 176-key tiles (a partial last one: 1000 keys),
    # 140 items on 132 SMs.
    case(2, 1700, 1000, 5, 1, 128, False, 2, 1, bf, False, no_mask=True)
    # Whole query blocks that see no key (rows [128, 448)) between blocks that do: the forward's
    # items without key tiles, which take a Q buffer without a load where the output is staged in it.
    hidden = np.zeros((1, 1, 700, 4), np.int32)
    hidden[..., 0], hidden[..., 1] = 128, 448
    case(1, 700, 700, 2, 2, 128, False, 4, 1, bf, False, idx=hidden)
    case(1, 700, 700, 3, 3, 64, False, 4, 1, fp, False, idx=hidden)
    # The D=64 forward's row shift chosen per call: global rows ending on each candidate's block
    # edge (4000 rows: shifts 32, 96 and 160; tests/test_tile_cost_fit.py counts the choice). The
    # second and third have a ragged block at both ends; the first leaves the last of the 22
    # blocks that every candidate's rows fit in past row 3999 (an item without rows).
    for global_tokens in (352, 288, 224):
        gsw = masks.global_sliding_window_mask(4000, global_tokens, 64).startend_row_indices
        case(1, 4000, 4000, 2, 1, 64, False, 4, 1, bf, False, idx=gsw)
    # Head dims without compiled kernels: padded copies in the workspace (padded_head_dim.cu).
    case(1, 150, 190, 4, 2, 96, True, 1, 2, bf, False)
    case(1, 190, 150, 2, 1, 40, False, 4, 1, fp, True)
    print("sanitize cases done")


if __name__ == "__main__":
    main()
