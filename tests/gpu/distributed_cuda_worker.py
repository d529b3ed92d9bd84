"""One rank of the 2-GPU context-parallel test (tests/gpu/test_distributed_cuda.py,
`torch.distributed.run`, NCCL): the torch front end in bfloat16 on the CUDA
kernels, every case of tests/distributed_cases.py, against a float32 dense
reference on the whole sequence, with FlashAttention's rule (tests/tolerance.py:
at most FACTOR times the error of a plain bfloat16 computation). The single-GPU
kernel on the whole sequence is checked by the same rule, and its distance to the
distributed result is reported. Writes <out_dir>/rank<r>.json: per case, failures
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
from tests.gpu.helpers import attention_ref, dense_allowed

DTYPE = torch.bfloat16
HEAD_DIM = 128


def _run_case(name, rank, world_size, device):
    c = build(name, world_size, head_dim=HEAD_DIM)
    batch, seqlen, heads, _ = c.q.shape
    bounds = masks.no_mask_indices(c.causal, batch, seqlen, seqlen) if c.bounds is None else c.bounds
    causal = None if isinstance(bounds, masks.MaskSpec) else c.causal
    allowed = dense_allowed(torch, bounds, causal, seqlen, None, heads, c.k.shape[2], device)
    scale = HEAD_DIM**-0.5
    full = [torch.from_numpy(a).to(device, DTYPE) for a in (c.q, c.k, c.v, c.dout)]
    dout = full[3]

    def run(fn, dtype, shard):
        """(out, lse, dq, dk, dv) of `fn` on the rank's shard or on the whole sequence."""
        pick = (lambda t: c.plan.shard(t, rank)) if shard else (lambda t: t)
        inputs = [pick(t).detach().clone().to(dtype).requires_grad_() for t in full[:3]]
        out, lse = fn(*inputs)
        out.backward(pick(dout).to(dtype))
        return [out, lse, *(t.grad for t in inputs)]

    ours = run(lambda q, k, v: cp.torch_flashmask_attention(
        q, k, v, c.bounds, plan=c.plan, causal=c.dist_causal, return_softmax_lse=True), DTYPE, True)
    single = run(lambda q, k, v: flashmask_attention(
        q, k, v, c.bounds, causal=c.causal, return_softmax_lse=True), DTYPE, False)
    ref = run(lambda q, k, v: attention_ref(torch, q, k, v, allowed, scale, upcast=True), torch.float32, False)
    lowp = run(lambda q, k, v: attention_ref(torch, q, k, v, allowed, scale, upcast=False), DTYPE, False)

    def rows(t, key):  # this rank's rows of a full-sequence result
        return c.plan.shard(t, rank, axis=2 if key == "lse" else 1)

    as64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    sizes = tolerance.gradient_term_sizes(
        *(as64(t) for t in (*full[:3], dout, ref[0])), as64(allowed).astype(bool), as64(ref[1]), scale
    )
    floors = {"out": 0.0, **{k: tolerance.roundoff_floor(s) for k, s in zip(("dq", "dk", "dv"), sizes)}}
    failures, errors = [], {}
    for i, key in ((0, "out"), (2, "dq"), (3, "dk"), (4, "dv")):
        for label, result, pick in (("distributed", ours[i], lambda t: rows(t, key)), ("single-GPU", single[i], lambda t: t)):
            arrays = (x.detach().float().cpu().numpy() for x in (result, pick(ref[i]), pick(lowp[i])))
            try:
                errors[f"{label} {key}"] = tolerance.assert_close_fa(f"{label} {key}", *arrays, floor=floors[key])
            except AssertionError as e:
                failures.append(str(e))
        errors[f"distributed-vs-single {key}"] = float((ours[i] - rows(single[i], key)).detach().float().abs().max())
    if not torch.equal(torch.isinf(ours[1]), torch.isinf(rows(ref[1], "lse"))):
        failures.append("lse: -inf pattern differs from the reference")
    return {"failures": failures, "errors": errors, "plan": c.plan.name}


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
