"""PyTorch binding of the FlashMask CUDA kernels (no Paddle involved).

    from paddle_flashmask.torch import flashmask_attention
    out = flashmask_attention(q, k, v, startend_row_indices, causal=True)   # q: [B, S, H, D] cuda

Same signature and semantics as `paddle_flashmask.flashmask_attention`, on torch
tensors; gradients flow to query, key and value (torch.autograd.Function).
float16 / bfloat16 on CUDA (sm80+); head_dim 64, 128 and 256 run natively,
other head dims up to 256 are zero-padded to the next of those.

Deterministic backward (bitwise identical grads run to run): set
FLASHMASK_DETERMINISTIC=1 (or Paddle's FLAGS_cudnn_deterministic=1), or enable
torch.use_deterministic_algorithms(True).

The kernels live in libflashmask_cuda.so (see `tools/build_cuda.sh`); this
module imports without it and fails with the build command on first use.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import torch

from paddle_flashmask import _checks
from paddle_flashmask.torch import _lib

__all__ = ["flashmask_attention", "is_available"]

_DTYPES = {torch.float16: 1, torch.bfloat16: 2}
_NATIVE_HEAD_DIMS = (64, 128, 256)


def is_available() -> bool:
    """True when a CUDA device is visible and the kernel library loads."""
    if not torch.cuda.is_available():
        return False
    try:
        _lib.load()
    except (RuntimeError, OSError):
        return False
    return True


def _deterministic() -> bool:
    for name in ("FLASHMASK_DETERMINISTIC", "FLAGS_cudnn_deterministic"):
        if os.environ.get(name, "").lower() in ("1", "true", "yes", "on"):
            return True
    return torch.are_deterministic_algorithms_enabled()


def _poison() -> bool:
    # Test hook: fill outputs with NaN before every launch so unwritten elements show.
    return os.environ.get("FLASHMASK_POISON", "") == "1"


def _strides(t: torch.Tensor) -> _lib.TensorStrides:
    s = t.stride()
    return _lib.TensorStrides(s[0], s[1], s[2])


def _shape(q, k) -> _lib.AttentionShape:
    return _lib.AttentionShape(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3])


def _mask(idx: torch.Tensor, block_mask, causal: bool) -> _lib.MaskParams:
    return _lib.MaskParams(
        idx.data_ptr(),
        idx.shape[3],
        idx.shape[1],
        bool(causal),
        None if block_mask is None else block_mask.data_ptr(),
    )


def _stream(t: torch.Tensor):
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def _forward(q, k, v, idx, block_mask, causal, scale):
    lib = _lib.load()
    out = torch.empty_like(q)
    lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
    if _poison():
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
    p = _lib.FwdParams()
    p.shape = _shape(q, k)
    p.mask = _mask(idx, block_mask, causal)
    p.dtype = _DTYPES[q.dtype]
    p.softmax_scale = scale
    p.q, p.k, p.v, p.out, p.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    p.q_strides, p.k_strides, p.v_strides, p.out_strides = _strides(q), _strides(k), _strides(v), _strides(out)
    ws_bytes = lib.flashmask_cuda_fwd_workspace_size(ctypes.byref(p))
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=q.device)
    _lib.check(lib.flashmask_cuda_fwd(ctypes.byref(p), ws.data_ptr(), ws_bytes, _stream(q)), "forward")
    return out, lse


def _backward(q, k, v, out, lse, dout, idx, block_mask, causal, scale, deterministic):
    lib = _lib.load()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if _poison():
        for t in (dq, dk, dv):
            t.fill_(float("nan"))
    p = _lib.BwdParams()
    p.shape = _shape(q, k)
    p.mask = _mask(idx, block_mask, causal)
    p.dtype = _DTYPES[q.dtype]
    p.softmax_scale = scale
    p.deterministic = bool(deterministic)
    p.q, p.k, p.v, p.out, p.dout = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr()
    p.lse, p.dq, p.dk, p.dv = lse.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    p.q_strides, p.k_strides, p.v_strides = _strides(q), _strides(k), _strides(v)
    p.out_strides, p.dout_strides = _strides(out), _strides(dout)
    p.dq_strides, p.dk_strides, p.dv_strides = _strides(dq), _strides(dk), _strides(dv)
    ws_bytes = lib.flashmask_cuda_bwd_workspace_size(ctypes.byref(p))
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=q.device)
    _lib.check(lib.flashmask_cuda_bwd(ctypes.byref(p), ws.data_ptr(), ws_bytes, _stream(q)), "backward")
    return dq, dk, dv


class _FlashMaskFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, idx, block_mask, causal, scale):
        with torch.cuda.device(q.device):
            out, lse = _forward(q, k, v, idx, block_mask, causal, scale)
        ctx.save_for_backward(q, k, v, out, lse, idx, block_mask)
        ctx.causal, ctx.scale = causal, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, idx, block_mask = ctx.saved_tensors
        dout = dout.contiguous()
        with torch.cuda.device(q.device):
            dq, dk, dv = _backward(
                q, k, v, out, lse, dout, idx, block_mask, ctx.causal, ctx.scale, _deterministic()
            )
        return dq, dk, dv, None, None, None, None


def _int32_on(x, device, arg: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype != np.int32:
            raise TypeError(f"flashmask_attention: `{arg}` dtype must be int32, got {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"flashmask_attention: `{arg}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if x.dtype != torch.int32:
        raise TypeError(f"flashmask_attention: `{arg}` dtype must be int32, got {str(x.dtype).replace('torch.', '')}")
    return x.to(device=device).contiguous()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


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
    """FlashMask attention on torch CUDA tensors [B, S, H, D]; see the module docstring
    and `paddle_flashmask.flashmask_attention` for the arguments."""
    _checks.check_dropout(dropout, training)
    if not isinstance(query, torch.Tensor) or not query.is_cuda:
        raise ValueError("flashmask_attention (torch): `query` must be a CUDA torch.Tensor")
    device = query.device
    batch, seqlen_q = int(query.shape[0]), int(query.shape[1])
    seqlen_k = int(key.shape[1])
    idx = _int32_on(
        _checks.resolve_mask_arguments(
            startend_row_indices, window_size, block_mask, bool(causal), batch, seqlen_q, seqlen_k
        ),
        device,
        "startend_row_indices",
    )
    if block_mask is not None:
        block_mask = _int32_on(block_mask, device, "block_mask")

    _checks.check_attention_inputs(
        tuple(query.shape),
        tuple(key.shape),
        tuple(value.shape),
        (_dtype_name(query), _dtype_name(key), _dtype_name(value)),
        tuple(idx.shape),
        _dtype_name(idx),
        bool(causal),
        supported_dtypes=("float16", "bfloat16"),
        max_head_dim=256,
        supported_head_dims=None,
        block_mask_shape=None if block_mask is None else tuple(block_mask.shape),
        block_mask_dtype=None if block_mask is None else _dtype_name(block_mask),
    )
    for arg, t in (("key", key), ("value", value)):
        if t.device != device:
            raise ValueError(f"flashmask_attention: `{arg}` is on {t.device}, query on {device}")

    head_dim = int(query.shape[-1])
    scale = head_dim**-0.5 if softmax_scale is None else float(softmax_scale)
    q, k, v = query, key, value
    padded = next(d for d in _NATIVE_HEAD_DIMS if d >= head_dim)
    if padded != head_dim:  # zero columns change neither Q K^T nor the kept part of P V
        pad = (0, padded - head_dim)
        q, k, v = (torch.nn.functional.pad(t, pad) for t in (q, k, v))
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out, lse = _FlashMaskFunction.apply(q, k, v, idx, block_mask, bool(causal), scale)
    if padded != head_dim:
        out = out[..., :head_dim]

    outputs = [out]
    if return_softmax_lse:
        outputs.append(lse)
    if return_seed_offset:
        if fixed_seed_offset is not None:
            outputs.append(torch.as_tensor(fixed_seed_offset, dtype=torch.int64, device=device))
        else:
            outputs.append(torch.zeros(2, dtype=torch.int64, device=device))
    return outputs[0] if len(outputs) == 1 else outputs
