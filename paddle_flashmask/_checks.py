"""Framework-free validation of a flashmask_attention call.

Shared by the Paddle API and the PyTorch binding: both pass shapes as tuples
and dtypes as plain names ("float16", "bfloat16", "float32", "int32"), so the
same call gets the same error message whatever framework made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

BLOCK_MASK_SIZE = 128  # granularity of block_mask, fixed by Paddle's API

_Q_LAYOUT = "[batch, seqlen_q, num_heads, head_dim]"
_KV_LAYOUT = "[batch, seqlen_k, num_heads_k, head_dim]"


@dataclass(frozen=True)
class AttentionDims:
    batch: int
    seqlen_q: int
    seqlen_k: int
    num_heads: int
    num_heads_k: int
    head_dim: int
    num_mask_heads: int
    num_bounds: int


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_bound_count(num_bounds: int, causal: bool) -> None:
    allowed = (1, 2) if causal else (2, 4)
    if num_bounds not in allowed:
        raise ValueError(
            f"flashmask_attention: startend_row_indices.shape[-1] must be {allowed[0]} or "
            f"{allowed[1]} when causal={causal}, got {num_bounds}"
        )


def check_attention_inputs(
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    v_shape: Sequence[int],
    dtypes: Tuple[str, str, str],
    indices_shape: Sequence[int],
    indices_dtype: str,
    causal: bool,
    supported_dtypes: Sequence[str],
    max_head_dim: Optional[int] = None,
    supported_head_dims: Optional[Sequence[int]] = None,
    block_mask_shape: Optional[Sequence[int]] = None,
    block_mask_dtype: Optional[str] = None,
) -> AttentionDims:
    """Checks one call and returns its dimensions.

    Raises TypeError for a wrong dtype and ValueError for a wrong shape; every
    message names the argument and the expected layout.
    """
    for name, shape, layout in (
        ("query", q_shape, _Q_LAYOUT),
        ("key", k_shape, _KV_LAYOUT),
        ("value", v_shape, _KV_LAYOUT),
    ):
        if len(shape) != 4:
            raise ValueError(
                f"flashmask_attention: `{name}` must be a 4-D tensor {layout}, "
                f"got shape {_shape_str(shape)}"
            )
    q_dtype, k_dtype, v_dtype = dtypes
    if q_dtype not in supported_dtypes:
        raise TypeError(
            f"flashmask_attention: `query` dtype must be one of {list(supported_dtypes)} on "
            f"this device, got {q_dtype}"
        )
    for name, dt in (("key", k_dtype), ("value", v_dtype)):
        if dt != q_dtype:
            raise TypeError(
                f"flashmask_attention: `{name}` dtype must match query's ({q_dtype}), got {dt}"
            )

    batch, seqlen_q, num_heads, head_dim = (int(s) for s in q_shape)
    if tuple(int(s) for s in k_shape) != tuple(int(s) for s in v_shape):
        raise ValueError(
            f"flashmask_attention: `value` must have key's shape {_shape_str(k_shape)}, "
            f"got {_shape_str(v_shape)}"
        )
    k_batch, seqlen_k, num_heads_k, k_head_dim = (int(s) for s in k_shape)
    if k_batch != batch:
        raise ValueError(
            f"flashmask_attention: `key` batch ({k_batch}) must equal query's batch ({batch})"
        )
    if k_head_dim != head_dim:
        raise ValueError(
            f"flashmask_attention: `key` head_dim ({k_head_dim}) must equal query's "
            f"head_dim ({head_dim})"
        )
    if min(batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim) <= 0:
        raise ValueError(
            "flashmask_attention: every dimension of `query` and `key` must be positive, got "
            f"query {_shape_str(q_shape)} and key {_shape_str(k_shape)}"
        )
    if num_heads % num_heads_k != 0:
        raise ValueError(
            f"flashmask_attention: `query` num_heads ({num_heads}) must be a multiple of "
            f"`key` num_heads_k ({num_heads_k}) (GQA/MQA)"
        )
    if supported_head_dims is not None and head_dim not in supported_head_dims:
        raise ValueError(
            f"flashmask_attention: head_dim must be one of {list(supported_head_dims)} on this "
            f"device, got {head_dim}"
        )
    if max_head_dim is not None and head_dim > max_head_dim:
        raise ValueError(
            f"flashmask_attention: head_dim must be at most {max_head_dim}, got {head_dim}"
        )

    if indices_dtype != "int32":
        raise TypeError(
            f"flashmask_attention: `startend_row_indices` dtype must be int32, got {indices_dtype}"
        )
    idx_layout = f"[{batch}, 1|{num_heads_k}|{num_heads}, {seqlen_k}, 1|2|4]"
    if len(indices_shape) != 4:
        raise ValueError(
            f"flashmask_attention: `startend_row_indices` must be a 4-D tensor "
            f"[batch, num_mask_heads, seqlen_k, num_bounds] = {idx_layout}, "
            f"got shape {_shape_str(indices_shape)}"
        )
    i_batch, num_mask_heads, i_seqlen, num_bounds = (int(s) for s in indices_shape)
    if (
        i_batch != batch
        or i_seqlen != seqlen_k
        or num_mask_heads not in (1, num_heads_k, num_heads)
    ):
        raise ValueError(
            f"flashmask_attention: `startend_row_indices` must have shape {idx_layout}, "
            f"got {_shape_str(indices_shape)}"
        )
    check_bound_count(num_bounds, causal)

    if block_mask_shape is not None:
        if block_mask_dtype != "int32":
            raise TypeError(
                f"flashmask_attention: `block_mask` dtype must be int32, got {block_mask_dtype}"
            )
        expected = (
            batch,
            num_mask_heads,
            -(-seqlen_q // BLOCK_MASK_SIZE),
            -(-seqlen_k // BLOCK_MASK_SIZE),
        )
        if tuple(int(s) for s in block_mask_shape) != expected:
            raise ValueError(
                "flashmask_attention: `block_mask` must have shape [batch, num_mask_heads, "
                f"ceil(seqlen_q/128), ceil(seqlen_k/128)] = {_shape_str(expected)}, "
                f"got {_shape_str(block_mask_shape)}"
            )

    return AttentionDims(
        batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim, num_mask_heads, num_bounds
    )


def check_dropout(dropout: float, training: bool) -> None:
    """Dropout is refused loudly rather than silently ignored."""
    if dropout > 0.0 and training:
        raise NotImplementedError(
            f"flashmask_attention: dropout={dropout} is not implemented by paddle_flashmask; "
            "pass dropout=0.0 (or training=False, where dropout does not apply)"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"flashmask_attention: `dropout` must be in [0, 1), got {dropout}")


def resolve_mask_arguments(startend_row_indices, window_size, block_mask, causal, batch, seqlen_q, seqlen_k):
    """The bounds a call runs with: the given ones, those of `window_size`, or
    bounds that mask nothing beyond `causal` (NumPy int32 in the last two cases),
    so that one kernel serves every call."""
    from paddle_flashmask.masks import builders  # masks imports this module

    if window_size is not None:
        if startend_row_indices is not None:
            raise ValueError(
                "flashmask_attention: pass either `window_size` or `startend_row_indices`, not both"
            )
        return builders.window_size_to_indices(window_size, causal, seqlen_q, seqlen_k, batch)
    if block_mask is not None and startend_row_indices is None:
        raise ValueError(
            "flashmask_attention: `block_mask` must be used together with `startend_row_indices`"
        )
    if startend_row_indices is None:
        return builders.no_mask_indices(causal, batch, seqlen_q, seqlen_k)
    return startend_row_indices
