"""The public Paddle API: `flashmask_attention`, a drop-in for Paddle 3.3's
`paddle.nn.functional.flashmask_attention`, and `patch_paddle`."""

from __future__ import annotations

import numpy as np
import paddle

from paddle_flashmask import _checks

_CPU_DTYPES = ("float32", "float16", "bfloat16")
_GPU_DTYPES = ("float16", "bfloat16")
_MAX_HEAD_DIM = 256  # the GPU kernels pad head dims other than 64/128/256


def _dtype_name(t) -> str:
    return str(t.dtype).replace("paddle.", "")


def _on_gpu(t) -> bool:
    if paddle.in_dynamic_mode():
        return t.place.is_gpu_place()
    return paddle.device.get_device().startswith("gpu")


# What a tensor argument may be: eager tensors, and static-graph values (PIR's Value in
# Paddle 3.x, the legacy Variable in 2.6 and in 3.x's old IR).
_GRAPH_TENSORS = tuple(
    t for t in (paddle.Tensor, getattr(paddle, "pir", None) and paddle.pir.Value, paddle.static.Variable) if t
)


def _as_int32_tensor(x, like, arg: str):
    """NumPy arrays (what `paddle_flashmask.masks` returns) go to `like`'s device."""
    if isinstance(x, _GRAPH_TENSORS):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype != np.int32:
            raise TypeError(f"flashmask_attention: `{arg}` dtype must be int32, got {x.dtype}")
        if paddle.in_dynamic_mode():
            return paddle.to_tensor(x, place=like.place)
        return paddle.to_tensor(x)
    raise TypeError(
        f"flashmask_attention: `{arg}` must be a paddle.Tensor or numpy.ndarray, got {type(x).__name__}"
    )


def _deterministic_requested() -> bool:
    import os

    if os.environ.get("FLASHMASK_DETERMINISTIC", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        return bool(paddle.get_flags(["FLAGS_cudnn_deterministic"])["FLAGS_cudnn_deterministic"])
    except ValueError:  # a Paddle build without the flag (2.6 CPU)
        return False


def _seed_offset(fixed_seed_offset):
    # No dropout is ever applied, so no random numbers are drawn: report the
    # caller's fixed seed/offset, or (0, 0).
    if fixed_seed_offset is not None:
        if list(fixed_seed_offset.shape) != [2]:
            raise ValueError(
                "flashmask_attention: `fixed_seed_offset` must have shape [2] (seed, offset), "
                f"got {list(fixed_seed_offset.shape)}"
            )
        return fixed_seed_offset.astype("int64")
    return paddle.zeros([2], dtype="int64")


# Argument handling is plain Python; dy2static must not rewrite its branches.
@paddle.jit.not_to_static
def flashmask_attention(
    query,
    key,
    value,
    startend_row_indices=None,
    *,
    dropout: float = 0.0,
    causal: bool = False,
    window_size=None,
    return_softmax_lse: bool = False,
    return_seed_offset: bool = False,
    fixed_seed_offset=None,
    rng_name: str = "",
    training: bool = True,
    name=None,
    softmax_scale=None,
    block_mask=None,
):
    r"""FlashMask attention: softmax(Q K^T * scale + M) V with a column-wise sparse mask M.

    Same parameters, defaults and return order as Paddle 3.3's
    ``paddle.nn.functional.flashmask_attention``; runs on CPU (float32,
    float16, bfloat16, head_dim up to 256) and, where built with CUDA, on GPU
    (float16, bfloat16, head_dim 64/128/256).

    Args:
        query: [batch, seqlen_q, num_heads, head_dim].
        key, value: [batch, seqlen_k, num_heads_k, head_dim]; num_heads must be a
            multiple of num_heads_k (GQA/MQA).
        startend_row_indices: int32 [batch, num_mask_heads, seqlen_k, num_bounds]
            (paddle.Tensor or numpy.ndarray, e.g. from ``paddle_flashmask.masks``),
            num_mask_heads in {1, num_heads_k, num_heads}. For key column j:

            - causal, 1 bound (LTS): rows >= LTS are masked;
            - causal, 2 bounds (LTS, LTE): rows in [LTS, LTE) are masked;
            - non-causal, 2 bounds (LTS, UTE): rows >= LTS and rows < UTE are masked;
            - non-causal, 4 bounds (LTS, LTE, UTS, UTE): rows in [LTS, LTE) and in
              [UTS, UTE) are masked.

            Values outside [0, seqlen_q] are accepted and act as if clamped to that
            range. None means no mask beyond ``causal``.
        dropout: must be 0.0 while training (dropout is not implemented: a
            NotImplementedError says so instead of ignoring it).
        causal: mask keys after the query, bottom-right aligned when
            seqlen_q != seqlen_k (query i sees keys <= i + seqlen_k - seqlen_q).
        window_size: int or (left, right): query i attends to keys
            [i - left, i + right] (right ignored when causal). Exclusive with
            startend_row_indices.
        return_softmax_lse: also return the float32 log-sum-exp [batch, num_heads,
            seqlen_q]; -inf for a row whose every key is masked (its output is 0).
        return_seed_offset: also return an int64 [2] (seed, offset); since no
            dropout is applied it is ``fixed_seed_offset`` or (0, 0).
        fixed_seed_offset, rng_name, name: accepted for compatibility.
        training: with training=False any dropout value is accepted (no dropout
            applies at inference).
        softmax_scale: defaults to head_dim ** -0.5.
        block_mask: optional int32 [batch, num_mask_heads, ceil(seqlen_q/128),
            ceil(seqlen_k/128)]; 0 masks the whole 128x128 block. Needs
            startend_row_indices, as in Paddle; any head_dim is accepted.

    Returns:
        out (shaped like query), then softmax_lse and seed_offset if asked for.
    """
    _checks.check_dropout(dropout, training)
    batch, seqlen_q = int(query.shape[0]), int(query.shape[1])
    seqlen_k = int(key.shape[1])

    startend_row_indices = _checks.resolve_mask_arguments(
        startend_row_indices, window_size, block_mask, causal, batch, seqlen_q, seqlen_k
    )
    startend_row_indices = _as_int32_tensor(startend_row_indices, query, "startend_row_indices")
    if block_mask is not None:
        block_mask = _as_int32_tensor(block_mask, query, "block_mask")

    on_gpu = _on_gpu(query)
    _checks.check_attention_inputs(
        query.shape,
        key.shape,
        value.shape,
        (_dtype_name(query), _dtype_name(key), _dtype_name(value)),
        startend_row_indices.shape,
        _dtype_name(startend_row_indices),
        causal,
        supported_dtypes=_GPU_DTYPES if on_gpu else _CPU_DTYPES,
        max_head_dim=_MAX_HEAD_DIM,
        supported_head_dims=None,
        block_mask_shape=None if block_mask is None else block_mask.shape,
        block_mask_dtype=None if block_mask is None else _dtype_name(block_mask),
    )
    if softmax_scale is None:
        softmax_scale = int(query.shape[-1]) ** -0.5

    from paddle_flashmask import _ops

    out, softmax_lse = _ops.flashmask_attention_op(
        query,
        key,
        value,
        startend_row_indices,
        block_mask,
        bool(causal),
        float(softmax_scale),
        _deterministic_requested(),
    )

    outputs = [out]
    if return_softmax_lse:
        outputs.append(softmax_lse)
    if return_seed_offset:
        outputs.append(_seed_offset(fixed_seed_offset))
    return outputs[0] if len(outputs) == 1 else outputs


def patch_paddle(force: bool = False) -> bool:
    """Installs `flashmask_attention` as `paddle.nn.functional.flashmask_attention`.

    Where the running Paddle lacks that function (Paddle 2.6) it is added. An
    existing one (Paddle >= 3.0, whose kernel is GPU-only) is left alone unless
    `force=True`. Returns True when the function was installed.
    """
    import paddle.nn.functional as F

    if getattr(F, "flashmask_attention", None) is not None and not force:
        return False
    F.flashmask_attention = flashmask_attention
    return True
