"""Between the column-wise form and dense boolean masks.

`to_dense` is the NumPy statement of the mask semantics in
csrc/include/flashmask/mask.h; the reference attention and every test build
their dense masks through it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks.spec import BLOCK_MASK_SIZE, MaskSpec, block_count, check_bound_count

_DENSE_RANKS = (2, 4)  # [Sq, Sk] or [B, Hm, Sq, Sk]


def _array(value, name: str, where: str) -> np.ndarray:
    """A NumPy array of `value` (an array, or a tensor that converts to one)."""
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"{where}: `{name}` must be a numpy.ndarray, got {_args.describe(value)}")


def _zeros_and_ones(values: np.ndarray, name: str, where: str) -> np.ndarray:
    """bool of a bool or integer array holding only 0s and 1s."""
    if values.dtype != np.bool_:
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{where}: `{name}` must be a bool or integer array, got dtype {values.dtype}")
        if ((values != 0) & (values != 1)).any():
            raise ValueError(f"{where}: `{name}` values must be 0 or 1, got {np.unique(values)[:8].tolist()}")
    return values.astype(bool)


def as_allowed(allowed, where: str, name: str = "allowed") -> np.ndarray:
    """A dense mask (bool or 0/1, [Sq, Sk] or [B, Hm, Sq, Sk]) as a bool array."""
    allowed = _array(allowed, name, where)
    if allowed.ndim not in _DENSE_RANKS or allowed.size == 0:
        raise ValueError(
            f"{where}: `{name}` must be a non-empty [Sq, Sk] or [B, Hm, Sq, Sk] array, got shape {list(allowed.shape)}"
        )
    return _zeros_and_ones(allowed, name, where)


def mask_arguments(startend_row_indices, causal, where: str):
    """(int64 bounds [B, Hm, Sk, nb], causal) of a MaskSpec, or of bounds and a
    `causal` flag; a MaskSpec's own flag wins, and a different `causal` is refused."""
    if isinstance(startend_row_indices, MaskSpec):
        spec_causal = bool(startend_row_indices.causal)
        if causal is not None and _args.boolean(causal, "causal", where) != spec_causal:
            raise ValueError(f"{where}: `causal={causal}` disagrees with the MaskSpec's causal={spec_causal}")
        startend_row_indices, causal = startend_row_indices.startend_row_indices, spec_causal
    elif causal is None:
        raise TypeError(f"{where}: `causal` (a bool) is needed unless `startend_row_indices` is a MaskSpec")
    causal = _args.boolean(causal, "causal", where)
    idx = _array(startend_row_indices, "startend_row_indices", where)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{where}: `startend_row_indices` must have an integer dtype, got {idx.dtype}")
    if idx.ndim != 4 or idx.size == 0:
        raise ValueError(
            f"{where}: `startend_row_indices` must be a non-empty 4-D array [batch, num_mask_heads, seqlen_k, "
            f"num_bounds], got shape {list(idx.shape)}"
        )
    check_bound_count(idx.shape[-1], causal, where)
    return idx.astype(np.int64), causal


def normalized_bounds(startend_row_indices, causal: bool, seqlen_q: int):
    """Returns (lts, lte, uts, ute), each [B, Hm, Sk]: masked rows are [lts, lte) and [uts, ute)."""
    idx, causal = mask_arguments(startend_row_indices, causal, "normalized_bounds")
    num_bounds = idx.shape[-1]
    lts = idx[..., 0]
    full = np.full_like(lts, seqlen_q)
    zero = np.zeros_like(lts)
    if causal:
        lte = idx[..., 1] if num_bounds == 2 else full
        return lts, lte, zero, zero
    if num_bounds == 2:
        return lts, full, zero, idx[..., 1]
    return lts, idx[..., 1], idx[..., 2], idx[..., 3]


def to_dense(
    startend_row_indices,
    causal: Optional[bool] = None,
    seqlen_q: Optional[int] = None,
    block_mask=None,
    rows=None,
) -> np.ndarray:
    """Dense mask of a column-wise one: bool [B, Hm, Sq, Sk], True where the query attends.

    `startend_row_indices` is a MaskSpec (whose `causal` is used) or int bounds
    with their `causal` flag. `seqlen_q` defaults to seqlen_k. `block_mask`
    (0/1 [B, Hm, ceil(Sq/128), ceil(Sk/128)], 1 = keep) removes whole 128x128
    blocks on top of the bounds. `rows` (query indices in [0, Sq)) keeps only those rows
    ([B, Hm, len(rows), Sk]), for lengths whose whole dense mask would not fit.
    """
    where = "to_dense"
    idx, causal = mask_arguments(startend_row_indices, causal, where)
    seqlen_k = idx.shape[2]
    seqlen_q = seqlen_k if seqlen_q is None else _args.integer(seqlen_q, "seqlen_q", where, minimum=1)
    lts, lte, uts, ute = (b[:, :, None, :] for b in normalized_bounds(idx, causal, seqlen_q))
    query_rows = np.arange(seqlen_q) if rows is None else np.asarray(rows)
    in_range = query_rows.size == 0 or (query_rows.min() >= 0 and query_rows.max() < seqlen_q)
    if query_rows.ndim != 1 or not np.issubdtype(query_rows.dtype, np.integer) or not in_range:
        raise ValueError(f"{where}: `rows` must be a 1-D array of query indices in [0, {seqlen_q}), got {rows!r}"[:300])
    rows = query_rows[:, None]
    cols = np.arange(seqlen_k)[None, :]
    masked = ((rows >= lts) & (rows < lte)) | ((rows >= uts) & (rows < ute))
    if causal:
        masked = masked | (cols > rows + (seqlen_k - seqlen_q))
    allowed = ~masked
    if block_mask is not None:
        keep = _zeros_and_ones(_array(block_mask, "block_mask", where), "block_mask", where)
        blocks = (idx.shape[0], idx.shape[1], block_count(seqlen_q), block_count(seqlen_k))
        if keep.shape != blocks:
            raise ValueError(
                f"{where}: `block_mask` must have shape [batch, num_mask_heads, ceil(seqlen_q/{BLOCK_MASK_SIZE}), "
                f"ceil(seqlen_k/{BLOCK_MASK_SIZE})] = {list(blocks)}, got {list(keep.shape)}"
            )
        keep = np.repeat(np.repeat(keep, BLOCK_MASK_SIZE, axis=2), BLOCK_MASK_SIZE, axis=3)
        allowed = allowed & keep[:, :, query_rows, :seqlen_k]
    return allowed


def expand_mask_heads(mask: np.ndarray, num_heads: int, num_heads_k: int) -> np.ndarray:
    """[B, Hm, ...] -> [B, num_heads, ...] following the API's head rule (Hm in 1, Hk, H)."""
    where = "expand_mask_heads"
    mask = _array(mask, "mask", where)
    num_heads = _args.integer(num_heads, "num_heads", where, minimum=1)
    num_heads_k = _args.integer(num_heads_k, "num_heads_k", where, minimum=1)
    if mask.ndim < 2 or num_heads % num_heads_k:
        raise ValueError(
            f"{where}: need a `mask` [B, Hm, ...] and `num_heads` a multiple of `num_heads_k`, got shape "
            f"{list(mask.shape)}, num_heads={num_heads}, num_heads_k={num_heads_k}"
        )
    num_mask_heads = mask.shape[1]
    if num_mask_heads == num_heads:
        return mask
    if num_mask_heads == 1:
        return np.broadcast_to(mask, (mask.shape[0], num_heads) + mask.shape[2:])
    if num_mask_heads == num_heads_k:
        return np.repeat(mask, num_heads // num_heads_k, axis=1)
    raise ValueError(
        f"{where}: `mask` has {num_mask_heads} heads; expected 1, num_heads_k={num_heads_k} "
        f"or num_heads={num_heads}"
    )


def _runs(masked: np.ndarray):
    """Per column of masked [..., Sq, Sk]: run count and first/second run [start, end)."""
    seqlen_q = masked.shape[-2]
    above = np.concatenate([np.zeros_like(masked[..., :1, :]), masked[..., :-1, :]], axis=-2)
    below = np.concatenate([masked[..., 1:, :], np.zeros_like(masked[..., :1, :])], axis=-2)
    starts = masked & ~above
    ends = masked & ~below
    count = starts.sum(axis=-2)

    def first(flags):
        pos = np.argmax(flags, axis=-2)
        return np.where(flags.any(axis=-2), pos, seqlen_q)

    s1, e1 = first(starts), first(ends) + 1
    rows = np.arange(seqlen_q)[:, None]
    later = rows > np.minimum(e1, seqlen_q)[..., None, :] - 1
    s2, e2 = first(starts & later), first(ends & later) + 1
    return count, s1, e1, s2, e2


def _first_bad_column(bad: np.ndarray) -> str:
    b, h, j = (int(x) for x in np.argwhere(bad)[0])
    return f"batch {b}, head {h}, column {j}"


def from_dense(allowed, causal: Optional[bool] = None) -> MaskSpec:
    """Finds the smallest column-wise form of a dense mask.

    `allowed` is bool [Sq, Sk] or [B, Hm, Sq, Sk] (True = attend). Tries, in
    order, causal with 1 then 2 bounds, non-causal with 2 then 4 bounds
    (`causal` restricts the search to one side). Raises ValueError naming the
    first column whose masked rows are not such intervals.
    """
    allowed = as_allowed(allowed, "from_dense")
    if causal is not None:
        causal = _args.boolean(causal, "causal", "from_dense")
    if allowed.ndim == 2:
        allowed = allowed[None, None]
    seqlen_q, seqlen_k = allowed.shape[-2:]
    masked = ~allowed
    rows = np.arange(seqlen_q)[:, None]
    cols = np.arange(seqlen_k)[None, :]
    above_diagonal = cols > rows + (seqlen_k - seqlen_q)
    errors = []

    if causal in (None, True):
        if (allowed & above_diagonal).any():
            b, h, i, j = (int(x) for x in np.argwhere(allowed & above_diagonal)[0])
            errors.append(
                f"causal form impossible: batch {b}, head {h}, row {i} attends to a later column {j}"
            )
        else:
            count, s1, e1, _, _ = _runs(masked & ~above_diagonal)
            if (count > 1).any():
                errors.append(
                    "causal form impossible: masked rows below the diagonal are not one interval at "
                    + _first_bad_column(count > 1)
                )
            else:
                lts = np.where(count == 1, s1, seqlen_q)
                lte = np.where(count == 1, e1, seqlen_q)
                if (lte == seqlen_q).all():
                    return MaskSpec(lts[..., None].astype(np.int32), True)
                return MaskSpec(np.stack([lts, lte], -1).astype(np.int32), True)

    if causal in (None, False):
        count, s1, e1, s2, e2 = _runs(masked)
        if (count > 2).any():
            errors.append(
                "masked rows are more than two intervals at " + _first_bad_column(count > 2)
            )
        else:
            # Two-bound form: a run touching row 0 (upper) and/or one touching the end (lower).
            upper_end = np.where((count >= 1) & (s1 == 0), e1, 0)
            last_s = np.where(count == 2, s2, s1)
            last_e = np.where(count == 2, e2, e1)
            lower_start = np.where((count >= 1) & (last_e == seqlen_q), last_s, seqlen_q)
            lower_start = np.where((count == 1) & (s1 == 0), seqlen_q, lower_start)
            covered = (count == 0) | ((count == 1) & ((s1 == 0) | (e1 == seqlen_q)))
            covered |= (count == 2) & (s1 == 0) & (e2 == seqlen_q)
            if covered.all():
                return MaskSpec(np.stack([lower_start, upper_end], -1).astype(np.int32), False)
            # Four-bound form: the first run is the upper interval, the second the lower one.
            one = count == 1
            lts = np.where(count == 2, s2, np.where(one, s1, seqlen_q))
            lte = np.where(count == 2, e2, np.where(one, e1, seqlen_q))
            uts = np.where(count == 2, s1, 0)
            ute = np.where(count == 2, e1, 0)
            return MaskSpec(np.stack([lts, lte, uts, ute], -1).astype(np.int32), False)

    raise ValueError("from_dense: the mask has no column-wise form: " + "; ".join(errors))
