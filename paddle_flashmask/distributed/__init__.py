"""Context parallelism: FlashMask attention over a sequence split across ranks.

    from paddle_flashmask import distributed as cp
    plan = cp.balanced_plan(spec, world_size)           # same on every rank, no communication
    q_r, k_r, v_r = (plan.shard(t, rank) for t in (q, k, v))
    out_r = cp.flashmask_attention(q_r, k_r, v_r, spec, plan=plan)              # Paddle
    out_r = cp.torch_flashmask_attention(q_r, k_r, v_r, spec, plan=plan)        # torch (CUDA)

The planner and the core are NumPy only; the Paddle front end
(`flashmask_attention`) and the torch one (`torch_flashmask_attention`) are
imported on first use. See docs/distributed.md.
"""

import importlib

from paddle_flashmask.distributed.core import RankLayout, RankMask, prepare_mask, rank_layout
from paddle_flashmask.distributed.plan import (
    Plan,
    balanced_plan,
    candidate_plans,
    explicit_bounds,
    from_ranges,
    live_key_range,
    naive_plan,
    paddlenlp_plan,
    rank_bounds,
    row_work,
    shard_bounds,
)

_FRONT_ENDS = {
    "flashmask_attention": ("paddle_flashmask.distributed.paddle_frontend", "flashmask_attention"),
    "torch_flashmask_attention": ("paddle_flashmask.distributed.torch_frontend", "flashmask_attention"),
}

__all__ = [
    "Plan",
    "RankLayout",
    "RankMask",
    "balanced_plan",
    "candidate_plans",
    "explicit_bounds",
    "from_ranges",
    "live_key_range",
    "naive_plan",
    "paddlenlp_plan",
    "prepare_mask",
    "rank_bounds",
    "rank_layout",
    "row_work",
    "shard_bounds",
    *_FRONT_ENDS,
]


def __getattr__(name):
    if name in _FRONT_ENDS:
        module, attr = _FRONT_ENDS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'paddle_flashmask.distributed' has no attribute {name!r}")
