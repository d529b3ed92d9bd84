"""Context-parallel FlashMask attention for PyTorch (`torch.distributed`, CUDA tensors, NCCL)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from paddle_flashmask.distributed import core
from paddle_flashmask.distributed.plan import Plan


class _TorchCollective(core.Collective):
    def __init__(self, group):
        self.group = group

    def all_gather(self, x):
        x = x.contiguous()
        shards = [torch.empty_like(x) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(shards, x, group=self.group)
        return shards

    def sum_scatter(self, x, layout):
        # reduce_scatter_tensor splits dim 0: put the sequence first.
        rows_first = x.transpose(0, core.SEQ_AXIS).contiguous()
        if dist.get_backend(self.group) == dist.Backend.GLOO:  # gloo has no reduce-scatter
            dist.all_reduce(rows_first, group=self.group)
            mine = rows_first[layout.rank * layout.max_len : (layout.rank + 1) * layout.max_len]
        else:
            mine = torch.empty_like(rows_first[: layout.max_len])
            dist.reduce_scatter_tensor(mine, rows_first, group=self.group)
        return mine.transpose(0, core.SEQ_AXIS)

    def pad_rows(self, x, length):
        missing = length - x.shape[core.SEQ_AXIS]
        if missing == 0:
            return x
        zeros = x.new_zeros((x.shape[0], missing, *x.shape[2:]))
        return torch.cat([x, zeros], dim=core.SEQ_AXIS)

    def take_rows(self, x, index):
        return x.index_select(core.SEQ_AXIS, torch.from_numpy(index).to(x.device))

    def concat(self, parts, axis):
        return torch.cat(list(parts), dim=axis)

    def contiguous(self, x):
        return x.contiguous()

    def device_key(self, x):
        return str(x.device)

    def to_device(self, array, like):
        return torch.from_numpy(array).to(like.device)

    def attention(self, q, k, v, bounds, softmax_scale):
        from paddle_flashmask.torch import flashmask_attention

        return flashmask_attention(
            q, k, v, bounds, causal=False,
            softmax_scale=softmax_scale, return_softmax_lse=True,
        )


class _GatherSequence(torch.autograd.Function):
    """All-gather along the sequence; the backward sums and returns each rank's rows."""

    @staticmethod
    def forward(ctx, x, fx, layout):
        ctx.fx, ctx.layout = fx, layout
        return core.gather(fx, x, layout)

    @staticmethod
    def backward(ctx, grad):
        return core.scatter_grad(ctx.fx, grad.contiguous(), ctx.layout), None, None


_FRONT_END = core.FrontEnd(torch.Tensor, lambda t: t.detach().cpu().numpy(), _GatherSequence.apply)


def flashmask_attention(
    query,
    key,
    value,
    startend_row_indices=None,
    *,
    plan: Plan,
    causal=None,
    softmax_scale=None,
    return_softmax_lse: bool = False,
    group=None,
):
    """The torch twin of `paddle_flashmask.distributed.flashmask_attention` (same
    arguments; `group` a torch.distributed process group, default the global one).
    query/key/value are CUDA tensors: the attention runs on the torch binding."""
    return core.flashmask_attention(
        _FRONT_END, _TorchCollective(group), dist.get_rank(group), dist.get_world_size(group), query, key, value,
        startend_row_indices, plan=plan, causal=causal, softmax_scale=softmax_scale,
        return_softmax_lse=return_softmax_lse,
    )
