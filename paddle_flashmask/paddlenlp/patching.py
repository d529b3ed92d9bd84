"""Route PaddleNLP's Llama and Qwen2 attention to paddle_flashmask's op.

PaddleNLP's attention layers call `self.attn_func(query, config, key, value,
attention_mask, output_attentions, ..., attn_mask_startend_row_indices=...)`,
where `attn_func` is the modeling module's `scaled_dot_product_attention`,
captured when the layer is built. With startend_row_indices that function
needs Paddle's GPU-only flashmask kernel (`use_flash_attention=True`) and
otherwise silently falls back to a plain causal mask.

`apply()` installs a data descriptor named `attn_func` on the attention
classes: every read of `layer.attn_func` (for layers built before or after
apply()) returns a function that sends calls carrying
`attn_mask_startend_row_indices` to `paddle_flashmask.flashmask_attention`
and every other call to PaddleNLP's own function. The layers themselves are
never modified, so `revert()` (removing the descriptors) restores PaddleNLP
exactly. No dense mask is built: PaddleNLP skips building one whenever
startend_row_indices are given.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import warnings

import paddle

from paddle_flashmask import _args

# The test suite passes on PaddleNLP 3.0.0b3 and 3.0.0b4. In 3.0.0b2 Qwen2
# models do not take attn_mask_startend_row_indices yet.
MIN_PADDLENLP_VERSION = "3.0.0b3"
# (modeling module, attention class) pairs whose layers are routed.
_ATTENTION_CLASSES = (
    ("paddlenlp.transformers.llama.modeling", "LlamaAttention"),
    ("paddlenlp.transformers.qwen2.modeling", "Qwen2Attention"),
)


_INDICES_ARG = "attn_mask_startend_row_indices"
_INDEX_DTYPES = (paddle.int32, paddle.int64)
_INDEX_RANKS = (2, 3, 4)  # [B, S], [B, Hm, S], or already the op's [B, Hm, S, bounds]


def _startend_row_indices(indices: paddle.Tensor) -> paddle.Tensor:
    """PaddleNLP's [B, S] or [B, Hm, S] (one bound per column) -> the op's [B, Hm, S, bounds]."""
    where = "paddle_flashmask.paddlenlp"
    if not isinstance(indices, paddle.Tensor):
        raise TypeError(f"{where}: `{_INDICES_ARG}` must be a paddle.Tensor, got {_args.describe(indices)}")
    if indices.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{where}: `{_INDICES_ARG}` dtype must be int32 or int64, got {indices.dtype}")
    if indices.ndim not in _INDEX_RANKS:
        raise ValueError(
            f"{where}: `{_INDICES_ARG}` must be [batch, seqlen] or [batch, num_mask_heads, seqlen], "
            f"got shape {list(indices.shape)}"
        )
    if indices.ndim == 2:
        indices = indices.unsqueeze(1)
    if indices.ndim == 3:
        indices = indices.unsqueeze(-1)
    return indices if indices.dtype == paddle.int32 else indices.astype("int32")


def _hybrid_group():
    """fleet's hybrid communicate group, or None before fleet.init."""
    from paddle.distributed import fleet

    return getattr(fleet.fleet, "_hcg", None)


def _sep_group():
    """PaddleNLP's context/segment parallel group (fleet's hybrid `sep` group)."""
    hcg = _hybrid_group()
    if hcg is None:
        raise RuntimeError(
            "paddle_flashmask.paddlenlp: context_parallel_degree > 1 needs fleet's hybrid parallel set-up "
            "(fleet.init with sep_degree; PaddleNLP's Trainer does it)"
        )
    return hcg.get_sep_parallel_group()


def _check_not_split(config) -> None:
    """A sep group of several ranks with neither context parallelism in the model's
    config nor a reshard layer: each rank would attend within its shard alone."""
    hcg = _hybrid_group()
    ranks = hcg.get_sep_parallel_world_size() if hcg is not None else 1
    if ranks > 1:
        raise ValueError(
            f"paddle_flashmask.paddlenlp: the sequence is split over a sep group of {ranks} ranks but the "
            f"model's config has context_parallel_degree={getattr(config, 'context_parallel_degree', 1)} and "
            "sep_parallel_degree <= 1: set config.context_parallel_degree (PaddleNLP's Trainer does not) so "
            "that attention sees the whole sequence"
        )


def _global_indices(indices: paddle.Tensor, plan, group) -> paddle.Tensor:
    """The op's [B, Hm, S, bounds] for the whole sequence: as given, or gathered from the
    ranks when PaddleNLP's Trainer split them along the sequence like the tokens
    (`plan` says how)."""
    if indices.shape[2] == plan.seqlen:
        return indices
    from paddle_flashmask.distributed import core, paddle_frontend

    rank = group.rank
    layout = core.rank_layout(plan, rank)
    if indices.shape[2] != layout.local_len:
        raise ValueError(
            f"paddle_flashmask.paddlenlp: `{_INDICES_ARG}` covers {indices.shape[2]} positions; expected the whole "
            f"sequence ({plan.seqlen}) or this rank's shard ({layout.local_len})"
        )
    by_position = indices.transpose([0, 2, 1, 3])  # the sequence on axis 1, as core.gather takes it
    gathered = core.gather(paddle_frontend.PaddleCollective(group), by_position, layout)
    return gathered.transpose([0, 2, 1, 3])


# The last batch's prepared context-parallel mask: (indices tensor as PaddleNLP passed
# it, plan, RankMask). Every layer of a step gets the same tensor, so the bounds are
# gathered and rewritten once per step rather than once per layer.
_last_prepared_mask = [None]


def _context_parallel_attention(query, key, value, raw_indices):
    """PaddleNLP context parallelism: every rank holds its load-balanced shard
    (chunks r and 2R-1-r of 2R, `split_inputs_sequence_dim_load_balance`)."""
    from paddle_flashmask import distributed as cp

    group = _sep_group()
    plan = cp.paddlenlp_plan(query.shape[1] * group.nranks, group.nranks)
    cached = _last_prepared_mask[0]
    if cached is not None and cached[0] is raw_indices and cached[1] == plan:
        mask = cached[2]
    else:
        indices = _global_indices(_startend_row_indices(raw_indices), plan, group)
        mask = cp.prepare_mask(indices.numpy(), plan, group.rank, causal=True)
        _last_prepared_mask[0] = (raw_indices, plan, mask)
    return cp.flashmask_attention(query, key, value, mask, plan=plan, group=group)


def _segment_parallel_attention(query, key, value, indices, reshard_layer, dropout, training):
    """PaddleNLP sep: q/k/v arrive resharded to the whole sequence and 1/R of the heads;
    the output goes back to the rank's contiguous sequence shard and all heads."""
    from paddle_flashmask import distributed as cp
    from paddle_flashmask import flashmask_attention

    group = reshard_layer.sep_group
    plan = cp.naive_plan(query.shape[1], group.nranks)  # `split_inputs_sequence_dim`: R equal contiguous parts
    indices = _global_indices(indices, plan, group)
    out = flashmask_attention(
        query, key, value, startend_row_indices=indices, causal=True, dropout=dropout, training=training
    )
    return reshard_layer(out, split_axis=1, concat_axis=2)


def _flashmask_attention(call: inspect.BoundArguments):
    """PaddleNLP's attention contract, computed by our op (by the distributed
    attention under context parallelism)."""
    from paddle_flashmask import flashmask_attention

    args = call.arguments
    config = args["config"]
    if args.get("alibi") is not None:
        raise ValueError("paddle_flashmask: FlashMask does not support alibi (PaddleNLP does not either)")
    query, key, value = args["query_states"], args["key_states"], args["value_states"]
    raw_indices = args["attn_mask_startend_row_indices"]
    # Only Qwen2's attention applies attention dropout (it is the one passing `training`).
    training = args.get("training", True)
    dropout = getattr(config, "attention_dropout", 0.0) if "training" in args else 0.0
    reshard_layer = args.get("reshard_layer")
    if getattr(config, "context_parallel_degree", 1) > 1:
        if dropout > 0.0 and training:
            raise NotImplementedError(
                f"paddle_flashmask: attention dropout ({dropout}) is not implemented under context parallelism"
            )
        out = _context_parallel_attention(query, key, value, raw_indices)
    elif reshard_layer is not None:
        indices = _startend_row_indices(raw_indices)
        out = _segment_parallel_attention(query, key, value, indices, reshard_layer, dropout, training)
    else:
        _check_not_split(config)
        # PaddleNLP's startend_row_indices are always meant for a causal mask
        out = flashmask_attention(
            query, key, value, startend_row_indices=_startend_row_indices(raw_indices), causal=True,
            dropout=dropout, training=training,
        )
    batch, seqlen, num_heads, head_dim = out.shape
    if args.get("sequence_parallel"):
        out = out.reshape([batch * seqlen, num_heads * head_dim])
    else:
        out = out.reshape([batch, seqlen, num_heads * head_dim])
    # Like PaddleNLP's flash path: attention weights are never materialised.
    return (out, None) if args["output_attentions"] else out


def _routed(attn_func):
    """`attn_func` (PaddleNLP's function, or a functools.partial of it) with
    FlashMask calls sent to our op."""
    signature = inspect.signature(attn_func)

    @functools.wraps(attn_func)
    def attention(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        if call.arguments.get("attn_mask_startend_row_indices") is None:
            return attn_func(*args, **kwargs)
        call.apply_defaults()
        return _flashmask_attention(call)

    return attention


class _RoutedAttnFunc:
    """Data descriptor for `attn_func`: reads return the routed function; writes
    (PaddleNLP's __init__) store the plain one in the layer's __dict__, where
    it is found again once the descriptor is removed."""

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        return _routed(layer.__dict__["attn_func"])

    def __set__(self, layer, attn_func):
        layer.__dict__["attn_func"] = attn_func


def _attention_classes():
    for module_name, class_name in _ATTENTION_CLASSES:
        yield getattr(importlib.import_module(module_name), class_name)


def routed_layer_count(model) -> int:
    """How many of `model`'s sublayers are of an attention class apply() routes, exactly (a
    subclass may call its own attention, as Qwen2-MoE's does)."""
    classes = tuple(_attention_classes())
    return sum(type(layer) in classes for layer in model.sublayers(include_self=True))


def is_applied() -> bool:
    return all(isinstance(cls.__dict__.get("attn_func"), _RoutedAttnFunc) for cls in _attention_classes())


@functools.lru_cache(maxsize=None)  # the cache makes it warn once per process
def _warn_not_routed() -> None:
    warnings.warn(
        "paddle_flashmask: batches carry attn_mask_startend_row_indices but "
        "paddle_flashmask.paddlenlp.apply() was not called: without use_flash_attention=True "
        "PaddleNLP silently drops the indices and attends with a plain causal mask, so packed "
        "sequences see each other (with it, a CPU build of Paddle fails). Call apply() before "
        "training.",
        UserWarning,
        stacklevel=3,
    )


def warn_if_not_routed() -> None:
    """Warns (once) when indices would reach PaddleNLP's own CPU attention, which ignores them."""
    if paddle.device.get_device() == "cpu" and not is_applied():
        _warn_not_routed()


def _check_paddlenlp_version() -> None:
    import paddlenlp
    from packaging.version import Version

    if Version(paddlenlp.__version__) < Version(MIN_PADDLENLP_VERSION):
        # Fail loudly: with an older PaddleNLP, routing could silently do nothing.
        raise RuntimeError(
            f"paddle_flashmask.paddlenlp needs PaddleNLP >= {MIN_PADDLENLP_VERSION}, found {paddlenlp.__version__}"
        )


def apply() -> None:
    """Routes PaddleNLP Llama/Qwen2 attention with `attn_mask_startend_row_indices`
    to paddle_flashmask, on any device the op runs on. Idempotent."""
    _check_paddlenlp_version()
    for cls in _attention_classes():
        if "attn_func" in cls.__dict__ and not isinstance(cls.__dict__["attn_func"], _RoutedAttnFunc):
            raise RuntimeError(f"{cls.__name__}.attn_func is already patched by someone else")
        setattr(cls, "attn_func", _RoutedAttnFunc())


def revert() -> None:
    """Undoes apply(): PaddleNLP's own attention again, for every layer. Idempotent."""
    for cls in _attention_classes():
        if isinstance(cls.__dict__.get("attn_func"), _RoutedAttnFunc):
            delattr(cls, "attn_func")


@contextlib.contextmanager
def flashmask_routing():
    """`with flashmask_routing(): ...` routes to FlashMask inside the block only
    (a block nested in an applied state leaves it applied)."""
    was_applied = is_applied()
    apply()
    try:
        yield
    finally:
        if not was_applied:
            revert()
