"""PyTorch binding of the FlashMask CUDA kernels (no Paddle involved).

    from paddle_flashmask.torch import flashmask_attention
    out = flashmask_attention(q, k, v, startend_row_indices, causal=True)   # q: [B, S, H, D] cuda

Same signature and semantics as `paddle_flashmask.flashmask_attention`, on torch
tensors; gradients flow to query, key and value (torch.autograd.Function).
float16 / bfloat16 on CUDA (sm80+), head_dim 1 to 256 (the library pads a
head_dim it has no kernel for internally). Arguments are checked by the same
core as the Paddle API's (`paddle_flashmask._frontend`), so a bad call gets the
same error from both.

Deterministic backward (bitwise identical grads run to run): set
FLASHMASK_DETERMINISTIC=1, or enable torch.use_deterministic_algorithms(True).

The kernels live in libflashmask_cuda.so (see `tools/build_cuda.sh`); this
module imports without it and fails with the build command on first use.
"""

from __future__ import annotations

import ctypes
import os

import torch

from paddle_flashmask import _frontend, _kernels
from paddle_flashmask.torch import _lib

__all__ = ["flashmask_attention", "is_available"]

# torch dtype -> flashmask::DType code of the C ABI, for the dtypes the library is built for.
_DTYPES = {getattr(torch, name): code for name, code in _kernels.GPU_DTYPE_CODES.items()}


def is_available() -> bool:
    """True when a CUDA device is visible and the kernel library loads."""
    if not torch.cuda.is_available():
        return False
    try:
        _lib.load()
    except (RuntimeError, OSError):
        return False
    return True


def _poison() -> bool:
    # Test hook: fill outputs with NaN before every launch so unwritten elements show.
    return os.environ.get("FLASHMASK_POISON", "") == "1"


def _strides(t: torch.Tensor) -> _lib.TensorStrides:
    s = t.stride()
    return _lib.TensorStrides(s[0], s[1], s[2])


def _shape(q, k) -> _lib.AttentionShape:
    return _lib.AttentionShape(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3])


def _mask(idx: torch.Tensor, block_mask, causal: bool, masks_nothing: bool) -> _lib.MaskParams:
    return _lib.MaskParams(
        idx.data_ptr(),
        idx.shape[3],
        idx.shape[1],
        bool(causal),
        None if block_mask is None else block_mask.data_ptr(),
        bool(masks_nothing),
    )


def _stream(t: torch.Tensor):
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def _params(p, q, k, idx, block_mask, causal, masks_nothing, scale):
    """What the forward's and the backward's params share: shape, mask, dtype, scale."""
    p.shape = _shape(q, k)
    p.mask = _mask(idx, block_mask, causal, masks_nothing)
    p.dtype = _DTYPES[q.dtype]
    p.softmax_scale = scale
    return p


def _forward(q, k, v, idx, block_mask, causal, masks_nothing, scale):
    lib = _lib.load()
    out = torch.empty_like(q)
    lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
    if _poison():
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
    p = _params(_lib.FwdParams(), q, k, idx, block_mask, causal, masks_nothing, scale)
    p.q, p.k, p.v, p.out, p.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    p.q_strides, p.k_strides, p.v_strides, p.out_strides = _strides(q), _strides(k), _strides(v), _strides(out)
    ws_bytes = lib.flashmask_cuda_fwd_workspace_size(ctypes.byref(p))
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=q.device)
    _lib.check(lib.flashmask_cuda_fwd(ctypes.byref(p), ws.data_ptr(), ws_bytes, _stream(q)), "forward")
    return out, lse


def _backward(q, k, v, out, lse, dout, idx, block_mask, causal, masks_nothing, scale, deterministic):
    lib = _lib.load()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if _poison():
        for t in (dq, dk, dv):
            t.fill_(float("nan"))
    p = _params(_lib.BwdParams(), q, k, idx, block_mask, causal, masks_nothing, scale)
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
    def forward(ctx, q, k, v, idx, block_mask, causal, masks_nothing, scale):
        with torch.cuda.device(q.device):
            out, lse = _forward(q, k, v, idx, block_mask, causal, masks_nothing, scale)
        ctx.save_for_backward(q, k, v, out, lse, idx, block_mask)
        ctx.causal, ctx.masks_nothing, ctx.scale = causal, masks_nothing, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, idx, block_mask = ctx.saved_tensors
        dout = dout.contiguous()
        with torch.cuda.device(q.device):
            dq, dk, dv = _backward(
                q, k, v, out, lse, dout, idx, block_mask, ctx.causal, ctx.masks_nothing, ctx.scale,
                _frontend.deterministic_requested(torch.are_deterministic_algorithms_enabled()),
            )
        return dq, dk, dv, None, None, None, None, None


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _to_tensor(array, like: torch.Tensor) -> torch.Tensor:
    # A normal tensor even under torch.inference_mode(): the bounds of a call without a mask
    # are reused by later calls (_frontend._no_mask_tensor), which may save them for backward.
    with torch.inference_mode(False):
        return torch.from_numpy(array).to(device=like.device)


_TORCH = _frontend.Framework(
    tensor_name="torch.Tensor",
    is_tensor=lambda x: isinstance(x, torch.Tensor),
    shape=lambda t: tuple(t.shape),
    dtype_name=_dtype_name,
    device=lambda t: str(t.device),
    is_gpu=lambda t: t.is_cuda,
    runs_on_cpu=False,
    to_tensor=_to_tensor,
    values=lambda t: t.detach().cpu().numpy(),
    reusable=lambda t: True,
)


def _seed_offset(fixed_seed_offset, device):
    if fixed_seed_offset is not None:
        return fixed_seed_offset.to(dtype=torch.int64)
    return torch.zeros(2, dtype=torch.int64, device=device)


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
    call = _frontend.resolve(
        _TORCH,
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
    q, k, v = (t.contiguous() for t in (call.query, call.key, call.value))
    idx = call.startend_row_indices.contiguous()
    block_mask = None if call.block_mask is None else call.block_mask.contiguous()
    out, lse = _FlashMaskFunction.apply(q, k, v, idx, block_mask, call.causal, call.masks_nothing, call.softmax_scale)
    return _frontend.outputs(call, out, lse, lambda given: _seed_offset(given, q.device))
