"""Context parallelism on 2 GPUs: the torch front end with NCCL, bfloat16, every case
of tests/distributed_cases.py (tests/gpu/distributed_cuda_worker.py, launched once
with `torch.distributed.run --nproc_per_node 2`). Skipped without 2 CUDA devices
(and, by tests/gpu/conftest.py, without the kernel library).

    python -m pytest -q tests/gpu/test_distributed_cuda.py
"""

import json
import os
import subprocess
import sys

import pytest

from tests.distributed_cases import CASE_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORLD_SIZE = 2
LAUNCH_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() < WORLD_SIZE:
        pytest.skip(f"needs {WORLD_SIZE} CUDA devices, found {torch.cuda.device_count()}")
    out_dir = tmp_path_factory.mktemp("cp_cuda")
    # NVLink SHARP (multicast) stays off: it is not available on every lent machine.
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD_SIZE),
           os.path.join(ROOT, "tests", "gpu", "distributed_cuda_worker.py"), str(out_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    files = [out_dir / f"rank{r}.json" for r in range(WORLD_SIZE)]
    if proc.returncode != 0 or not all(f.exists() for f in files):
        pytest.fail(f"launch failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [json.loads(f.read_text()) for f in files]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_matches_single_gpu_bf16(results, case):
    failures = [f"rank {r}: {f}" for r, res in enumerate(results) for f in res[case]["failures"]]
    assert not failures, "\n".join(failures)
