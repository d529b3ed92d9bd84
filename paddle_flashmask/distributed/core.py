"""Context-parallel attention, framework-free: the steps, written once for both
front ends against a small `Collective` interface each front end implements.

Forward, on every rank:
  1. key and value shards are joined along heads and all-gathered (one collective),
     padded to the longest shard, and reordered into sequence order (`gather`);
  2. for each chunk of the rank's query rows, one attention call over all keys with
     the global bounds rewritten for those rows (`plan.shard_bounds`, non-causal
     4-bound form); outputs and LSEs are concatenated in the rank's token order.
Backward: the attention calls' own backward gives dQ for the rank's rows and a
partial dK/dV over the whole sequence; `scatter_grad` sums those partials over
ranks and hands each rank the rows it owns (reduce-scatter, or all-reduce and
slice where the backend has no reduce-scatter: gloo).

No LSE merging is needed: every chunk sees all keys in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from paddle_flashmask import _frontend
from paddle_flashmask.distributed.plan import WHERE, Plan, explicit_bounds, shard_bounds
from paddle_flashmask.masks.spec import MaskSpec

SEQ_AXIS = 1  # q/k/v are [batch, seqlen, heads, head_dim]
LSE_SEQ_AXIS = 2  # softmax_lse is [batch, heads, seqlen]


@dataclass(frozen=True)
class RankLayout:
    """What one rank needs from a plan, as index arrays (all NumPy)."""

    rank: int
    world_size: int
    local_len: int
    max_len: int  # all-gather pads every shard to this many tokens
    # Sequence position p of the gathered keys is row gather_index[p] of the
    # rank-order concatenation of padded shards.
    gather_index: np.ndarray
    # Row i of that concatenation holds sequence position scatter_index[i];
    # padding rows point at `seqlen` (a zero row appended for the backward).
    scatter_index: np.ndarray
    # (offset in the rank's tokens, global start, global stop) per chunk.
    chunks: Tuple[Tuple[int, int, int], ...]


def rank_layout(plan: Plan, rank: int) -> RankLayout:
    if not 0 <= rank < plan.world_size:
        raise ValueError(f"{WHERE}: rank {rank} is outside the plan's {plan.world_size} ranks")
    lengths = plan.shard_lengths()
    max_len = max(lengths)
    scatter_index = np.full(plan.world_size * max_len, plan.seqlen, dtype=np.int64)
    for r in range(plan.world_size):
        scatter_index[r * max_len : r * max_len + lengths[r]] = plan.positions(r)
    gather_index = np.empty(plan.seqlen, dtype=np.int64)
    real = scatter_index < plan.seqlen
    gather_index[scatter_index[real]] = np.nonzero(real)[0]
    chunks, offset = [], 0
    for start, stop in plan.ranges[rank]:
        chunks.append((offset, start, stop))
        offset += stop - start
    return RankLayout(rank, plan.world_size, lengths[rank], max_len, gather_index, scatter_index, tuple(chunks))


class Collective:
    """The few tensor operations the steps need; a front end implements them for
    its framework and process group. Tensors are the framework's; indices NumPy."""

    def all_gather(self, x) -> List[Any]:
        raise NotImplementedError

    def sum_scatter(self, x, layout: RankLayout):
        """Sum `x` [B, R*max_len, ...] over ranks and return this rank's [B, max_len, ...] slice."""
        raise NotImplementedError

    def pad_rows(self, x, length: int):
        """`x` [B, n, ...] with zero rows appended along the sequence up to `length`."""
        raise NotImplementedError

    def take_rows(self, x, index: np.ndarray):
        """x[:, index]."""
        raise NotImplementedError

    def concat(self, parts: Sequence[Any], axis: int):
        raise NotImplementedError

    def attention(self, q, k, v, bounds: np.ndarray, softmax_scale: float):
        """Differentiable single-device attention, non-causal, 4-bound int32 `bounds`;
        returns (out, softmax_lse)."""
        raise NotImplementedError


def gather(fx: Collective, x, layout: RankLayout):
    """Forward of the sequence all-gather: [B, local_len, ...] -> [B, seqlen, ...] in sequence order."""
    shards = fx.all_gather(fx.pad_rows(x, layout.max_len))
    return fx.take_rows(fx.concat(shards, SEQ_AXIS), layout.gather_index)


def scatter_grad(fx: Collective, grad, layout: RankLayout):
    """Backward of `gather`: [B, seqlen, ...] partial gradients -> [B, local_len, ...] summed over ranks."""
    seqlen = len(layout.gather_index)
    rank_ordered = fx.take_rows(fx.pad_rows(grad, seqlen + 1), layout.scatter_index)
    return fx.sum_scatter(rank_ordered, layout)[:, : layout.local_len]


@dataclass(frozen=True)
class Dist:
    """A checked distributed call: global bounds in 4-bound form, the rank's layout."""

    bounds4: np.ndarray
    layout: RankLayout
    softmax_scale: float
    num_heads_k: int


def check_call(
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    v_shape: Sequence[int],
    startend_row_indices,
    causal,
    plan: Plan,
    rank: int,
    world_size: int,
    softmax_scale: Optional[float],
) -> Dist:
    """Checks a distributed call: local q/k/v shards against the plan, global bounds
    against the global shapes. `startend_row_indices` is host (NumPy) bounds, a
    MaskSpec, or None (no mask beyond `causal`)."""
    if not isinstance(plan, Plan):
        raise TypeError(f"{WHERE}: `plan` must be a paddle_flashmask.distributed.Plan, got {type(plan).__name__}")
    if plan.world_size != world_size:
        raise ValueError(f"{WHERE}: `plan` is for {plan.world_size} ranks, the process group has {world_size}")
    layout = rank_layout(plan, rank)
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        if len(shape) != 4 or int(shape[SEQ_AXIS]) != layout.local_len:
            raise ValueError(
                f"{WHERE}: `{name}` must be rank {rank}'s shard [batch, {layout.local_len}, heads, head_dim] "
                f"of the plan, got shape {list(shape)}"
            )
    global_shape = lambda s: (s[0], plan.seqlen, s[2], s[3])  # noqa: E731
    dims = _frontend.check_shapes(global_shape(q_shape), global_shape(k_shape), global_shape(v_shape))
    if startend_row_indices is None:
        causal = bool(causal)
        startend_row_indices = _frontend.builders.no_mask_indices(causal, dims.batch, plan.seqlen, plan.seqlen)
    bounds4 = explicit_bounds(startend_row_indices, causal)
    _frontend.check_mask_shapes(dims, False, bounds4.shape)
    if softmax_scale is None:
        softmax_scale = dims.head_dim**-0.5
    elif not float(softmax_scale) > 0.0:
        raise ValueError(f"{WHERE}: `softmax_scale` must be > 0, got {softmax_scale}")
    return Dist(bounds4, layout, float(softmax_scale), dims.num_heads_k)


def _attention(fx: Collective, gather_kv, q, k, v, call: Dist):
    hk = call.num_heads_k
    kv = gather_kv(fx.concat([k, v], 2), call.layout)
    k_all, v_all = kv[:, :, :hk], kv[:, :, hk:]
    outs, lses = [], []
    for offset, start, stop in call.layout.chunks:
        q_chunk = q[:, offset : offset + stop - start]
        out, lse = fx.attention(q_chunk, k_all, v_all, shard_bounds(call.bounds4, start, stop), call.softmax_scale)
        outs.append(out)
        lses.append(lse)
    if len(outs) == 1:
        return outs[0], lses[0]
    return fx.concat(outs, SEQ_AXIS), fx.concat(lses, LSE_SEQ_AXIS)


@dataclass(frozen=True)
class FrontEnd:
    """How the core sees one framework's front end."""

    tensor_type: type
    to_host: Callable[[Any], np.ndarray]  # a bounds tensor -> NumPy
    # the differentiable all-gather: (x, fx, layout) -> gathered x (calls `gather`,
    # and `scatter_grad` in its backward)
    gather_apply: Callable[[Any, Collective, RankLayout], Any]


def flashmask_attention(
    front: FrontEnd, fx: Collective, rank: int, world_size: int, query, key, value, startend_row_indices,
    *, plan, causal, softmax_scale, return_softmax_lse,
):
    """The distributed call of both front ends (their docstrings give the arguments)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, front.tensor_type):
            raise TypeError(f"{WHERE}: `{name}` must be a {front.tensor_type.__name__}, got {type(t).__name__}")
    bounds = startend_row_indices
    if isinstance(bounds, front.tensor_type):
        bounds = front.to_host(bounds)
    elif not (bounds is None or isinstance(bounds, (np.ndarray, MaskSpec))):
        raise TypeError(
            f"{WHERE}: `startend_row_indices` must be a {front.tensor_type.__name__}, numpy.ndarray or MaskSpec, "
            f"got {type(bounds).__name__}"
        )
    if causal is None and not isinstance(bounds, MaskSpec):
        causal = False
    call = check_call(
        tuple(query.shape), tuple(key.shape), tuple(value.shape), bounds, causal, plan, rank, world_size,
        softmax_scale,
    )
    out, lse = _attention(fx, lambda x, layout: front.gather_apply(x, fx, layout), query, key, value, call)
    return (out, lse) if return_softmax_lse else out
