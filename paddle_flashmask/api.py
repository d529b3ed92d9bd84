"""The public Paddle API: `flashmask_attention`, a drop-in for Paddle 3.3's
`paddle.nn.functional.flashmask_attention`, and `patch_paddle`."""

from __future__ import annotations

import numpy as np
import paddle

from paddle_flashmask import _frontend, _ops

_DETERMINISTIC_FLAG = "FLAGS_cudnn_deterministic"  # Paddle also sets it from that env variable


# Static-graph values: PIR's Value (paddle.jit.to_static in Paddle 3.x) and the legacy
# Variable (to_static in Paddle 2.6).
_STATIC_VALUES = (paddle.pir.Value, paddle.static.Variable)


def _is_tensor(x) -> bool:
    return isinstance(x, (paddle.Tensor, *_STATIC_VALUES))


def _is_static(t) -> bool:
    # By type, not isinstance: in dygraph mode Variable's metaclass claims every eager
    # tensor as an instance, which once made eager tensors look static here (no block_mask
    # value check, the current device taken for the tensor's).
    return issubclass(type(t), _STATIC_VALUES)


def _device(t) -> str:
    # A static graph's values have no place: they run on the current device.
    return paddle.device.get_device() if _is_static(t) else str(t.place)


def _is_gpu(t) -> bool:
    return paddle.device.get_device().startswith("gpu") if _is_static(t) else t.place.is_gpu_place()


def _to_tensor(array: np.ndarray, like):
    if _is_static(like):
        return paddle.to_tensor(array)
    return paddle.to_tensor(array, place=like.place)


_PADDLE = _frontend.Framework(
    tensor_name="paddle.Tensor",
    is_tensor=_is_tensor,
    shape=lambda t: tuple(int(s) for s in t.shape),
    dtype_name=lambda t: str(t.dtype).replace("paddle.", ""),
    device=_device,
    is_gpu=_is_gpu,
    runs_on_cpu=True,
    to_tensor=_to_tensor,
    values=lambda t: None if _is_static(t) else t.numpy(),
    reusable=lambda t: not _is_static(t),
)


def _paddle_deterministic_flag() -> bool:
    try:
        return bool(paddle.get_flags([_DETERMINISTIC_FLAG])[_DETERMINISTIC_FLAG])
    except ValueError:  # CPU builds of Paddle lack the flag (and the CPU kernel is deterministic)
        return False


def _seed_offset(fixed_seed_offset):
    # No dropout is ever applied, so no random numbers are drawn: report the
    # caller's fixed seed/offset, or (0, 0).
    if fixed_seed_offset is not None:
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
    float16, bfloat16) and, where built with CUDA, on GPU (float16, bfloat16);
    head_dim 1 to 256 on both. Every argument is checked before anything runs:
    a bad one raises TypeError/ValueError naming it (docs/bad-inputs.md).
    The backward is deterministic when FLASHMASK_DETERMINISTIC=1 or
    FLAGS_cudnn_deterministic is set.

    Args:
        query: [batch, seqlen_q, num_heads, head_dim].
        key, value: [batch, seqlen_k, num_heads_k, head_dim]; num_heads must be a
            multiple of num_heads_k (GQA/MQA).
        startend_row_indices: int32 [batch, num_mask_heads, seqlen_k, num_bounds]
            (paddle.Tensor or numpy.ndarray), or a ``paddle_flashmask.masks.MaskSpec``
            (then ``causal`` comes from the spec: leave it at its default or
            pass the spec's; causal=True with a non-causal spec is an error),
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
            [i' - left, i' + right] with i' = i + seqlen_k - seqlen_q (aligned as
            causal is; right ignored when causal). Exclusive with
            startend_row_indices.
        return_softmax_lse: also return the float32 log-sum-exp [batch, num_heads,
            seqlen_q]; -inf for a row whose every key is masked (its output is 0).
        return_seed_offset: also return an int64 [2] (seed, offset); since no
            dropout is applied it is ``fixed_seed_offset`` or (0, 0).
        fixed_seed_offset, rng_name, name: accepted for compatibility.
        training: with training=False any dropout in [0, 1) is accepted (no dropout
            applies at inference); with training=True only 0.
        softmax_scale: a finite number > 0; defaults to head_dim ** -0.5.
        block_mask: optional int32 [batch, num_mask_heads, ceil(seqlen_q/128),
            ceil(seqlen_k/128)] of 0s and 1s; 0 masks the whole 128x128 block. Needs
            startend_row_indices, as in Paddle; any head_dim is accepted.

    Returns:
        out (shaped like query), then softmax_lse and seed_offset if asked for.
    """
    call = _frontend.resolve(
        _PADDLE,
        query,
        key,
        value,
        startend_row_indices,
        dropout=dropout,
        causal=causal,
        window_size=window_size,
        return_softmax_lse=return_softmax_lse,
        return_seed_offset=return_seed_offset,
        fixed_seed_offset=fixed_seed_offset,
        rng_name=rng_name,
        training=training,
        name=name,
        softmax_scale=softmax_scale,
        block_mask=block_mask,
    )
    deterministic = _frontend.deterministic_requested(_paddle_deterministic_flag())
    out, softmax_lse = _ops.flashmask_attention_op(
        call.query,
        call.key,
        call.value,
        call.startend_row_indices,
        call.block_mask,
        call.causal,
        call.softmax_scale,
        deterministic,
        masks_nothing=call.masks_nothing,
    )
    return _frontend.outputs(call, out, softmax_lse, _seed_offset)


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
