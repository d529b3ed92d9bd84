"""Loads libflashmask_cuda (the framework-free CUDA kernels) through ctypes and
mirrors the params structs of csrc/include/flashmask/params.h.

Search order: $FLASHMASK_CUDA_LIB, paddle_flashmask/torch/libflashmask_cuda.so,
<repo>/build/libflashmask_cuda.so. Build it with `tools/build_cuda.sh`.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
from typing import Optional

_HERE = pathlib.Path(__file__).resolve().parent
_ABI_VERSION = 2
_LIB_NAME = "libflashmask_cuda.so"


class MaskParams(ctypes.Structure):
    _fields_ = [
        ("startend_row_indices", ctypes.c_void_p),
        ("num_bounds", ctypes.c_int32),
        ("num_mask_heads", ctypes.c_int32),
        ("causal", ctypes.c_bool),
        ("block_mask", ctypes.c_void_p),
        ("masks_nothing", ctypes.c_bool),
    ]


class AttentionShape(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int32),
        ("seqlen_q", ctypes.c_int32),
        ("seqlen_k", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("num_heads_k", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
    ]


class TensorStrides(ctypes.Structure):
    _fields_ = [("batch", ctypes.c_int64), ("row", ctypes.c_int64), ("head", ctypes.c_int64)]


class FwdParams(ctypes.Structure):
    _fields_ = [
        ("shape", AttentionShape),
        ("mask", MaskParams),
        ("dtype", ctypes.c_int32),
        ("softmax_scale", ctypes.c_float),
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("lse", ctypes.c_void_p),
        ("q_strides", TensorStrides),
        ("k_strides", TensorStrides),
        ("v_strides", TensorStrides),
        ("out_strides", TensorStrides),
    ]


class BwdParams(ctypes.Structure):
    _fields_ = [
        ("shape", AttentionShape),
        ("mask", MaskParams),
        ("dtype", ctypes.c_int32),
        ("softmax_scale", ctypes.c_float),
        ("deterministic", ctypes.c_bool),
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("dout", ctypes.c_void_p),
        ("lse", ctypes.c_void_p),
        ("dq", ctypes.c_void_p),
        ("dk", ctypes.c_void_p),
        ("dv", ctypes.c_void_p),
        ("q_strides", TensorStrides),
        ("k_strides", TensorStrides),
        ("v_strides", TensorStrides),
        ("out_strides", TensorStrides),
        ("dout_strides", TensorStrides),
        ("dq_strides", TensorStrides),
        ("dk_strides", TensorStrides),
        ("dv_strides", TensorStrides),
    ]


def candidate_paths():
    env = os.environ.get("FLASHMASK_CUDA_LIB")
    if env:
        yield pathlib.Path(env)
    yield _HERE / _LIB_NAME
    yield _HERE.parent.parent / "build" / _LIB_NAME


_lib: Optional[ctypes.CDLL] = None


def find_library() -> Optional[pathlib.Path]:
    for p in candidate_paths():
        if p.is_file():
            return p
    return None


def load() -> ctypes.CDLL:
    """The loaded library; raises RuntimeError with the build command when absent."""
    global _lib
    if _lib is not None:
        return _lib
    path = find_library()
    if path is None:
        tried = ", ".join(str(p) for p in candidate_paths())
        raise RuntimeError(
            "paddle_flashmask.torch: libflashmask_cuda.so not found (tried "
            f"{tried}). Build it with `tools/build_cuda.sh` (needs nvcc, no Paddle) "
            "or point FLASHMASK_CUDA_LIB at it."
        )
    lib = ctypes.CDLL(str(path))
    lib.flashmask_cuda_abi_version.restype = ctypes.c_int
    lib.flashmask_cuda_fwd_params_size.restype = ctypes.c_size_t
    lib.flashmask_cuda_bwd_params_size.restype = ctypes.c_size_t
    lib.flashmask_cuda_fwd_workspace_size.restype = ctypes.c_size_t
    lib.flashmask_cuda_fwd_workspace_size.argtypes = [ctypes.POINTER(FwdParams)]
    lib.flashmask_cuda_bwd_workspace_size.restype = ctypes.c_size_t
    lib.flashmask_cuda_bwd_workspace_size.argtypes = [ctypes.POINTER(BwdParams)]
    lib.flashmask_cuda_fwd.restype = ctypes.c_int
    lib.flashmask_cuda_fwd.argtypes = [
        ctypes.POINTER(FwdParams), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
    ]
    lib.flashmask_cuda_bwd.restype = ctypes.c_int
    lib.flashmask_cuda_bwd.argtypes = [
        ctypes.POINTER(BwdParams), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
    ]
    lib.flashmask_cuda_last_error.restype = ctypes.c_char_p
    if lib.flashmask_cuda_abi_version() != _ABI_VERSION:
        raise RuntimeError(
            f"paddle_flashmask.torch: {path} has ABI {lib.flashmask_cuda_abi_version()}, "
            f"expected {_ABI_VERSION}: rebuild with tools/build_cuda.sh"
        )
    if (
        lib.flashmask_cuda_fwd_params_size() != ctypes.sizeof(FwdParams)
        or lib.flashmask_cuda_bwd_params_size() != ctypes.sizeof(BwdParams)
    ):
        raise RuntimeError(
            f"paddle_flashmask.torch: params struct layout of {path} does not match the binding "
            f"({lib.flashmask_cuda_fwd_params_size()}/{lib.flashmask_cuda_bwd_params_size()} vs "
            f"{ctypes.sizeof(FwdParams)}/{ctypes.sizeof(BwdParams)} bytes): rebuild"
        )
    _lib = lib
    return lib


def check(rc: int, what: str) -> None:
    if rc != 0:
        msg = load().flashmask_cuda_last_error().decode(errors="replace")
        raise RuntimeError(f"paddle_flashmask.torch: {what} failed: {msg}")
