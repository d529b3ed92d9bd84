"""One rank of the CPU context-parallel tests (run by tests/test_distributed.py
under `python -m paddle.distributed.launch`, gloo).

Every rank builds the same global q/k/v/bounds from the case's seed, runs
`paddle_flashmask.distributed.flashmask_attention` on its shard and the
single-process op on the whole sequence, and writes per case the largest
relative error of out, lse, dq, dk and dv on its rows (or the error raised) to
<out_dir>/rank<r>.json.
"""

import json
import os
import sys
import traceback
import zlib

import numpy as np
import paddle
import paddle.distributed as dist

from paddle_flashmask import flashmask_attention, masks
from paddle_flashmask import distributed as cp
from tests.random_bounds import BOUND_FORMS, random_bounds

BATCH, HEADS, HEADS_K, HEAD_DIM = 1, 4, 2, 16


def _rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max())))


def _finite_lse(lse):
    return np.where(np.isinf(lse), 0.0, lse)


def _cases():
    """(name, seqlen, batch, mask, causal, plan kind); mask: a MaskSpec, None, or a
    tuple naming generated bounds."""
    cases = []
    for causal, nb in BOUND_FORMS:
        for hm in (1, HEADS_K, HEADS):
            cases.append((f"random-{'causal' if causal else 'noncausal'}-{nb}b-hm{hm}", 61, 1, ("random", nb, hm), causal, "balanced"))
    for causal in (True, False):
        cases.append((f"nomask-{'causal' if causal else 'full'}", 48, 2, None, causal, "balanced"))
    cases += [
        ("causal_document-zigzag", 48, 1, masks.causal_document_mask([[9, 20, 19]]), None, "paddlenlp"),
        ("document-naive", 50, 2, masks.document_mask([[12, 25, 13], [30, 20]]), None, "naive"),
        ("share_question-balanced", 64, 1, masks.share_question_mask([[(10, [6, 8]), (12, [14, 14])]]), None, "balanced"),
        ("sliding_window-uneven", 53, 1, masks.sliding_window_mask(53, 7), None, "uneven"),
        # Rows from 30 on attend to nothing: the last rank's shard is fully masked.
        ("masked-tail-rank", 45, 1, ("masked_tail", 30), False, "naive"),
    ]
    return cases


CASES = _cases()


def _bounds(spec, seqlen, batch, causal, rng):
    if type(spec) is tuple and spec[0] == "random":  # a MaskSpec is a NamedTuple
        return random_bounds(rng, batch, spec[2], seqlen, seqlen, spec[1], causal)
    if type(spec) is tuple and spec[0] == "masked_tail":
        # non-causal 2 bounds: rows >= LTS masked in every column
        return np.stack([np.full((batch, 1, seqlen), spec[1]), np.zeros((batch, 1, seqlen))], -1).astype(np.int32)
    return spec


def _plan(kind, bounds, causal, seqlen, world_size):
    if kind == "paddlenlp":
        return cp.paddlenlp_plan(seqlen, world_size)
    if kind == "naive":
        return cp.naive_plan(seqlen, world_size)
    if kind == "uneven":
        # rank r owns a shard of length ~ (r+1), as two ranges for ranks > 0
        cuts = np.cumsum([0] + [seqlen * (r + 1) // sum(range(1, world_size + 1)) for r in range(world_size)])
        cuts[-1] = seqlen
        ranges = [[(int(cuts[r]), int(cuts[r + 1]))] for r in range(world_size)]
        return cp.from_ranges(ranges, seqlen, "uneven")
    if bounds is None:
        return cp.balanced_plan(masks.causal_mask(seqlen) if causal else masks.full_mask(seqlen), world_size, align=4)
    return cp.balanced_plan(bounds, world_size, causal=causal, align=4)


def _run_case(case, rank, world_size):
    name, seqlen, batch, spec, causal, kind = case
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    q = rng.standard_normal((batch, seqlen, HEADS, HEAD_DIM)).astype(np.float32)
    k = rng.standard_normal((batch, seqlen, HEADS_K, HEAD_DIM)).astype(np.float32)
    v = rng.standard_normal((batch, seqlen, HEADS_K, HEAD_DIM)).astype(np.float32)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    bounds = _bounds(spec, seqlen, batch, causal, rng)
    plan = _plan(kind, bounds, causal, seqlen, world_size)

    full = [paddle.to_tensor(a, stop_gradient=False) for a in (q, k, v)]
    api_causal = bool(causal) if not isinstance(bounds, masks.MaskSpec) else False
    out, lse = flashmask_attention(*full, bounds, causal=api_causal, return_softmax_lse=True)
    (out * paddle.to_tensor(dout)).sum().backward()
    ref = {"out": out.numpy(), "lse": lse.numpy(), "dq": full[0].grad.numpy(), "dk": full[1].grad.numpy(), "dv": full[2].grad.numpy()}

    local = [paddle.to_tensor(plan.shard(a, rank), stop_gradient=False) for a in (q, k, v)]
    d_causal = causal if not isinstance(bounds, masks.MaskSpec) else None
    out_r, lse_r = cp.flashmask_attention(*local, bounds, plan=plan, causal=d_causal, return_softmax_lse=True)
    (out_r * paddle.to_tensor(plan.shard(dout, rank))).sum().backward()
    ours = {"out": out_r.numpy(), "lse": lse_r.numpy(), "dq": local[0].grad.numpy(), "dk": local[1].grad.numpy(), "dv": local[2].grad.numpy()}
    errors = {}
    for key in ours:
        axis = 2 if key == "lse" else 1
        expected = plan.shard(ref[key], rank, axis=axis)
        if key == "lse":
            if not (np.isinf(ours[key]) == np.isinf(expected)).all():
                errors[key] = float("inf")
                continue
            ours[key], expected = _finite_lse(ours[key]), _finite_lse(expected)
        errors[key] = _rel_err(ours[key], expected)
    return {"errors": errors, "plan": plan.name, "ranges": [list(map(list, r)) for r in plan.ranges]}


def main(out_dir):
    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {}
    for case in CASES:
        try:
            results[case[0]] = _run_case(case, rank, world_size)
        except Exception:  # reported per case by the test, which fails on it
            results[case[0]] = {"error": traceback.format_exc()[-3000:]}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
