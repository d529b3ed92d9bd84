"""Context parallelism on CPU: 2 and 3 gloo processes against one process.

Per front end and world size (Paddle: 2 and 3 ranks, torch: 2), the ranks are launched once per module (Paddle:
`paddle.distributed.launch` running tests/distributed_worker.py; torch:
`torch.distributed.run` running tests/distributed_torch_worker.py) and go
through every case of tests/distributed_cases.py; the tests then check each
case on every rank. Skipped where multi-process gloo cannot start; a case that
raises or mismatches fails.
"""

import importlib.util
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from paddle_flashmask import distributed as cp
from paddle_flashmask.distributed.plan import IMBALANCE_SLACK
from paddle_flashmask import masks
from paddle_flashmask.masks import to_dense
from tests.distributed_cases import CASE_NAMES
from tests.random_bounds import BOUND_FORMS, random_bounds
from tests.launch_tries import run_with_retries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD_SIZES = (2, 3)
LAUNCHERS = {
    "paddle": (["-m", "paddle.distributed.launch", "--nproc_per_node"], "distributed_worker.py"),
    "torch": (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"], "distributed_torch_worker.py"),
}
LAUNCH_TIMEOUT_S = 240
# float32 roundoff (relative to the largest value): a rank's keys start where its
# rows' first live key is, and its rows are not the sequence's, so key and row tiles,
# and the order of the sums, shift (errors seen over every case and plan: out, lse,
# dq <= 3.5e-7); dK/dV are also summed over ranks (<= 1.3e-6).
TOLERANCE = {"out": 2e-6, "lse": 2e-6, "dq": 2e-6, "dk": 1e-5, "dv": 1e-5}
# What a machine that cannot start multi-process gloo says (then the tests skip).
_GLOO_START_FAILURES = ("enforcenotmet", "connection refused", "address already in use", "cannot assign requested address")


def _run_ranks(framework, world_size, out_dir, worker):
    """Runs the ranks once: (rank results or None, logs)."""
    launcher, _ = LAUNCHERS[framework]
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_args = ["--log_dir", str(out_dir / "log")] if framework == "paddle" else []
    cmd = [sys.executable, *launcher, str(world_size), *log_args, os.path.join(ROOT, "tests", worker), str(out_dir)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{world_size} {framework} ranks did not finish in {LAUNCH_TIMEOUT_S} s (a rank hung in a collective?)")
    files = [out_dir / f"rank{r}.json" for r in range(world_size)]
    if proc.returncode == 0 and all(f.exists() for f in files):
        return [json.loads(f.read_text()) for f in files], ""
    logs = f"rc {proc.returncode}:\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    logs += "".join(p.read_text()[-2000:] for p in sorted((out_dir / "log").glob("*")) if p.is_file())
    return None, logs


def _launch(framework, world_size, out_dir, worker=None):
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    worker = worker or LAUNCHERS[framework][1]
    results, logs = run_with_retries(
        lambda attempt: _run_ranks(framework, world_size, out_dir / f"try{attempt}", worker),
        f"{framework} launch of {world_size} ranks",
    )
    if results is not None:
        return results
    ours_failed = "paddle_flashmask" in logs or "/tests/" in logs  # a traceback through our code
    if not ours_failed and any(s in logs.lower() for s in _GLOO_START_FAILURES):
        pytest.skip(f"multi-process gloo could not start:\n{logs[-1000:]}")
    pytest.fail(f"{framework} launch failed every try; the last one, {logs}")


# The torch front end shares every step with Paddle's but its collectives: 2 ranks suffice.
LAUNCHES = [("paddle", 2), ("paddle", 3), ("torch", 2)]


@pytest.fixture(
    scope="module",
    params=LAUNCHES,
    ids=lambda p: f"{p[0]}-{p[1]}ranks",
)
def results(request, tmp_path_factory):
    framework, world_size = request.param
    return _launch(framework, world_size, tmp_path_factory.mktemp(f"{framework}{world_size}"))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_matches_single_process(results, case):
    """Every plan of the case (its own, then the planner's other candidates: naive,
    zigzag, greedy-C) on every rank."""
    failures = []
    for rank, per_case in enumerate(results):
        result = per_case[case]
        if "error" in result:
            failures.append(f"rank {rank}: raised\n{result['error']}")
            continue
        assert len(result["plans"]) >= 2, result  # the case's plan and at least the naive split
        for plan, errors in result["plans"].items():
            for key, err in errors.items():
                if not err <= TOLERANCE[key]:
                    failures.append(f"rank {rank} ({plan}): {key} rel. error {err:.2e} > {TOLERANCE[key]:.0e}")
    assert not failures, "\n".join(failures)


def test_gpu_worker_dry_run_on_cpu(results):
    """The 2-GPU test's worker (tests/gpu/distributed_cuda_worker.py: bf16, every case
    and plan, FlashAttention's rule) runs on CPU with a dense stand-in for the kernels."""
    if "gpu_worker_dry_run" not in results[0]:
        pytest.skip("run by the torch launch")
    failures = [f"rank {r} {case}: {f}" for r, res in enumerate(results)
                for case, fs in res["gpu_worker_dry_run"].items() for f in fs]
    assert sorted(results[0]["gpu_worker_dry_run"]) == sorted(CASE_NAMES)
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def paddlenlp_results(tmp_path_factory):
    pytest.importorskip("paddlenlp")
    return _launch("paddle", 2, tmp_path_factory.mktemp("paddlenlp2"), "distributed_paddlenlp_worker.py")


def test_paddlenlp_context_parallel_routing(paddlenlp_results):
    """A tiny Llama with context_parallel_degree=2 (fleet's sep group, PaddleNLP's
    load-balanced shards) gives one process's loss and weight gradients; the sep
    routing (all-to-all replaced by an all-gather: gloo has no all-to-all) gives
    the op's output."""
    for rank, result in enumerate(paddlenlp_results):
        assert result["grads"] > 0
        assert abs(result["loss"] - result["loss_ref"]) <= 1e-6 * abs(result["loss_ref"]), (rank, result)
        assert result["max_grad_error"] <= 1e-5, (rank, result)
        assert "context_parallel_degree=1" in result["refused"], (rank, result)
        assert result["sep_error"] <= 1e-6, (rank, result)  # sep routing, forward


# The planner and bound rewriting alone (NumPy, one process).

PLANNER_MASKS = {
    "causal_document": masks.causal_document_mask([[5, 17, 9, 33]]),
    "document": masks.document_mask([[12, 40, 12]]),
    "share_question": masks.share_question_mask([[(8, [10, 6]), (20, [12, 8])]]),
    "sliding_window": masks.sliding_window_mask(64, 9),
    "prefix_lm": masks.prefix_lm_causal_mask(64, 20),
}


@pytest.mark.parametrize("name", sorted(PLANNER_MASKS))
def test_row_work_and_explicit_bounds_match_dense(name):
    spec = PLANNER_MASKS[name]
    dense = to_dense(spec)
    assert np.array_equal(cp.row_work(spec), dense.sum(axis=(0, 1, 3)))
    bounds4 = cp.explicit_bounds(spec)
    assert np.array_equal(to_dense(bounds4, False), dense)
    for start, stop in ((0, 64), (7, 30), (50, 64)):
        shard = cp.shard_bounds(bounds4, start, stop)
        assert shard.dtype == np.int32
        rows = dense[:, :, start:stop]
        assert np.array_equal(to_dense(shard, False, seqlen_q=stop - start), rows)
        first, last = cp.live_key_range(shard, stop - start)
        live = np.nonzero(rows.any(axis=(0, 1, 2)))[0]
        assert (first, last) == ((live[0], live[-1] + 1) if live.size else (0, 1))


# Odd sizes: chunk edges and bounds fall anywhere, not on tiles.
REMAP_SEQLEN = 61
REMAP_MASKS = {
    "causal": masks.causal_mask(REMAP_SEQLEN),
    "causal_document": masks.causal_document_mask([[5, 18, 9, 29], [30, 31]]),
    "document": masks.document_mask([[12, 37, 12]]),
    "share_question": masks.share_question_mask([[(8, [10, 6]), (20, [12, 5])]]),
    "sliding_window": masks.sliding_window_mask(REMAP_SEQLEN, 9),
    "prefix_lm": masks.prefix_lm_causal_mask(REMAP_SEQLEN, 20),
    **{
        f"random-{'causal' if causal else 'noncausal'}-{nb}b": (causal, nb)
        for causal, nb in BOUND_FORMS
    },
}


def _remap_mask(name, rng):
    """(mask for explicit_bounds, its causal flag): a MaskSpec, or random bounds of
    every form (2 batches, 3 mask heads, values outside [0, seqlen] too)."""
    mask = REMAP_MASKS[name]
    if isinstance(mask, masks.MaskSpec):
        return mask, None
    causal, nb = mask
    return random_bounds(rng, 2, 3, REMAP_SEQLEN, REMAP_SEQLEN, nb, causal), causal


@pytest.mark.parametrize("trial", range(4))
@pytest.mark.parametrize("name", sorted(REMAP_MASKS))
def test_rank_bounds_equal_the_global_mask_on_the_ranks_rows(name, trial):
    """The one-call remap: rows of a random set of chunks (random, odd edges), kept in
    increasing order; the rewritten bounds' dense mask is the global dense mask
    restricted to those rows, and the live key range is that of those rows."""
    rng = np.random.default_rng(zlib.crc32(f"{name}-{trial}".encode()))
    mask, causal = _remap_mask(name, rng)
    dense = to_dense(mask, causal)
    cuts = np.unique(np.concatenate([[0, REMAP_SEQLEN], rng.integers(1, REMAP_SEQLEN, size=rng.integers(1, 12))]))
    chunks = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
    keep = rng.random(len(chunks)) < 0.5
    keep[rng.integers(len(chunks))] = True  # at least one chunk
    ranges = [c for c, k in zip(chunks, keep) if k]
    rows = np.concatenate([np.arange(a, b) for a, b in ranges])
    local = cp.rank_bounds(cp.explicit_bounds(mask, causal), ranges)
    assert local.dtype == np.int32 and local.min() >= 0 and local.max() <= len(rows)
    restricted = dense[:, :, rows]
    assert np.array_equal(to_dense(local, False, seqlen_q=len(rows)), restricted)
    first, last = cp.live_key_range(local, len(rows))
    live = np.nonzero(restricted.any(axis=(0, 1, 2)))[0]
    assert (first, last) == ((live[0], live[-1] + 1) if live.size else (0, 1))


@pytest.mark.parametrize("ranges", [[(10, 20), (0, 5)], [(0, 10), (5, 20)], [(3, 3)], [(0, 70)]])
def test_rank_bounds_refuses_unordered_or_bad_ranges(ranges):
    bounds4 = cp.explicit_bounds(masks.causal_mask(64))
    with pytest.raises(ValueError, match="increasing order"):
        cp.rank_bounds(bounds4, ranges)


def test_from_ranges_stores_a_ranks_ranges_in_increasing_order():
    plan = cp.from_ranges([[(12, 16), (0, 4)], [(8, 12), (4, 8)]], 16)
    assert plan.ranges == (((0, 4), (12, 16)), ((4, 12),))
    assert np.array_equal(plan.positions(0), [0, 1, 2, 3, 12, 13, 14, 15])


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("name", sorted(PLANNER_MASKS))
def test_balanced_plan_tiles_the_sequence_and_beats_naive(name, world_size):
    spec = PLANNER_MASKS[name]
    work = cp.row_work(spec)
    plan = cp.balanced_plan(spec, world_size, align=4)
    assert np.array_equal(np.sort(plan.permutation), np.arange(64))
    assert np.array_equal(plan.permutation[plan.inverse_permutation], np.arange(64))
    assert max(plan.shard_lengths()) - min(plan.shard_lengths()) <= 4 * max(len(r) for r in plan.ranges)
    # Within the slack of the best candidate, and better than naive wherever naive is not
    # (naive is a candidate, so "no worse than naive" alone holds by construction).
    best = min(p.imbalance(work) for p in cp.candidate_plans(work, world_size, align=4))
    naive = cp.naive_plan(64, world_size).imbalance(work)
    assert plan.imbalance(work) <= best * (1 + IMBALANCE_SLACK) + 1e-12
    if naive > best * (1 + IMBALANCE_SLACK):
        assert plan.imbalance(work) < naive


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_paddlenlp_plan_is_paddlenlps_load_balanced_split(world_size):
    paddle = pytest.importorskip("paddle")
    cp_utils = pytest.importorskip("paddlenlp.transformers.context_parallel_utils")
    seqlen = 12 * world_size
    tokens = paddle.arange(seqlen).reshape([1, seqlen])
    plan = cp.paddlenlp_plan(seqlen, world_size)
    for rank in range(world_size):
        theirs = cp_utils.split_inputs_sequence_dim_load_balance(tokens, rank=rank, degree=world_size)
        assert np.array_equal(theirs.numpy()[0], plan.positions(rank))


@pytest.mark.parametrize(
    "ranges, message",
    [
        ([[(0, 10)], [(10, 20)]], "not within"),
        ([[(0, 5)], [(6, 16)]], "covered 0 times"),
        ([[(0, 8)], [(4, 16)]], "covered 2 times"),
        ([[(0, 16)], []], "every rank must own"),
    ],
)
def test_from_ranges_refuses_bad_ranges(ranges, message):
    with pytest.raises(ValueError, match=message):
        cp.from_ranges(ranges, 16)


def test_paddlenlp_plan_needs_divisible_seqlen():
    with pytest.raises(ValueError, match="seqlen"):
        cp.paddlenlp_plan(10, 3)


@pytest.mark.parametrize(
    "q_shape, plan_world, bounds, message",
    [
        ((1, 8, 4, 16), 3, None, "plan` is for 3 ranks"),
        ((1, 9, 4, 16), 2, None, "rank 0's shard"),
        ((1, 8, 4, 16), 2, np.zeros((1, 1, 15, 1), np.int32), "startend_row_indices"),
        ((1, 8, 4, 16), 2, np.zeros((1, 1, 16, 3), np.int32), "startend_row_indices"),
    ],
)
def test_check_call_names_the_bad_argument(q_shape, plan_world, bounds, message):
    from paddle_flashmask.distributed import core

    plan = cp.naive_plan(16, plan_world)
    with pytest.raises(ValueError, match=message):
        core.check_call(q_shape, (1, 8, 2, 16), (1, 8, 2, 16), bounds, True, plan, 0, 2, None)


@pytest.mark.parametrize(
    "causal, softmax_scale, error, message",
    [
        ("False", None, TypeError, "`causal` must be a bool"),  # not taken as true
        (True, float("inf"), ValueError, "`softmax_scale` must be finite"),
        (True, 0.0, ValueError, "`softmax_scale` must be > 0"),
        (True, "0.1", TypeError, "`softmax_scale` must be a real number"),
    ],
)
def test_check_call_checks_causal_and_scale_as_the_single_device_call(causal, softmax_scale, error, message):
    """The same argument checks as flashmask_attention's (_frontend), under the distributed name."""
    from paddle_flashmask.distributed import core

    plan = cp.naive_plan(16, 2)
    with pytest.raises(error, match=f"paddle_flashmask.distributed: {message}"):
        core.check_call((1, 8, 4, 16), (1, 8, 2, 16), (1, 8, 2, 16), None, causal, plan, 0, 2, softmax_scale)


def test_prepared_mask_must_match_plan_and_rank():
    from paddle_flashmask.distributed import core

    spec = masks.causal_mask(16)
    plan = cp.naive_plan(16, 2)
    shapes = ((1, 8, 4, 16), (1, 8, 2, 16), (1, 8, 2, 16))
    assert core.check_call(*shapes, cp.prepare_mask(spec, plan, 0), None, plan, 0, 2, None).mask.rank == 0
    for other_plan, rank in ((cp.paddlenlp_plan(16, 2), 0), (plan, 1)):
        with pytest.raises(ValueError, match="prepared for another plan or rank"):
            core.check_call(*shapes, cp.prepare_mask(spec, other_plan, rank), None, plan, 0, 2, None)
    with pytest.raises(ValueError, match="seqlen 16, the plan 20"):
        cp.prepare_mask(spec, cp.naive_plan(20, 2), 0)


def test_bench_cp_cpu_pieces(monkeypatch):
    """benchmarks/bench_cp.py (its GPU part needs 2 GPUs): the planner table and the
    per-rank step on the CPU kernel (core.rank_attention, the GPU run's kernel timing
    path), at a small size."""
    pytest.importorskip("paddle")
    spec = importlib.util.spec_from_file_location("bench_cp", os.path.join(ROOT, "benchmarks", "bench_cp.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for row in bench.predicted_imbalance(64 * 1024, world_sizes=(2, 3)):
        best = min(row["candidates"].values())
        assert row["planner_imbalance"] <= best * (1 + IMBALANCE_SLACK) + 1e-4, row  # table values at 4 digits
        if row["naive_imbalance"] > best * (1 + IMBALANCE_SLACK) + 1e-4:
            assert row["planner_imbalance"] < row["naive_imbalance"], row
    for name, value in (("CPU_DOCS", (64, 256)), ("CPU_WINDOW", 32), ("CPU_WARMUP", 1), ("CPU_REPS", 1)):
        monkeypatch.setattr(bench, name, value)
    rows = bench.cpu_kernel_imbalance(1024)
    assert {(r["mask"], r["split"]) for r in rows} == {(m, s) for m in bench.MASKS for s in ("planner", "naive")}
    assert all(r["tokens"] == 1024 for r in rows)
    # --masks and --splits reach both CPU runs.
    assert {r["mask"] for r in bench.predicted_imbalance(4096, ("causal",), world_sizes=(2,))} == {"causal"}
    rows = bench.cpu_kernel_imbalance(1024, ("share_question",), ("naive",))
    assert [(r["mask"], r["split"]) for r in rows] == [("share_question", "naive")]
    assert all(len(r["rank_ms"]) == 2 and min(r["rank_ms"]) > 0 for r in rows)
