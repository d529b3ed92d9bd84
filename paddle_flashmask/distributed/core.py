"""Context-parallel attention, framework-free: the steps, written once for both
front ends against a small `Collective` interface each front end implements.

Forward, on every rank:
  1. key and value shards are joined along heads and all-gathered (one collective),
     padded to the longest shard, and reordered into sequence order (`gather`);
  2. one attention call: the rank's query rows (its chunks in increasing global
     order, as stored) against the keys some of them attend to (`plan.live_key_range`;
     all keys at most), with the global bounds rewritten into the rank's local rows
     (`plan.rank_bounds`, non-causal 4-bound form: global row -> local row is monotone,
     so each column's masked rows stay two intervals).
Backward: the call's own backward gives dQ for the rank's rows and one partial
dK/dV over the key range; `scatter_grad` sums those over ranks and hands each
rank the rows it owns (reduce-scatter, or all-reduce and slice where the backend
has no reduce-scatter: gloo).

No LSE merging is needed: the rank's rows see all the keys they attend to in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from paddle_flashmask import _args, _frontend
from paddle_flashmask.distributed.plan import WHERE, Plan, explicit_bounds, live_key_range, rank_bounds
from paddle_flashmask.masks.spec import MaskSpec

SEQ_AXIS = 1  # q/k/v are [batch, seqlen, heads, head_dim]


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
    return RankLayout(rank, plan.world_size, lengths[rank], max_len, gather_index, scatter_index)


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

    def contiguous(self, x):
        """`x` laid out densely (where the framework has views)."""
        return x

    def device_key(self, x) -> str:
        """Where `x` lives (the key of RankMask's device copies)."""
        raise NotImplementedError

    def to_device(self, array: np.ndarray, like):
        """`array` as a tensor on `like`'s device."""
        raise NotImplementedError

    def attention(self, q, k, v, bounds, softmax_scale: float):
        """Differentiable single-device attention, non-causal, with 4-bound int32 `bounds`
        (a tensor on q's device); returns (out, softmax_lse)."""
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


class RankMask:
    """One rank's mask, prepared once per batch and reused by every layer: the keys its
    rows attend to (`key_range`, a column range outside which every key is masked for
    all of them), the global bounds rewritten for its rows and those keys (`bounds`,
    int32 NumPy [B, Hm, keys, 4], `rank_bounds`), and their copies on each device they
    ran on."""

    def __init__(self, bounds4: np.ndarray, plan: Plan, rank: int):
        self.plan, self.rank = plan, rank
        self.shape = tuple(bounds4.shape)  # [batch, num_mask_heads, seqlen, 4]
        self.layout = rank_layout(plan, rank)
        local = rank_bounds(bounds4, plan.ranges[rank])
        first, last = live_key_range(local, self.layout.local_len)
        self.key_range = (first, last)
        self.bounds = np.ascontiguousarray(local[:, :, first:last])
        self._on_device = {}

    def on_device(self, device_key, convert):
        """The bounds as a tensor on `device_key`; `convert(array)` makes one."""
        if device_key not in self._on_device:
            self._on_device[device_key] = convert(self.bounds)
        return self._on_device[device_key]


def prepare_mask(startend_row_indices, plan: Plan, rank: int, causal: Optional[bool] = None) -> RankMask:
    """`rank`'s part of a global mask (host bounds [B, Hm, seqlen, 1|2|4] with `causal`,
    or a MaskSpec), ready for `flashmask_attention` in place of the bounds: build it once
    per batch when many layers share one mask."""
    if not isinstance(plan, Plan):
        raise TypeError(f"{WHERE}: `plan` must be a paddle_flashmask.distributed.Plan, got {type(plan).__name__}")
    bounds4 = explicit_bounds(startend_row_indices, causal)
    if bounds4.shape[2] != plan.seqlen:
        raise ValueError(
            f"{WHERE}: `startend_row_indices` has seqlen {bounds4.shape[2]}, the plan {plan.seqlen}"
        )
    return RankMask(bounds4, plan, rank)


@dataclass(frozen=True)
class Dist:
    """A checked distributed call."""

    mask: RankMask
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
    """Checks a distributed call: local q/k/v shards against the plan, the global mask
    against the global shapes. `startend_row_indices` is host (NumPy) bounds, a
    MaskSpec, a RankMask, or None (no mask beyond `causal`)."""
    if not isinstance(plan, Plan):
        raise TypeError(f"{WHERE}: `plan` must be a paddle_flashmask.distributed.Plan, got {type(plan).__name__}")
    if plan.world_size != world_size:
        raise ValueError(f"{WHERE}: `plan` is for {plan.world_size} ranks, the process group has {world_size}")
    local_len = plan.shard_lengths()[rank]
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        if len(shape) != 4 or int(shape[SEQ_AXIS]) != local_len:
            raise ValueError(
                f"{WHERE}: `{name}` must be rank {rank}'s shard [batch, {local_len}, heads, head_dim] "
                f"of the plan, got shape {list(shape)}"
            )
    global_shape = lambda s: (s[0], plan.seqlen, s[2], s[3])  # noqa: E731
    dims = _frontend.check_shapes(global_shape(q_shape), global_shape(k_shape), global_shape(v_shape))
    mask = startend_row_indices
    if isinstance(mask, RankMask):
        if mask.plan != plan or mask.rank != rank:
            raise ValueError(f"{WHERE}: `startend_row_indices` was prepared for another plan or rank than `plan`, rank {rank}")
    else:
        if mask is None:
            causal = _args.boolean(causal, "causal", WHERE)
            mask = _frontend.builders.no_mask_indices(causal, dims.batch, plan.seqlen, plan.seqlen)
        mask = prepare_mask(mask, plan, rank, causal)
    _frontend.check_mask_shapes(dims, False, mask.shape)
    softmax_scale = _frontend.check_softmax_scale(softmax_scale, dims.head_dim, WHERE)
    return Dist(mask, softmax_scale, dims.num_heads_k)


def rank_attention(fx: Collective, gather_kv, q, k, v, call: Dist):
    """The rank's (out, softmax_lse) in its token order, from one attention call;
    `gather_kv(kv, layout)` is the front end's differentiable `gather` (k and v joined
    along heads)."""
    hk, mask = call.num_heads_k, call.mask
    kv = gather_kv(fx.concat([k, v], 2), mask.layout)
    first, last = mask.key_range
    if (first, last) != (0, mask.plan.seqlen):  # a slice's backward costs a whole-sequence copy
        kv = kv[:, first:last]
    k_live, v_live = fx.contiguous(kv[:, :, :hk]), fx.contiguous(kv[:, :, hk:])
    bounds = mask.on_device(fx.device_key(q), lambda array: fx.to_device(array, q))
    return fx.attention(q, k_live, v_live, bounds, call.softmax_scale)


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
    elif not (bounds is None or isinstance(bounds, (np.ndarray, MaskSpec, RankMask))):
        raise TypeError(
            f"{WHERE}: `startend_row_indices` must be a {front.tensor_type.__name__}, numpy.ndarray, MaskSpec "
            f"or RankMask, got {type(bounds).__name__}"
        )
    if causal is None and not isinstance(bounds, MaskSpec):
        causal = False
    call = check_call(
        tuple(query.shape), tuple(key.shape), tuple(value.shape), bounds, causal, plan, rank, world_size,
        softmax_scale,
    )
    out, lse = rank_attention(fx, lambda x, layout: front.gather_apply(x, fx, layout), query, key, value, call)
    return (out, lse) if return_softmax_lse else out
