"""The front-end core shared by the Paddle API and the PyTorch binding.

`resolve` checks every argument of a `flashmask_attention` call in one pass
and returns what the kernels run with (a `Call`): the mask bounds as a tensor
of the caller's framework on the query's device, the `causal` flag, the
softmax scale. A front end describes its framework's tensors with a
`Framework` and never repeats a check, so the same bad call gets the same
error from both. The policies (dtypes and head dims per device, the element
limit of the kernels, the deterministic switch) are stated here once.

Imports only NumPy and `paddle_flashmask.masks` (which does not import this
module), never Paddle or PyTorch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks import builders
from paddle_flashmask.masks.spec import BLOCK_MASK_SIZE, MaskSpec, check_bound_count

WHERE = "flashmask_attention"
# The GPU kernels take float16/bfloat16 only; the CPU kernel also float32.
GPU_DTYPES = ("float16", "bfloat16")
CPU_DTYPES = ("float32", "float16", "bfloat16")
# Every head_dim in [1, 256] on both devices: the CUDA library pads a head_dim
# it has no kernel for to the next one it has, inside the library.
MIN_HEAD_DIM, MAX_HEAD_DIM = 1, 256
# The kernels index q/k/v, out, softmax_lse and the bounds with 32-bit ints.
MAX_KERNEL_ELEMENTS = 2**31 - 1
DETERMINISTIC_ENV = "FLASHMASK_DETERMINISTIC"
_TRUTHY = ("1", "true", "yes", "on")
_Q_DIMS = ("batch", "seqlen_q", "num_heads", "head_dim")
_KV_DIMS = ("batch", "seqlen_k", "num_heads_k", "head_dim")
_SEED_OFFSET_SHAPE = (2,)


def deterministic_requested(framework_flag: bool) -> bool:
    """Deterministic backward: FLASHMASK_DETERMINISTIC=1/true/yes/on (any case),
    or the framework's own switch (torch.are_deterministic_algorithms_enabled(),
    Paddle's FLAGS_cudnn_deterministic)."""
    return os.environ.get(DETERMINISTIC_ENV, "").strip().lower() in _TRUTHY or bool(framework_flag)


@dataclass(frozen=True)
class Framework:
    """How the core sees one framework's tensors."""

    tensor_name: str  # for messages: "paddle.Tensor", "torch.Tensor"
    is_tensor: Callable[[Any], bool]
    shape: Callable[[Any], Tuple[int, ...]]
    dtype_name: Callable[[Any], str]  # "float16", "int32", ...
    device: Callable[[Any], str]  # comparable description of where a tensor lives
    is_gpu: Callable[[Any], bool]
    runs_on_cpu: bool  # False: every tensor must be on a GPU
    to_tensor: Callable[[np.ndarray, Any], Any]  # array -> tensor on the device of the 2nd argument
    values: Callable[[Any], Optional[np.ndarray]]  # host copy; None where unknowable (static graph)


@dataclass(frozen=True)
class AttentionDims:
    batch: int
    seqlen_q: int
    seqlen_k: int
    num_heads: int
    num_heads_k: int
    head_dim: int


@dataclass(frozen=True)
class Call:
    """A checked call: what the kernels run with and what the caller asked back."""

    query: Any
    key: Any
    value: Any
    startend_row_indices: Any  # a tensor of the caller's framework, int32, on query's device
    block_mask: Any  # the same, or None
    causal: bool
    softmax_scale: float
    dims: AttentionDims
    return_softmax_lse: bool
    return_seed_offset: bool
    fixed_seed_offset: Any  # a tensor of the caller's framework, or None


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _check_element_count(what: str, count: int) -> None:
    if count > MAX_KERNEL_ELEMENTS:
        raise ValueError(
            f"{WHERE}: {what} has {count} elements; the kernels index at most {MAX_KERNEL_ELEMENTS} "
            "(32-bit offsets)"
        )


def check_shapes(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> AttentionDims:
    """Checks the shapes of query, key and value alone (no tensor needed)."""
    for name, shape, dims in (("query", q_shape, _Q_DIMS), ("key", k_shape, _KV_DIMS), ("value", v_shape, _KV_DIMS)):
        if len(shape) != 4:
            raise ValueError(
                f"{WHERE}: `{name}` must be a 4-D tensor [{', '.join(dims)}], got shape {_shape_str(shape)}"
            )
    q_shape, k_shape, v_shape = (tuple(int(s) for s in shape) for shape in (q_shape, k_shape, v_shape))
    if k_shape != v_shape:
        raise ValueError(f"{WHERE}: `value` must have key's shape {_shape_str(k_shape)}, got {_shape_str(v_shape)}")
    batch, seqlen_q, num_heads, head_dim = q_shape
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(
            f"{WHERE}: `query` head_dim must be in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {head_dim} "
            f"(shape {_shape_str(q_shape)})"
        )
    for name, shape, dims in (("query", q_shape, _Q_DIMS), ("key", k_shape, _KV_DIMS)):
        for dim, size in zip(dims, shape):
            if size <= 0:
                raise ValueError(
                    f"{WHERE}: `{name}` {dim} must be positive, got {size} (shape {_shape_str(shape)})"
                )
    k_batch, seqlen_k, num_heads_k, k_head_dim = k_shape
    if k_batch != batch:
        raise ValueError(f"{WHERE}: `key` batch ({k_batch}) must equal query's batch ({batch})")
    if k_head_dim != head_dim:
        raise ValueError(f"{WHERE}: `key` head_dim ({k_head_dim}) must equal query's head_dim ({head_dim})")
    if num_heads % num_heads_k != 0:
        raise ValueError(
            f"{WHERE}: `query` num_heads ({num_heads}) must be a multiple of `key` num_heads_k "
            f"({num_heads_k}) (GQA/MQA)"
        )
    # softmax_lse [batch, num_heads, seqlen_q] and out (query's shape) are never
    # larger than query itself (head_dim >= 1), so query's count bounds theirs.
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        _check_element_count(f"`{name}` of shape {_shape_str(shape)}", math.prod(shape))
    return AttentionDims(batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim)


def check_mask_shapes(
    dims: AttentionDims,
    causal: bool,
    indices_shape: Sequence[int],
    block_mask_shape: Optional[Sequence[int]] = None,
) -> None:
    """Checks the shapes of startend_row_indices and block_mask against the call's dims."""
    layout = f"[{dims.batch}, 1|{dims.num_heads_k}|{dims.num_heads}, {dims.seqlen_k}, 1|2|4]"
    if len(indices_shape) != 4:
        raise ValueError(
            f"{WHERE}: `startend_row_indices` must be a 4-D tensor [batch, num_mask_heads, seqlen_k, "
            f"num_bounds] = {layout}, got shape {_shape_str(indices_shape)}"
        )
    batch, num_mask_heads, seqlen_k, num_bounds = (int(s) for s in indices_shape)
    if batch != dims.batch or seqlen_k != dims.seqlen_k or num_mask_heads not in (1, dims.num_heads_k, dims.num_heads):
        raise ValueError(
            f"{WHERE}: `startend_row_indices` must have shape {layout}, got {_shape_str(indices_shape)}"
        )
    check_bound_count(num_bounds, causal, WHERE)
    _check_element_count(
        f"`startend_row_indices` of shape {_shape_str(indices_shape)}", math.prod(int(s) for s in indices_shape)
    )
    if block_mask_shape is None:
        return
    expected = (batch, num_mask_heads, -(-dims.seqlen_q // BLOCK_MASK_SIZE), -(-dims.seqlen_k // BLOCK_MASK_SIZE))
    if tuple(int(s) for s in block_mask_shape) != expected:
        raise ValueError(
            f"{WHERE}: `block_mask` must have shape [batch, num_mask_heads, ceil(seqlen_q/{BLOCK_MASK_SIZE}), "
            f"ceil(seqlen_k/{BLOCK_MASK_SIZE})] = {_shape_str(expected)}, got {_shape_str(block_mask_shape)}"
        )


def _check_dropout(dropout, training) -> None:
    """Dropout is refused loudly rather than silently ignored."""
    dropout = _args.real(dropout, "dropout", WHERE, minimum=0.0, maximum=1.0, maximum_inclusive=False)
    training = _args.boolean(training, "training", WHERE)
    if dropout > 0.0 and training:
        raise NotImplementedError(
            f"{WHERE}: dropout={dropout} is not implemented by paddle_flashmask; "
            "pass dropout=0.0 (or training=False, where dropout does not apply)"
        )


def _check_qkv(fw: Framework, query, key, value) -> None:
    """Type, device and dtype of query, key and value (the dtypes allowed depend on the device)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not fw.is_tensor(t):
            raise TypeError(f"{WHERE}: `{name}` must be a {fw.tensor_name}, got {_args.describe(t)}")
    on_gpu = fw.is_gpu(query)
    if not on_gpu and not fw.runs_on_cpu:
        raise ValueError(
            f"{WHERE}: `query` must be a CUDA tensor (this binding runs on GPU only), got one on {fw.device(query)}"
        )
    for name, t in (("key", key), ("value", value)):
        if fw.device(t) != fw.device(query):
            raise ValueError(f"{WHERE}: `{name}` is on {fw.device(t)}, `query` on {fw.device(query)}")
    supported = GPU_DTYPES if on_gpu else CPU_DTYPES
    dtype = fw.dtype_name(query)
    if dtype not in supported:
        raise TypeError(
            f"{WHERE}: `query` dtype must be one of {list(supported)} on {'GPU' if on_gpu else 'CPU'}, got {dtype}"
        )
    for name, t in (("key", key), ("value", value)):
        if fw.dtype_name(t) != dtype:
            raise TypeError(f"{WHERE}: `{name}` dtype must match query's ({dtype}), got {fw.dtype_name(t)}")


def _unwrap_mask_spec(startend_row_indices, causal: bool):
    """A MaskSpec carries its own `causal`: `causal` may be left at its default
    (False) or equal the spec's; causal=True with a non-causal spec is refused."""
    if not isinstance(startend_row_indices, MaskSpec):
        return startend_row_indices, causal
    spec_causal = _args.boolean(startend_row_indices.causal, "startend_row_indices.causal", WHERE)
    if causal and not spec_causal:
        raise ValueError(
            f"{WHERE}: `causal=True` disagrees with the MaskSpec given as `startend_row_indices` "
            "(built for causal=False); leave `causal` at its default to use the spec's"
        )
    return startend_row_indices.startend_row_indices, spec_causal


def _int32_tensor(fw: Framework, x, name: str, query):
    """A framework tensor as is, or a NumPy array moved to query's device; int32 either way."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.int32:
            raise TypeError(f"{WHERE}: `{name}` dtype must be int32, got {x.dtype}")
        return fw.to_tensor(np.ascontiguousarray(x), query)
    if not fw.is_tensor(x):
        raise TypeError(f"{WHERE}: `{name}` must be a {fw.tensor_name} or numpy.ndarray, got {_args.describe(x)}")
    if fw.dtype_name(x) != "int32":
        raise TypeError(f"{WHERE}: `{name}` dtype must be int32, got {fw.dtype_name(x)}")
    if fw.device(x) != fw.device(query):
        raise ValueError(f"{WHERE}: `{name}` is on {fw.device(x)}, `query` on {fw.device(query)}")
    return x


def _check_block_mask_values(fw: Framework, block_mask) -> None:
    # One host copy for a device tensor; in a static graph the values are unknown until run.
    values = block_mask if isinstance(block_mask, np.ndarray) else fw.values(block_mask)
    if values is None:
        return
    bad = (values != 0) & (values != 1)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{WHERE}: `block_mask` values must be 0 (mask the block) or 1 (keep it), "
            f"got {int(values[position])} at {list(position)}"
        )


def _resolve_mask(fw: Framework, dims: AttentionDims, query, startend_row_indices, window_size, block_mask, causal):
    """Returns (startend_row_indices tensor, block_mask tensor or None, causal)."""
    startend_row_indices, causal = _unwrap_mask_spec(startend_row_indices, causal)
    if window_size is not None:
        if startend_row_indices is not None:
            raise ValueError(f"{WHERE}: pass either `window_size` or `startend_row_indices`, not both")
        startend_row_indices = builders.window_size_to_indices(
            builders.window_extent(window_size, WHERE), causal, dims.seqlen_q, dims.seqlen_k, dims.batch
        )
    elif startend_row_indices is None:
        if block_mask is not None:
            raise ValueError(f"{WHERE}: `block_mask` must be used together with `startend_row_indices`")
        # Bounds that mask nothing beyond `causal`, so that one kernel serves every call.
        startend_row_indices = builders.no_mask_indices(causal, dims.batch, dims.seqlen_q, dims.seqlen_k)
    indices = _int32_tensor(fw, startend_row_indices, "startend_row_indices", query)
    if block_mask is not None:
        block_mask_values = block_mask
        block_mask = _int32_tensor(fw, block_mask, "block_mask", query)
        check_mask_shapes(dims, causal, fw.shape(indices), fw.shape(block_mask))
        _check_block_mask_values(fw, block_mask_values)
    else:
        check_mask_shapes(dims, causal, fw.shape(indices))
    return indices, block_mask, causal


def _check_seed_offset(fw: Framework, fixed_seed_offset, query):
    if fixed_seed_offset is None:
        return None
    if isinstance(fixed_seed_offset, np.ndarray) and np.issubdtype(fixed_seed_offset.dtype, np.integer):
        fixed_seed_offset = fw.to_tensor(fixed_seed_offset.astype(np.int64), query)
    if not fw.is_tensor(fixed_seed_offset) or not fw.dtype_name(fixed_seed_offset).startswith(("int", "uint")):
        raise TypeError(
            f"{WHERE}: `fixed_seed_offset` must be an integer {fw.tensor_name} of shape [2] (seed, offset), "
            f"got {_args.describe(fixed_seed_offset)}"
        )
    if tuple(fw.shape(fixed_seed_offset)) != _SEED_OFFSET_SHAPE:
        raise ValueError(
            f"{WHERE}: `fixed_seed_offset` must have shape [2] (seed, offset), "
            f"got {_shape_str(fw.shape(fixed_seed_offset))}"
        )
    return fixed_seed_offset


def resolve(
    fw: Framework,
    query,
    key,
    value,
    startend_row_indices,
    *,
    dropout,
    causal,
    window_size,
    return_softmax_lse,
    return_seed_offset,
    fixed_seed_offset,
    rng_name,
    training,
    name,
    softmax_scale,
    block_mask,
) -> Call:
    """Checks every argument of a flashmask_attention call (the public API's
    parameters, with `fw` describing the caller's tensors), in one pass."""
    _check_dropout(dropout, training)
    causal = _args.boolean(causal, "causal", WHERE)
    return_softmax_lse = _args.boolean(return_softmax_lse, "return_softmax_lse", WHERE)
    return_seed_offset = _args.boolean(return_seed_offset, "return_seed_offset", WHERE)
    _args.string(rng_name, "rng_name", WHERE)
    if name is not None:
        _args.string(name, "name", WHERE)
    _check_qkv(fw, query, key, value)
    dims = check_shapes(fw.shape(query), fw.shape(key), fw.shape(value))
    if softmax_scale is None:
        softmax_scale = dims.head_dim**-0.5
    else:
        softmax_scale = _args.real(softmax_scale, "softmax_scale", WHERE)
        if softmax_scale <= 0.0:
            # The kernels' online softmax takes the row maximum before scaling.
            raise ValueError(f"{WHERE}: `softmax_scale` must be > 0, got {softmax_scale}")
    indices, block_mask, causal = _resolve_mask(
        fw, dims, query, startend_row_indices, window_size, block_mask, causal
    )
    return Call(
        query,
        key,
        value,
        indices,
        block_mask,
        causal,
        softmax_scale,
        dims,
        return_softmax_lse,
        return_seed_offset,
        _check_seed_offset(fw, fixed_seed_offset, query),
    )


def outputs(call: Call, out, softmax_lse, seed_offset: Callable[[Any], Any]):
    """The API's return value: out, then softmax_lse and (seed, offset) if asked
    for; `seed_offset(call.fixed_seed_offset)` makes the last one."""
    results = [out]
    if call.return_softmax_lse:
        results.append(softmax_lse)
    if call.return_seed_offset:
        results.append(seed_offset(call.fixed_seed_offset))
    return results[0] if len(results) == 1 else results
