#!/usr/bin/env python3
"""End-to-end fine-tuning cost with and without FlashMask: step time and peak memory.

Runs each example task (SFT, LoRA, DPO, RM) at each sequence length twice,
with --flashmask (startend_row_indices through paddle_flashmask) and without
(the same packed batches with a dense [S, S] mask), each run in a fresh
process so that its peak memory is its own. Batch size 1, one packed sequence
of `seq_len` tokens per step. Writes a Markdown table and the raw summaries:

    python benchmarks/bench_e2e.py                      # CPU, tiny Llama -> results/e2e.{md,json}
    python benchmarks/bench_e2e.py --model_name_or_path /path/to/llama \\
        --extra "--model_dtype bfloat16" --seq_lens 2048,4096,8192,16384 --output benchmarks/results/e2e_gpu

Step time is the median over the run's steps after the first (warm-up); peak
memory is the process's peak resident set on CPU and Paddle's peak allocated
memory on GPU (see examples/common/run_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))  # the examples' shared harness, examples/common

from common.run_report import REPORT_FILE  # noqa: E402

TASKS = {
    "sft": ("sft_lora/train.py", []),
    "lora": ("sft_lora/train.py", ["--lora"]),
    "dpo": ("dpo_rm/train.py", ["--mode", "dpo"]),
    "rm": ("dpo_rm/train.py", ["--mode", "rm"]),
}


def run(task: str, seq_len: int, flashmask: bool, options) -> dict:
    script, task_args = TASKS[task]
    command = [sys.executable, str(ROOT / "examples" / script), *task_args]
    command += ["--max_seq_len", str(seq_len), "--per_device_train_batch_size", "1"]
    command += ["--max_steps", str(options.steps), "--warmup_steps", "0", "--flashmask", str(flashmask)]
    output_dir = ROOT / "output" / "bench_e2e" / f"{task}_{seq_len}_{flashmask}"
    command += ["--output_dir", str(output_dir)]
    if options.model_name_or_path:
        command += ["--model_name_or_path", options.model_name_or_path]
    command += shlex.split(options.extra)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if completed.returncode != 0:  # e.g. out of memory: report it, go on with the other runs
        error = (completed.stderr.strip().splitlines() or ["failed"])[-1]
        return {"task": task, "flashmask": flashmask, "seq_len": seq_len, "error": error[:200]}
    report = json.loads((output_dir / REPORT_FILE).read_text())
    step_seconds = report.pop("step_seconds")
    del report["losses"]
    report["seq_len"] = seq_len
    report["step_time_s"] = round(statistics.median(step_seconds[1:] or step_seconds), 4)
    return report


def _cell(result: dict, key: str, baseline: dict = None) -> str:
    if "error" in result:
        return "failed"
    value = result[key]
    if baseline is None or "error" in baseline:
        return f"{value:g}"
    return f"{value:g} (+{value - baseline[key]:.0f})"


def markdown_table(results: list, device: str) -> str:
    by_key = {(r["task"], r["seq_len"], r["flashmask"]): r for r in results}
    lines = [
        f"# End-to-end fine-tuning, FlashMask vs dense mask ({device})",
        "",
        "Batch 1, one packed sequence per step; s/step is the median over the steps after the first.",
        "Peak memory in MB, with its growth over the shortest length in parentheses:",
        "linear in seq_len with FlashMask, quadratic with the dense mask.",
        "",
        "| task | seq_len | FlashMask s/step | dense s/step | speed-up | FlashMask peak MB | dense peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    seq_lens = sorted({r["seq_len"] for r in results})
    for task in TASKS:
        for seq_len in seq_lens:
            flash, dense = by_key.get((task, seq_len, True)), by_key.get((task, seq_len, False))
            if flash is None or dense is None:
                continue
            ok = "error" not in flash and "error" not in dense
            speedup = f"{dense['step_time_s'] / flash['step_time_s']:.1f}x" if ok else "-"
            lines.append(
                f"| {task} | {seq_len} | {_cell(flash, 'step_time_s')} | {_cell(dense, 'step_time_s')} | {speedup} "
                f"| {_cell(flash, 'peak_mem_mb', by_key[(task, seq_lens[0], True)])} "
                f"| {_cell(dense, 'peak_mem_mb', by_key[(task, seq_lens[0], False)])} |"
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, from sft,lora,dpo,rm")
    parser.add_argument("--seq_lens", default="1024,2048,4096,8192")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--model_name_or_path", default=None, help="a real checkpoint (GPU); default: tiny Llama")
    parser.add_argument("--extra", default="", help="more flags for the example scripts")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "e2e"), help="path prefix")
    options = parser.parse_args()

    import paddle

    device = "GPU" if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() else "CPU"
    model = options.model_name_or_path or "tiny Llama: hidden 64, 2 layers, 4 heads / 2 KV heads"
    device = f"{device}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {model}"
    results = []
    for task in options.tasks.split(","):
        for seq_len in (int(n) for n in options.seq_lens.split(",")):
            for flashmask in (True, False):
                results.append(run(task, seq_len, flashmask, options))
                print(json.dumps(results[-1]), flush=True)

    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"device": device, "results": results}, indent=1) + "\n")
    table = markdown_table(results, device)
    output.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
