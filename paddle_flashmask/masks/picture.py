"""Pictures of masks for docs and debugging: text always, PNG through matplotlib."""

from __future__ import annotations

import numpy as np

ATTEND, MASKED = "#", "."


def _as_2d(allowed) -> np.ndarray:
    allowed = np.asarray(allowed, dtype=bool)
    while allowed.ndim > 2:
        allowed = allowed[0]
    return allowed


def render_text(allowed) -> str:
    """One line per query row: '#' attends, '.' masked. Takes [Sq, Sk] or [B, Hm, Sq, Sk] (first sequence, first head)."""
    return "\n".join("".join(ATTEND if a else MASKED for a in row) for row in _as_2d(allowed))


def save_png(allowed, path: str, title: str = "") -> None:
    """Writes the mask as a PNG (rows = queries, columns = keys). Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # optional dependency
        raise ImportError("save_png needs matplotlib: pip install matplotlib") from exc
    grid = _as_2d(allowed)
    fig, ax = plt.subplots(figsize=(3, 3 * grid.shape[0] / max(grid.shape[1], 1) + 0.4))
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.4, interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
