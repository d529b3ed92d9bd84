"""One rank of the CPU test of the torch front end (torch.distributed, gloo), run by
tests/test_distributed.py under `python -m torch.distributed.run`.

The torch binding's kernels are CUDA-only, so here the rank's attention call is a
dense PyTorch reference (tests/gpu/helpers.attention_ref) on both sides: what is
tested is the torch front end itself (sharding, all-gather, bounds rewriting,
autograd, all-reduce of dK/dV on gloo) against one process on the whole sequence.
Writes <out_dir>/rank<r>.json like tests/distributed_worker.py, plus the failures of
a CPU dry run of the 2-GPU test's worker (`gpu_worker_dry_run`).
"""

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

from paddle_flashmask import masks
from paddle_flashmask.distributed import torch_frontend
from tests.distributed_cases import CASE_NAMES, build, shard_errors
from tests.gpu.helpers import attention_ref, dense_allowed


def dense_attention(q, k, v, bounds, causal, softmax_scale=None):
    if isinstance(bounds, torch.Tensor):
        bounds = bounds.numpy()
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    allowed = dense_allowed(torch, bounds, causal, q.shape[1], None, q.shape[2], k.shape[2], q.device)
    return attention_ref(torch, q, k, v, allowed, scale)


class _DenseCollective(torch_frontend._TorchCollective):
    def attention(self, q, k, v, bounds, softmax_scale):
        return dense_attention(q, k, v, bounds, False, softmax_scale)


def _run(attention, tensors, dout, *args, **kwargs):
    tensors = [torch.from_numpy(a).requires_grad_() for a in tensors]
    out, lse = attention(*tensors, *args, **kwargs)
    (out * torch.from_numpy(dout)).sum().backward()
    grads = {n: t.grad.numpy() for n, t in zip(("dq", "dk", "dv"), tensors)}
    return {"out": out.detach().numpy(), "lse": lse.detach().numpy(), **grads}


def _run_case(name, rank, world_size):
    c = build(name, world_size)
    batch, seqlen = c.q.shape[:2]
    bounds = masks.no_mask_indices(c.causal, batch, seqlen, seqlen) if c.bounds is None else c.bounds
    causal = None if isinstance(bounds, masks.MaskSpec) else c.causal
    ref = _run(lambda q, k, v: dense_attention(q, k, v, bounds, causal), (c.q, c.k, c.v), c.dout)
    errors = {}
    for plan in c.plans:
        local = [plan.shard(a, rank) for a in (c.q, c.k, c.v)]
        ours = _run(torch_frontend.flashmask_attention, local, plan.shard(c.dout, rank), c.bounds,
                    plan=plan, causal=c.dist_causal, return_softmax_lse=True)
        errors[plan.name] = shard_errors(ours, ref, plan, rank)
    return {"plans": errors}


def _gpu_worker_dry_run(rank, world_size):
    """tests/gpu/distributed_cuda_worker.py's cases (bf16, every plan) on CPU, with the
    dense stand-in in place of both CUDA calls: its steps and checks, not the kernels.
    Failures per case (empty lists when it passes)."""
    from tests.gpu import distributed_cuda_worker as gpu_worker

    def single(q, k, v, bounds, causal, return_softmax_lse):
        if bounds is None:
            bounds = masks.no_mask_indices(causal, q.shape[0], q.shape[1], k.shape[1])
        return dense_attention(q, k, v, bounds, None if isinstance(bounds, masks.MaskSpec) else causal)

    gpu_worker.flashmask_attention = single
    failures = {}
    for name in CASE_NAMES:
        try:
            failures[name] = gpu_worker._run_case(name, rank, world_size, torch.device("cpu"))["failures"]
        except Exception:
            failures[name] = [traceback.format_exc()[-3000:]]
    return failures


def main(out_dir):
    dist.init_process_group("gloo")
    torch_frontend._TorchCollective = _DenseCollective
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in CASE_NAMES:
        try:
            results[name] = _run_case(name, rank, world_size)
        except Exception:  # reported per case by the test
            results[name] = {"error": traceback.format_exc()[-3000:]}
    results["gpu_worker_dry_run"] = _gpu_worker_dry_run(rank, world_size)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
