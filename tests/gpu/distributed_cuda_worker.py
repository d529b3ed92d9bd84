"""One rank of the 2-GPU context-parallel test (tests/gpu/test_distributed_cuda.py,
`torch.distributed.run`, NCCL): the torch front end in bfloat16 on the CUDA
kernels, every case of tests/distributed_cases.py, against a float32 dense
reference on the whole sequence, with FlashAttention's rule (tests/tolerance.py:
at most FACTOR times the error of a plain bfloat16 computation). The single-GPU
kernel on the whole sequence is checked by the same rule, and its distance to the
distributed result is reported. Each case runs on each of its plans (its own, then
the planner's other candidates). Writes <out_dir>/rank<r>.json: per case, failures
(empty when it passes) and errors.
"""

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

from paddle_flashmask import distributed as cp
from paddle_flashmask import masks
from paddle_flashmask.torch import flashmask_attention
from tests import tolerance
from tests.distributed_cases import CASE_NAMES, build
from tests.gpu.helpers import assert_close_fa, attention_ref, dense_allowed

DTYPE = torch.bfloat16
HEAD_DIM = 128


def _run(fn, full, dout, dtype, pick):
    """(out, lse, dq, dk, dv) of `fn` on `pick` of the whole sequence's q, k, v, dout."""
    inputs = [pick(t).detach().clone().to(dtype).requires_grad_() for t in full]
    out, lse = fn(*inputs)
    out.backward(pick(dout).to(dtype))
    return [out, lse, *(t.grad for t in inputs)]


def _check(label, results, ref, lowp, floors, pick, failures, errors):
    """FlashAttention's rule on out, dq, dk, dv of `results` (rows `pick` of the references)."""
    for i, key in ((0, "out"), (2, "dq"), (3, "dk"), (4, "dv")):
        try:
            errors[f"{label} {key}"] = assert_close_fa(
                f"{label} {key}", results[i], pick(ref[i], key), pick(lowp[i], key), floor=floors[key])
        except AssertionError as e:
            failures.append(str(e))


def _run_case(name, rank, world_size, device):
    """The case on every plan of `build(name).plans` (its own, then the planner's other
    candidates), and the single-GPU kernel on the whole sequence, against the references."""
    c = build(name, world_size, head_dim=HEAD_DIM)
    batch, seqlen, heads, _ = c.q.shape
    bounds = masks.no_mask_indices(c.causal, batch, seqlen, seqlen) if c.bounds is None else c.bounds
    causal = None if isinstance(bounds, masks.MaskSpec) else c.causal
    allowed = dense_allowed(torch, bounds, causal, seqlen, None, heads, c.k.shape[2], device)
    scale = HEAD_DIM**-0.5
    full = [torch.from_numpy(a).to(device, DTYPE) for a in (c.q, c.k, c.v)]
    dout = torch.from_numpy(c.dout).to(device, DTYPE)
    whole = lambda t: t  # noqa: E731
    single = _run(lambda q, k, v: flashmask_attention(
        q, k, v, c.bounds, causal=c.causal, return_softmax_lse=True), full, dout, DTYPE, whole)
    ref = _run(lambda q, k, v: attention_ref(torch, q, k, v, allowed, scale, upcast=True), full, dout, torch.float32, whole)
    lowp = _run(lambda q, k, v: attention_ref(torch, q, k, v, allowed, scale, upcast=False), full, dout, DTYPE, whole)
    as64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    sizes = tolerance.BackwardTerms(
        *(as64(t) for t in (*full, dout, ref[0])), as64(allowed).astype(bool), as64(ref[1]), scale
    ).term_sizes()
    floors = {"out": 0.0, **{k: tolerance.roundoff_floor(s) for k, s in zip(("dq", "dk", "dv"), sizes)}}
    failures, errors = [], {}
    _check("single-GPU", single, ref, lowp, floors, lambda t, key: t, failures, errors)
    for plan in c.plans:
        def rows(t, key, plan=plan):  # this rank's rows of a full-sequence result
            return plan.shard(t, rank, axis=2 if key == "lse" else 1)

        ours = _run(lambda q, k, v, plan=plan: cp.torch_flashmask_attention(
            q, k, v, c.bounds, plan=plan, causal=c.dist_causal, return_softmax_lse=True),
            full, dout, DTYPE, lambda t, plan=plan: plan.shard(t, rank))
        _check(f"distributed ({plan.name})", ours, ref, lowp, floors, rows, failures, errors)
        for i, key in ((0, "out"), (2, "dq"), (3, "dk"), (4, "dv")):
            errors[f"distributed ({plan.name})-vs-single {key}"] = float(
                (ours[i] - rows(single[i], key)).detach().float().abs().max())
        if not torch.equal(torch.isinf(ours[1]), torch.isinf(rows(ref[1], "lse"))):
            failures.append(f"distributed ({plan.name}) lse: -inf pattern differs from the reference")
    return {"failures": failures, "errors": errors, "plans": [plan.name for plan in c.plans]}


def main(out_dir):
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)  # before NCCL starts
    dist.init_process_group("nccl")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {}
    for name in CASE_NAMES:
        try:
            results[name] = _run_case(name, rank, world_size, device)
        except Exception:  # reported per case by the test
            results[name] = {"failures": [traceback.format_exc()[-3000:]]}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
