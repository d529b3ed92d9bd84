"""FlashAttention-3's tolerance rule for low-precision kernels, shared by the GPU tests
of the torch binding (tests/gpu) and of the Paddle op (tests/gpu_paddle).

A kernel's error against a float32/float64 reference may be at most `factor` times
that of a plain low-precision computation of the same function (plus a hair for
cases the low-precision one gets exactly right). NaN and inf never pass.
"""

from __future__ import annotations

import numpy as np

FACTOR = 2.0


def assert_close_fa(name, ours, ref, lowp, factor=FACTOR):
    """ours, ref, lowp: array-likes of one shape. Returns (our error, low-precision error)."""
    ours, ref, lowp = (np.asarray(x, dtype=np.float64) for x in (ours, ref, lowp))
    assert ours.shape == ref.shape == lowp.shape, f"{name}: shapes {ours.shape} {ref.shape} {lowp.shape}"
    assert not np.isnan(ours).any(), f"{name}: NaN in output"
    assert np.isfinite(ours).all(), f"{name}: inf in output"
    if ours.size == 0:
        return 0.0, 0.0
    err = float(np.abs(ours - ref).max())
    lowp_err = float(np.abs(lowp - ref).max())
    scale = float(np.abs(ref).max())
    tol = factor * lowp_err + 1e-4 * max(scale, 1e-3) + 1e-5
    assert err <= tol, (
        f"{name}: max err {err:.3e} > tol {tol:.3e} (low-precision computation's err {lowp_err:.3e})"
    )
    return err, lowp_err
