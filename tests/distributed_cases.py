"""The context-parallel correctness cases, shared by the CPU tests (Paddle and
torch, gloo) and the GPU test (torch, NCCL). NumPy only.

Every rank builds the same global tensors from a case's name, so no data is sent.
"""

import zlib
from types import SimpleNamespace

import numpy as np

from paddle_flashmask import distributed as cp
from paddle_flashmask import masks
from paddle_flashmask.distributed.plan import DEFAULT_ALIGN
from tests.random_bounds import BOUND_FORMS, random_bounds

HEADS, HEADS_K = 4, 2  # GQA in every case
SMALL_ALIGN = 4  # chunk boundaries of the short cases


def _cases():
    """(name, seqlen, batch, mask, causal, plan kind); mask: a MaskSpec, None, or a
    tuple naming generated bounds."""
    cases = []
    for causal, nb in BOUND_FORMS:
        for hm in (1, HEADS_K, HEADS):
            form = f"{'causal' if causal else 'noncausal'}-{nb}b-hm{hm}"
            cases.append((f"random-{form}", 61, 1, ("random", nb, hm), causal, "balanced"))
    for causal in (True, False):
        cases.append((f"nomask-{'causal' if causal else 'full'}", 48, 2, None, causal, "balanced"))
    cases += [
        ("causal_document-zigzag", 48, 1, masks.causal_document_mask([[9, 20, 19]]), None, "paddlenlp"),
        ("document-naive", 50, 2, masks.document_mask([[12, 25, 13], [30, 20]]), None, "naive"),
        ("share_question-balanced", 64, 1, masks.share_question_mask([[(10, [6, 8]), (12, [14, 14])]]), None, "balanced"),
        ("sliding_window-uneven", 53, 1, masks.sliding_window_mask(53, 7), None, "uneven"),
        # Rows of the last rank attend to nothing: its shard is fully masked.
        ("masked-last-rank", 45, 1, ("masked_last_rank",), False, "naive"),
        # Long enough for chunks of whole 128-row kernel tiles.
        ("causal_document-long", 1000, 1, masks.causal_document_mask([[300, 200, 500]]), None, "balanced-aligned"),
    ]
    return cases


CASES = _cases()
CASE_NAMES = [c[0] for c in CASES]


def _bounds(spec, seqlen, batch, causal, world_size, rng):
    if type(spec) is tuple and spec[0] == "random":  # (a MaskSpec is a NamedTuple)
        return random_bounds(rng, batch, spec[2], seqlen, seqlen, spec[1], causal)
    if type(spec) is tuple and spec[0] == "masked_last_rank":
        # non-causal 2 bounds (LTS, UTE): rows >= LTS masked in every column
        last_start = cp.naive_plan(seqlen, world_size).ranges[-1][0][0]
        return np.stack([np.full((batch, 1, seqlen), last_start), np.zeros((batch, 1, seqlen))], -1).astype(np.int32)
    return spec


def _plan(kind, spec, causal, align, world_size):
    seqlen = spec.shape[2] if isinstance(spec, np.ndarray) else spec.startend_row_indices.shape[2]
    if kind == "paddlenlp":
        return cp.paddlenlp_plan(seqlen, world_size)
    if kind == "naive":
        return cp.naive_plan(seqlen, world_size)
    if kind == "uneven":
        # rank r owns about (r+1) parts of the sequence: shards of different lengths
        parts = sum(range(1, world_size + 1))
        cuts = np.cumsum([0] + [seqlen * (r + 1) // parts for r in range(world_size)])
        cuts[-1] = seqlen
        return cp.from_ranges([[(int(cuts[r]), int(cuts[r + 1]))] for r in range(world_size)], seqlen, "uneven")
    return cp.balanced_plan(spec, world_size, causal=causal, align=align)


def _plans(kind, bounds, causal, seqlen, world_size):
    """The case's own plan, then every other candidate of the planner for its mask
    (naive, zigzag where seqlen allows, greedy-C where C chunks fit): each case runs
    on each, so every mask meets every kind of plan (one to many chunks per rank)."""
    align = DEFAULT_ALIGN if kind == "balanced-aligned" else SMALL_ALIGN
    spec, spec_causal = bounds, causal
    if bounds is None:
        spec, spec_causal = (masks.causal_mask(seqlen) if causal else masks.full_mask(seqlen)), None
    own = _plan(kind, spec, spec_causal, align, world_size)
    others = cp.candidate_plans(cp.row_work(spec, spec_causal), world_size, align)
    return [own] + [p for p in others if p.ranges != own.ranges]


def build(name, world_size, head_dim=16):
    """The case's global float32 q, k, v, dout, its bounds (array, MaskSpec or None),
    `causal` for the single-device API (False for a MaskSpec, which carries its own)
    and for the distributed one (None for a MaskSpec), its plan and `plans` (its plan
    first, then the planner's other candidates)."""
    _, seqlen, batch, spec, causal, kind = CASES[CASE_NAMES.index(name)]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    q = rng.standard_normal((batch, seqlen, HEADS, head_dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, seqlen, HEADS_K, head_dim)).astype(np.float32) for _ in range(2))
    dout = rng.standard_normal(q.shape).astype(np.float32)
    bounds = _bounds(spec, seqlen, batch, causal, world_size, rng)
    is_spec = isinstance(bounds, masks.MaskSpec)
    plans = _plans(kind, bounds, causal, seqlen, world_size)
    return SimpleNamespace(
        q=q, k=k, v=v, dout=dout, bounds=bounds,
        causal=False if is_spec else bool(causal),
        dist_causal=None if is_spec else causal,
        plan=plans[0], plans=plans,
    )


def relative_error(ours, ref):
    """max |ours - ref| / max(1, max |ref|), -inf LSEs compared as positions."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if not np.array_equal(np.isinf(ours), np.isinf(ref)):
        return float("inf")
    ours, ref = np.where(np.isinf(ours), 0.0, ours), np.where(np.isinf(ref), 0.0, ref)
    return float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max())))


def shard_errors(ours, ref, plan, rank):
    """Errors of a rank's {out, lse, dq, dk, dv} against the full sequence's."""
    return {key: relative_error(ours[key], plan.shard(ref[key], rank, axis=2 if key == "lse" else 1)) for key in ours}
