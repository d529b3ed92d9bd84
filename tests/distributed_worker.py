"""One rank of the CPU context-parallel tests (run by tests/test_distributed.py
under `python -m paddle.distributed.launch`, gloo).

Every rank builds each case of tests/distributed_cases.py, runs
`paddle_flashmask.distributed.flashmask_attention` on its shard and the
single-process op on the whole sequence, and writes per case the relative
errors of out, lse, dq, dk and dv on its rows (or the error raised) to
<out_dir>/rank<r>.json.
"""

import json
import os
import sys
import traceback

import paddle
import paddle.distributed as dist

from paddle_flashmask import distributed as cp
from paddle_flashmask import flashmask_attention
from tests.distributed_cases import CASE_NAMES, build, shard_errors


def _run(attention, tensors, dout, bounds, **kwargs):
    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in tensors]
    out, lse = attention(*tensors, bounds, return_softmax_lse=True, **kwargs)
    (out * paddle.to_tensor(dout)).sum().backward()
    return {"out": out.numpy(), "lse": lse.numpy(), **{n: t.grad.numpy() for n, t in zip(("dq", "dk", "dv"), tensors)}}


def _run_plan(c, plan, rank, prepared, ref):
    local = [plan.shard(a, rank) for a in (c.q, c.k, c.v)]
    bounds = c.bounds
    if bounds is not None and prepared:
        bounds = cp.prepare_mask(bounds, plan, rank, c.dist_causal)
    ours = _run(cp.flashmask_attention, local, plan.shard(c.dout, rank), bounds, plan=plan, causal=c.dist_causal)
    return shard_errors(ours, ref, plan, rank)


def _run_case(name, rank, world_size):
    c = build(name, world_size)
    ref = _run(flashmask_attention, (c.q, c.k, c.v), c.dout, c.bounds, causal=c.causal)
    prepared = CASE_NAMES.index(name) % 2 == 1  # every other case: the mask prepared once
    return {"plans": {plan.name: _run_plan(c, plan, rank, prepared, ref) for plan in c.plans}}


def main(out_dir):
    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in CASE_NAMES:
        try:
            results[name] = _run_case(name, rank, world_size)
        except Exception:  # reported per case by the test, which fails on it
            results[name] = {"error": traceback.format_exc()[-3000:]}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
