"""The example scripts end to end: a short run of each task lowers the loss,
and `--flashmask` reproduces the dense run's losses step for step."""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests import examples_path  # noqa: F401  (examples/common importable as `common`)
from common.run_report import parse_summary  # noqa: E402
from tests.launch_tries import run_with_retries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHORT_RUN = ["--max_steps", "8", "--max_seq_len", "256", "--warmup_steps", "1"]
SUMMARY_KEYS = {"task", "flashmask", "steps", "first_loss", "final_loss", "tokens_per_s", "peak_mem_mb"}


def _run_once(script: str, args: tuple, processes: int):
    """One run: (its last stdout line (rank 0's) or None, what it printed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as output_dir:
        launch = []
        if processes > 1:
            launch = ["-m", "paddle.distributed.launch", "--nproc_per_node", str(processes), "--log_dir", f"{output_dir}/log"]
        completed = subprocess.run(
            [sys.executable, *launch, str(REPO / "examples" / script), *SHORT_RUN, "--output_dir", output_dir, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        logs = sorted(Path(output_dir, "log").glob("workerlog.*"))
        stdout = completed.stdout if processes == 1 else logs[0].read_text()
        printed = completed.stderr[-4000:] + "".join(f"\n--- {p.name}:\n{p.read_text()[-3000:]}" for p in logs)
    if completed.returncode != 0:
        return None, printed + stdout[-4000:]
    return stdout, printed


def run_example(script: str, *args: str, processes: int = 1) -> dict:
    """Runs an example from a fresh process (or `processes` of them under
    paddle.distributed.launch, with retries: tests/launch_tries.py);
    returns its last stdout line (rank 0's), parsed."""
    if processes == 1:
        stdout, printed = _run_once(script, args, processes)
    else:
        stdout, printed = run_with_retries(lambda _: _run_once(script, args, processes), f"{script} on {processes} ranks")
    if stdout is None:
        raise AssertionError(f"{script} {args} failed:\n{printed}")
    return parse_summary(stdout)


class TestExamples(unittest.TestCase):
    def _check(self, script, task, *args):
        flash = run_example(script, *args, "--flashmask")
        dense = run_example(script, *args)
        self.assertEqual(set(flash), SUMMARY_KEYS)
        self.assertEqual((flash["task"], flash["flashmask"], flash["steps"]), (task, True, 8))
        self.assertEqual((dense["task"], dense["flashmask"]), (task, False))
        self.assertLess(flash["final_loss"], flash["first_loss"])
        self.assertAlmostEqual(flash["first_loss"], dense["first_loss"], delta=1e-5 * abs(dense["first_loss"]))
        self.assertAlmostEqual(flash["final_loss"], dense["final_loss"], delta=1e-4 * abs(dense["final_loss"]))
        self.assertGreater(flash["tokens_per_s"], 0)
        self.assertGreater(flash["peak_mem_mb"], 0)

    def test_sft(self):
        self._check("sft_lora/train.py", "sft")

    def test_lora(self):
        self._check("sft_lora/train.py", "lora", "--lora")

    def test_sft_context_parallel(self):
        """Two processes sharing each sequence (PaddleNLP's context parallelism, gloo)
        give the one-process run's losses on the same batches."""
        args = ("sft_lora/train.py", "--flashmask", "--distributed_sampler")
        parallel = run_example(*args, "--context_parallel_degree", "2", processes=2)
        single = run_example(*args)
        self.assertEqual(parallel["steps"], 8)
        self.assertAlmostEqual(parallel["first_loss"], single["first_loss"], delta=1e-5 * abs(single["first_loss"]))
        self.assertAlmostEqual(parallel["final_loss"], single["final_loss"], delta=1e-5 * abs(single["final_loss"]))

    def test_dpo(self):
        self._check("dpo_rm/train.py", "dpo", "--mode", "dpo")

    def test_rm(self):
        self._check("dpo_rm/train.py", "rm", "--mode", "rm")


if __name__ == "__main__":
    unittest.main()
