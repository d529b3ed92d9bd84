"""Context-parallel FlashMask attention for Paddle (`paddle.distributed`)."""

from __future__ import annotations

import paddle
import paddle.distributed as dist
from paddle.autograd import PyLayer

from paddle_flashmask.distributed import core
from paddle_flashmask.distributed.plan import Plan


class PaddleCollective(core.Collective):
    def __init__(self, group):
        self.group = group

    def all_gather(self, x):
        shards = []
        dist.all_gather(shards, x.contiguous(), group=self.group)
        return shards

    def sum_scatter(self, x, layout):
        x = x.contiguous()
        if x.place.is_gpu_place():
            # Each rank's rows as its own dense tensor (NCCL reads them as flat buffers).
            parts = [part.contiguous() for part in paddle.split(x, layout.world_size, axis=core.SEQ_AXIS)]
            mine = paddle.empty_like(parts[layout.rank])
            dist.reduce_scatter(mine, parts, group=self.group)
            return mine
        # ProcessGroupGloo has no reduce_scatter (Paddle 3.3): all-reduce and keep our rows.
        dist.all_reduce(x, group=self.group)
        return x[:, layout.rank * layout.max_len : (layout.rank + 1) * layout.max_len]

    def pad_rows(self, x, length):
        missing = length - x.shape[core.SEQ_AXIS]
        if missing == 0:
            return x
        zeros = paddle.zeros([x.shape[0], missing, *x.shape[2:]], dtype=x.dtype)
        return paddle.concat([x, zeros], axis=core.SEQ_AXIS)

    def take_rows(self, x, index):
        return paddle.index_select(x, paddle.to_tensor(index, place=x.place), axis=core.SEQ_AXIS)

    def concat(self, parts, axis):
        return paddle.concat(list(parts), axis=axis)

    def contiguous(self, x):
        return x.contiguous()

    def device_key(self, x):
        return str(x.place)

    def to_device(self, array, like):
        return paddle.to_tensor(array, place=like.place)

    def attention(self, q, k, v, bounds, softmax_scale):
        from paddle_flashmask.api import flashmask_attention

        return flashmask_attention(
            q, k, v, bounds, causal=False,
            softmax_scale=softmax_scale, return_softmax_lse=True,
        )


class _GatherSequence(PyLayer):
    """All-gather along the sequence; the backward sums and returns each rank's rows."""

    @staticmethod
    def forward(ctx, x, fx, layout):
        ctx.fx, ctx.layout = fx, layout
        return core.gather(fx, x, layout)

    @staticmethod
    def backward(ctx, grad):
        return core.scatter_grad(ctx.fx, grad, ctx.layout)


_FRONT_END = core.FrontEnd(paddle.Tensor, lambda t: t.numpy(), _GatherSequence.apply)


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
    """Context-parallel FlashMask attention on this rank's shard of the sequence.

    query/key/value: this rank's tokens, [batch, n_rank, heads, head_dim], in the
    order `plan.shard(x, rank)` gives (n_rank = plan.shard_lengths()[rank]).
    startend_row_indices: the GLOBAL bounds [batch, Hm, seqlen, 1|2|4] (every rank
    passes the same), a MaskSpec, or None; `causal` as in
    `paddle_flashmask.flashmask_attention` (taken from a MaskSpec when None).
    group: the process group (default: the global one); gradients flow to query, key
    and value. Returns out (like query) and, if asked, softmax_lse [batch, heads, n_rank].
    """
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if group is None else (group.rank, group.nranks)
    return core.flashmask_attention(
        _FRONT_END, PaddleCollective(group), rank, world_size, query, key, value, startend_row_indices,
        plan=plan, causal=causal, softmax_scale=softmax_scale, return_softmax_lse=return_softmax_lse,
    )
