"""What a fine-tuning run reports: per-step losses and times, throughput, peak memory.

A PaddleNLP TrainerCallback. At the end the example scripts call `finish()`:
the summary becomes their last stdout line (one JSON object), and the summary
with every step's loss and wall time goes to <output_dir>/run_report.json
(the e2e benchmark reads step times from there).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List

import paddle
from paddlenlp.trainer import TrainerCallback


REPORT_FILE = "run_report.json"


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by Paddle on GPU; on CPU the process's peak resident set."""
    if paddle.device.is_compiled_with_cuda() and paddle.get_device().startswith("gpu"):
        return paddle.device.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunReport(TrainerCallback):
    """Collects the loss of every step (needs logging_steps=1) and every step's wall time."""

    def __init__(self, task: str, flashmask: bool, tokens_per_step: int):
        self.task = task
        self.flashmask = flashmask
        # Sequence positions per optimizer step (batch x max_seq_len, padding
        # included), as PaddleNLP counts tokens for its throughput logs.
        self.tokens_per_step = tokens_per_step
        self.losses: List[float] = []
        self.step_seconds: List[float] = []
        self._step_start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._step_start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def summary(self) -> Dict:
        seconds = sum(self.step_seconds)
        return {
            "task": self.task,
            "flashmask": self.flashmask,
            "steps": len(self.step_seconds),
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": self.losses[-1] if self.losses else None,
            "tokens_per_s": round(self.tokens_per_step * len(self.step_seconds) / seconds, 1) if seconds else None,
            "peak_mem_mb": round(peak_memory_mb(), 1),
        }

    def finish(self, output_dir: str) -> None:
        """Writes run_report.json, then prints the summary as the last stdout line."""
        summary = self.summary()
        details = dict(summary, losses=self.losses, step_seconds=self.step_seconds)
        (Path(output_dir) / REPORT_FILE).write_text(json.dumps(details, indent=1) + "\n")
        sys.stdout.flush()
        print(json.dumps(summary), flush=True)


def parse_summary(stdout: str) -> Dict:
    """The summary a run printed (its last stdout line)."""
    return json.loads(stdout.strip().splitlines()[-1])
