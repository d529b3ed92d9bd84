"""How the GPU suites (tests/gpu, tests/gpu_paddle) skip: their conftests' one rule."""

import os
import pathlib

import pytest


def skip_unless_ready(items, conftest_file: str, skip_reason, require_var: str) -> None:
    """Marks the session's items under conftest_file's folder skipped with skip_reason() (None:
    they run), or fails the session when the environment variable require_var is "1" (the GPU
    runs set it, so that a run cannot pass with nothing tested). The hook sees the whole
    session's items, so only the folder's are marked (a prefix test on the path string would
    take tests/gpu_paddle's for tests/gpu's)."""
    here = pathlib.Path(conftest_file).resolve().parent
    mine = [item for item in items if pathlib.Path(str(item.fspath)).resolve().is_relative_to(here)]
    if not mine:
        return
    reason = skip_reason()
    if reason is None:
        return
    if os.environ.get(require_var) == "1":
        raise RuntimeError(f"{require_var}=1 but {reason}")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason))
