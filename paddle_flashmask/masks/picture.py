"""Pictures of masks for docs and debugging: text always, PNG through matplotlib."""

from __future__ import annotations

import os

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks.dense import as_allowed, to_dense
from paddle_flashmask.masks.spec import MaskSpec

ATTEND, MASKED = "#", "."


def _as_2d(allowed, where: str) -> np.ndarray:
    """The first sequence's first head of a MaskSpec or of a dense mask."""
    allowed = to_dense(allowed) if isinstance(allowed, MaskSpec) else as_allowed(allowed, where)
    return allowed if allowed.ndim == 2 else allowed[0, 0]


def render_text(allowed) -> str:
    """One line per query row: '#' attends, '.' masked. Takes a MaskSpec, or a dense
    mask [Sq, Sk] or [B, Hm, Sq, Sk] (first sequence, first head)."""
    return "\n".join("".join(ATTEND if a else MASKED for a in row) for row in _as_2d(allowed, "render_text"))


def save_png(allowed, path, title: str = "") -> None:
    """Writes the mask (what render_text takes) as a PNG (rows = queries,
    columns = keys). Needs matplotlib."""
    grid = _as_2d(allowed, "save_png")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_png: `path` must be a str or os.PathLike, got {_args.describe(path)}")
    title = _args.string(title, "title", "save_png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # optional dependency
        raise ImportError("save_png needs matplotlib: pip install matplotlib") from exc
    fig, ax = plt.subplots(figsize=(3, 3 * grid.shape[0] / max(grid.shape[1], 1) + 0.4))
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.4, interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
