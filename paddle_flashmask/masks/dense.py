"""Between the column-wise form and dense boolean masks.

`to_dense` is the NumPy statement of the mask semantics in
csrc/include/flashmask/mask.h; the reference attention and every test build
their dense masks through it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from paddle_flashmask.masks.spec import BLOCK_MASK_SIZE, MaskSpec, check_bound_count


def normalized_bounds(startend_row_indices, causal: bool, seqlen_q: int):
    """Returns (lts, lte, uts, ute), each [B, Hm, Sk]: masked rows are [lts, lte) and [uts, ute)."""
    idx = np.asarray(startend_row_indices).astype(np.int64)
    if idx.ndim != 4:
        raise ValueError(
            "startend_row_indices must be 4-D [batch, num_mask_heads, seqlen_k, num_bounds], "
            f"got shape {list(idx.shape)}"
        )
    num_bounds = idx.shape[-1]
    check_bound_count(num_bounds, causal)
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
    causal: bool,
    seqlen_q: Optional[int] = None,
    block_mask=None,
) -> np.ndarray:
    """Dense mask of a column-wise one: bool [B, Hm, Sq, Sk], True where the query attends.

    `seqlen_q` defaults to seqlen_k. `block_mask` (int [B, Hm, ceil(Sq/128),
    ceil(Sk/128)], 1 = keep) removes whole 128x128 blocks on top of the bounds.
    """
    idx = np.asarray(startend_row_indices)
    seqlen_k = idx.shape[2]
    seqlen_q = seqlen_k if seqlen_q is None else int(seqlen_q)
    lts, lte, uts, ute = (b[:, :, None, :] for b in normalized_bounds(idx, causal, seqlen_q))
    rows = np.arange(seqlen_q)[:, None]
    cols = np.arange(seqlen_k)[None, :]
    masked = ((rows >= lts) & (rows < lte)) | ((rows >= uts) & (rows < ute))
    if causal:
        masked = masked | (cols > rows + (seqlen_k - seqlen_q))
    allowed = ~masked
    if block_mask is not None:
        keep = np.asarray(block_mask).astype(bool)
        keep = np.repeat(np.repeat(keep, BLOCK_MASK_SIZE, axis=2), BLOCK_MASK_SIZE, axis=3)
        allowed = allowed & keep[:, :, :seqlen_q, :seqlen_k]
    return allowed


def expand_mask_heads(mask: np.ndarray, num_heads: int, num_heads_k: int) -> np.ndarray:
    """[B, Hm, ...] -> [B, num_heads, ...] following the API's head rule (Hm in 1, Hk, H)."""
    num_mask_heads = mask.shape[1]
    if num_mask_heads == num_heads:
        return mask
    if num_mask_heads == 1:
        return np.broadcast_to(mask, (mask.shape[0], num_heads) + mask.shape[2:])
    if num_mask_heads == num_heads_k:
        return np.repeat(mask, num_heads // num_heads_k, axis=1)
    raise ValueError(
        f"mask has {num_mask_heads} heads; expected 1, num_heads_k={num_heads_k} "
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
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.ndim == 2:
        allowed = allowed[None, None]
    if allowed.ndim != 4:
        raise ValueError(
            f"from_dense: `allowed` must be [Sq, Sk] or [B, Hm, Sq, Sk], got shape {list(allowed.shape)}"
        )
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
