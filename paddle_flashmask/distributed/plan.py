"""The planner: which query rows (tokens) each rank of a context-parallel group owns.

Everything here is NumPy on the global mask bounds (O(seqlen) per batch and
mask head), so every rank computes the same plan without communicating.

Work is counted as unmasked (query, key) pairs per query row, summed over the
batch and mask heads (`row_work`). A plan gives each rank one or more global
row ranges ("chunks"); the candidates the planner compares, all with equal
token counts per rank (to within `align` rows per chunk), are

- `naive`: R contiguous equal-token shards;
- `zigzag`: PaddleNLP's load-balanced split, 2R equal chunks, rank r gets chunks
  r and 2R-1-r (`paddlenlp_plan`);
- `greedy-C` for C in CHUNKS_PER_RANK * R: C equal-token chunks, assigned
  largest work first to the least-loaded rank that still has room (each rank
  gets C/R chunks, so tokens stay balanced).

`balanced_plan` keeps the candidate with the fewest chunks whose work
imbalance (max/mean over ranks) is within IMBALANCE_SLACK of the best one.

A rank's chunks are kept in increasing order of their global rows, so the map
global row -> the rank's local row is monotone and `rank_bounds` rewrites the
global mask for all of a rank's rows at once (one attention call per rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks.dense import mask_arguments, normalized_bounds

WHERE = "paddle_flashmask.distributed"
# Chunk boundaries fall on multiples of this many rows where the sequence is
# long enough: the GPU kernels tile query rows by 128.
DEFAULT_ALIGN = 128
# Chunks per rank tried by the greedy candidates.
CHUNKS_PER_RANK = (2, 4, 8)
# A candidate with fewer chunks wins over the best one if its imbalance is at
# most this much larger (relative). (Chosen when each chunk cost a kernel call;
# kept so that plans, and the GPU measurements of them, stay comparable.)
IMBALANCE_SLACK = 0.01

Ranges = Tuple[Tuple[int, int], ...]


def explicit_bounds(startend_row_indices, causal: Optional[bool] = None) -> np.ndarray:
    """The mask as non-causal 4-bound int64 [B, Hm, S, 4] (LTS, LTE, UTS, UTE), square
    (seqlen_q == seqlen_k). causal's own rule (rows < j masked in column j) becomes the
    upper interval [0, j): a shard's rows are not the last rows of the sequence, so the
    kernels' bottom-right causal alignment cannot be used on a shard."""
    idx, causal = mask_arguments(startend_row_indices, causal, WHERE)
    seqlen = idx.shape[2]
    lts, lte, uts, ute = (np.clip(b, 0, seqlen) for b in normalized_bounds(idx, causal, seqlen))
    if causal:  # normalized_bounds leaves the upper interval empty for causal masks
        uts = np.zeros_like(lts)
        ute = np.broadcast_to(np.arange(seqlen, dtype=lts.dtype), lts.shape)
    return np.stack([lts, lte, uts, ute], axis=-1)


def rank_bounds(bounds4: np.ndarray, ranges: Sequence[Tuple[int, int]]) -> np.ndarray:
    """`explicit_bounds` rewritten for the query rows of `ranges` (increasing, disjoint
    global row ranges; their rows concatenated in that order are the local rows): int32.

    Global row p is local row count(own rows < p), a monotone map, so the own rows of a
    global interval [a, b) are exactly the local rows [count(own rows < a), count(own
    rows < b)). Every bound g becomes count(own rows < g): each column's (at most two)
    masked row intervals stay two intervals, now in local rows."""
    seqlen = bounds4.shape[2]
    own = np.zeros(seqlen, dtype=np.int64)
    previous_stop = 0
    for start, stop in ranges:
        if not previous_stop <= start < stop <= seqlen:
            raise ValueError(
                f"{WHERE}: a rank's row ranges must be non-empty, disjoint and in increasing order "
                f"within [0, {seqlen}), got {list(ranges)}"
            )
        own[start:stop] = 1
        previous_stop = stop
    below = np.concatenate([[0], np.cumsum(own)])  # below[g] = count(own rows < g)
    return below[np.clip(bounds4, 0, seqlen)].astype(np.int32)


def shard_bounds(bounds4: np.ndarray, start: int, stop: int) -> np.ndarray:
    """`rank_bounds` of the one row range [start, stop): rows relative to `start`,
    clipped to the shard."""
    return rank_bounds(bounds4, ((start, stop),))


def live_key_range(local_bounds: np.ndarray, rows: int) -> Tuple[int, int]:
    """[first, last + 1) of the key columns that some of `rows` query rows attends to
    (any batch, any mask head), from their `rank_bounds`; (0, 1) when they attend to
    none (a call still gives its rows 0 and an LSE of -inf)."""
    lts, lte, uts, ute = (local_bounds[..., i] for i in range(4))  # clipped to [0, rows]
    covered = (
        ((lts == 0) & (lte == rows))
        | ((uts == 0) & (ute == rows))
        | (
            (np.minimum(lts, uts) == 0)
            & (np.maximum(lte, ute) == rows)
            & (np.maximum(lts, uts) <= np.minimum(lte, ute))
        )
    )
    live = np.nonzero(~covered.all(axis=(0, 1)))[0]
    if live.size == 0:
        return 0, 1
    return int(live[0]), int(live[-1]) + 1


def row_work(startend_row_indices, causal: Optional[bool] = None) -> np.ndarray:
    """float64 [S]: unmasked keys of each query row, summed over batch and mask heads."""
    bounds4 = explicit_bounds(startend_row_indices, causal)
    batch, heads, seqlen, _ = bounds4.shape
    lts, lte, uts, ute = (bounds4[..., i].reshape(-1) for i in range(4))
    overlap_start, overlap_end = np.maximum(lts, uts), np.minimum(lte, ute)
    delta = np.zeros(seqlen + 1, dtype=np.int64)
    # Masked rows per row = |lower| + |upper| - |lower and upper|, by difference arrays.
    for starts, ends, sign in ((lts, lte, 1), (uts, ute, 1), (overlap_start, overlap_end, -1)):
        keep = starts < ends
        delta += sign * (
            np.bincount(starts[keep], minlength=seqlen + 1) - np.bincount(ends[keep], minlength=seqlen + 1)
        )
    masked = np.cumsum(delta)[:seqlen]
    return (batch * heads * seqlen - masked).astype(np.float64)


@dataclass(frozen=True)
class Plan:
    """Per rank, the global row ranges it owns, in increasing order: the order its
    tokens are stored in (`from_ranges` sorts them)."""

    seqlen: int
    ranges: Tuple[Ranges, ...]
    name: str = "custom"

    @property
    def world_size(self) -> int:
        return len(self.ranges)

    def positions(self, rank: int) -> np.ndarray:
        """Global positions of `rank`'s tokens, in its storage order."""
        return np.concatenate([np.arange(a, b) for a, b in self.ranges[rank]])

    def shard_lengths(self) -> Tuple[int, ...]:
        return tuple(sum(b - a for a, b in r) for r in self.ranges)

    @property
    def permutation(self) -> np.ndarray:
        """Global positions in rank order: `x[:, permutation]` lays tokens out rank after rank."""
        return np.concatenate([self.positions(r) for r in range(self.world_size)])

    @property
    def inverse_permutation(self) -> np.ndarray:
        """`y[:, inverse_permutation]` puts rank-ordered outputs back in sequence order."""
        return np.argsort(self.permutation, kind="stable")

    def shard(self, x, rank: int, axis: int = 1):
        """`rank`'s tokens of a full array/tensor `x` (sequence on `axis`)."""
        index = (slice(None),) * axis
        return _concat_along([x[index + (slice(a, b),)] for a, b in self.ranges[rank]], axis)

    def rank_work(self, work: np.ndarray) -> np.ndarray:
        prefix = np.concatenate([[0.0], np.cumsum(work)])
        return np.array([sum(prefix[b] - prefix[a] for a, b in r) for r in self.ranges])

    def imbalance(self, work: np.ndarray) -> float:
        """max/mean of the ranks' work (1.0 = perfect)."""
        per_rank = self.rank_work(work)
        mean = per_rank.mean()
        return float(per_rank.max() / mean) if mean > 0 else 1.0


def _concat_along(parts, axis: int):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=axis)
    module = type(parts[0]).__module__.split(".")[0]
    if module == "torch":
        import torch

        return torch.cat(parts, dim=axis)
    import paddle

    return paddle.concat(parts, axis=axis)


def from_ranges(ranges: Sequence[Sequence[Tuple[int, int]]], seqlen: int, name: str = "custom") -> Plan:
    """A plan from explicit per-rank row ranges; they must tile [0, seqlen) exactly
    and give every rank at least one row. A rank's ranges are sorted by their start
    (its tokens are stored in increasing global order) and adjacent ones merged."""
    seqlen = _args.integer(seqlen, "seqlen", WHERE, minimum=1)
    clean = []
    for rank, rank_ranges in enumerate(ranges):
        merged = []
        for a, b in sorted((int(a), int(b)) for a, b in rank_ranges):
            if not 0 <= a < b <= seqlen:
                raise ValueError(f"{WHERE}: `ranges[{rank}]` has range ({a}, {b}), not within [0, {seqlen}) or empty")
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        if not merged:
            raise ValueError(f"{WHERE}: `ranges[{rank}]` is empty: every rank must own at least one row")
        clean.append(tuple(merged))
    if not clean:
        raise ValueError(f"{WHERE}: `ranges` must name at least one rank")
    covered = np.zeros(seqlen, dtype=np.int64)
    for rank_ranges in clean:
        for a, b in rank_ranges:
            covered[a:b] += 1
    if not (covered == 1).all():
        row = int(np.argmax(covered != 1))
        raise ValueError(f"{WHERE}: `ranges` must cover each row of [0, {seqlen}) once; row {row} is covered {int(covered[row])} times")
    return Plan(seqlen, tuple(clean), name)


def _boundaries(seqlen: int, chunks: int, align: int) -> Optional[np.ndarray]:
    """`chunks`+1 boundaries of equal-token chunks on multiples of `align`; None if a
    chunk would be empty."""
    cuts = np.round(np.arange(chunks + 1) * seqlen / chunks / align).astype(np.int64) * align
    cuts[-1] = seqlen
    cuts = np.minimum(cuts, seqlen)
    return cuts if (np.diff(cuts) > 0).all() else None


def _check_world(seqlen, world_size) -> Tuple[int, int]:
    seqlen = _args.integer(seqlen, "seqlen", WHERE, minimum=1)
    world_size = _args.integer(world_size, "world_size", WHERE, minimum=1)
    if seqlen < world_size:
        raise ValueError(f"{WHERE}: `seqlen` ({seqlen}) must be at least `world_size` ({world_size})")
    return seqlen, world_size


def naive_plan(seqlen: int, world_size: int) -> Plan:
    """R contiguous shards of (nearly) equal token counts."""
    seqlen, world_size = _check_world(seqlen, world_size)
    cuts = _boundaries(seqlen, world_size, 1)
    return from_ranges([[(cuts[r], cuts[r + 1])] for r in range(world_size)], seqlen, "naive")


def paddlenlp_plan(seqlen: int, world_size: int) -> Plan:
    """PaddleNLP's `split_inputs_sequence_dim_load_balance` (context parallel): the
    sequence in 2R equal chunks, rank r holds chunk r then chunk 2R-1-r."""
    seqlen, world_size = _check_world(seqlen, world_size)
    chunks = 2 * world_size
    if seqlen % chunks:
        raise ValueError(
            f"{WHERE}: PaddleNLP's load-balanced split needs `seqlen` ({seqlen}) divisible by 2 * world_size ({chunks})"
        )
    size = seqlen // chunks
    ranges = [[(r * size, (r + 1) * size), ((chunks - 1 - r) * size, (chunks - r) * size)] for r in range(world_size)]
    return from_ranges(ranges, seqlen, "zigzag")


def _greedy_plan(work: np.ndarray, world_size: int, chunks: int, align: int) -> Optional[Plan]:
    cuts = _boundaries(len(work), chunks, align)
    if cuts is None:
        return None
    prefix = np.concatenate([[0.0], np.cumsum(work)])
    chunk_work = prefix[cuts[1:]] - prefix[cuts[:-1]]
    per_rank = chunks // world_size
    load = np.zeros(world_size)
    owned = [[] for _ in range(world_size)]
    for c in np.argsort(-chunk_work, kind="stable"):
        open_ranks = [r for r in range(world_size) if len(owned[r]) < per_rank]
        rank = min(open_ranks, key=lambda r: (load[r], r))
        owned[rank].append(int(c))
        load[rank] += chunk_work[c]
    ranges = [[(int(cuts[c]), int(cuts[c + 1])) for c in sorted(o)] for o in owned]
    return from_ranges(ranges, len(work), f"greedy-{chunks}")


def candidate_plans(work: np.ndarray, world_size: int, align: int = DEFAULT_ALIGN) -> list:
    """Every plan `balanced_plan` chooses from, for a row-work profile."""
    seqlen, world_size = _check_world(len(work), world_size)
    align = _args.integer(align, "align", WHERE, minimum=1)
    plans = [naive_plan(seqlen, world_size)]
    if seqlen % (2 * world_size) == 0:
        plans.append(paddlenlp_plan(seqlen, world_size))
    for per_rank in CHUNKS_PER_RANK:
        plan = _greedy_plan(work, world_size, per_rank * world_size, align)
        if plan is not None:
            plans.append(plan)
    return plans


def _chunk_count(plan: Plan) -> int:
    return max(len(r) for r in plan.ranges)


def balanced_plan(
    startend_row_indices, world_size: int, causal: Optional[bool] = None, align: int = DEFAULT_ALIGN
) -> Plan:
    """The plan of least work imbalance for this mask (a MaskSpec, or global bounds
    with `causal`), preferring fewer chunks per rank within IMBALANCE_SLACK."""
    work = row_work(startend_row_indices, causal)
    plans = candidate_plans(work, world_size, align)
    scores = [p.imbalance(work) for p in plans]
    best = min(scores)
    good = [p for p, s in zip(plans, scores) if s <= best * (1.0 + IMBALANCE_SLACK)]
    return min(good, key=_chunk_count)
