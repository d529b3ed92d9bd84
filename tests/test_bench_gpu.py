"""benchmarks/bench_gpu.py's bookkeeping that runs without a GPU: --merge joins the parts of one
run (its masks measured in several device calls) into one run's file, and the report prints
the note that says so; the pair count every benchmark's rates divide by; the output check; which
time is whose when every implementation is timed together; the steady blocks (their order,
warm-up and flushes); the GPU state's parsing; on the CPU with torch, the Flex baselines' mask_mods
against the dense masks and the timed backward calls' gradients."""

import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_gpu  # noqa: E402


def part(directory, name, date, config, masks):
    """A bench_gpu.py result file holding one row per mask (rates made up per mask)."""
    rows = [dict(config=config, mask=m, N=32768, D=256, density=1.0, causal=False, ours_fwd=600.0 + i,
                 ours_bwd=300.0 + i, ours_fwdbwd=350.0 + i, flex_fwdbwd=150.0) for i, m in enumerate(masks)]
    meta = dict(tag=name, device="GPU", torch="2", date=date, min_reps=10, timing="interleaved")
    path = pathlib.Path(directory) / f"gpu_{name}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}))
    return path


class MergeTest(unittest.TestCase):
    def test_the_parts_join_in_order_with_a_note(self):
        with tempfile.TemporaryDirectory() as tmp:
            a = part(tmp, "a", "2026-12-01 16:31", "32k-256", ["full", "causal"])
            b = part(tmp, "b", "2026-12-01 16:38", "32k-256", ["document"])
            out = pathlib.Path(tmp) / "out"
            out.mkdir()
            merged = json.loads(bench_gpu.merge(out, "d256_32k", [a, b]).read_text())
            self.assertEqual([r["mask"] for r in merged["rows"]], ["full", "causal", "document"])
            self.assertEqual(merged["rows"][2]["ours_fwdbwd"], 350.0)
            self.assertEqual(merged["meta"]["tag"], "d256_32k")
            self.assertEqual(merged["meta"]["date"], "2026-12-01 16:31")
            self.assertEqual(merged["meta"]["note"], "masks in 2 device calls: full to causal at 2026-12-01 16:31, "
                                                     "document to document at 2026-12-01 16:38")

    def test_the_report_prints_the_note(self):
        with tempfile.TemporaryDirectory() as tmp:
            a = part(tmp, "a", "2026-12-01 16:31", "32k-256", ["full"])
            b = part(tmp, "b", "2026-12-01 16:38", "32k-256", ["causal"])
            out = pathlib.Path(tmp) / "out"
            out.mkdir()
            bench_gpu.merge(out, "d256_32k", [a, b])
            bench_gpu.report(out)
            md = (out / "gpu.md").read_text()
            self.assertIn("(masks in 2 device calls: full to full at 2026-12-01 16:31, causal to causal at "
                          "2026-12-01 16:38)", md)
            self.assertIn("| d256_32k | 32K | 256 | causal |", md)

    def test_the_bars_of_a_run_of_two_configs_are_kept_apart(self):
        """`--configs 8k-64,32k-64` writes both configurations' rows into one run's file; the
        bars table holds each configuration's full and causal rows, not the last one's alone."""
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for config, n, rate in (("8k-64", 8192, 500.0), ("32k-64", 32768, 540.0)):
                for mask in ("full", "causal"):
                    rows.append(dict(config=config, mask=mask, N=n, D=64, density=1.0, causal=mask == "causal",
                                     ours_fwd=rate + 60, ours_bwd=rate - 10, ours_fwdbwd=rate,
                                     fa4direct_fwd=rate, fa4direct_fwdbwd=rate - 5, ours_ms=[1.0, 2.5, 3.5]))
            meta = dict(tag="d64", device="GPU", torch="2", date="d", min_reps=10, timing="interleaved")
            (pathlib.Path(tmp) / "gpu_d64.json").write_text(json.dumps({"meta": meta, "rows": rows}))
            bench_gpu.report(pathlib.Path(tmp))
            md = (pathlib.Path(tmp) / "gpu.md").read_text()
            self.assertIn("| d64 8k-64 | full | 500 | 495 (FA4 direct", md)
            self.assertIn("| d64 32k-64 | causal | 540 | 535 (FA4 direct", md)

    def test_parts_of_other_configs_are_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            a = part(tmp, "a", "d1", "32k-256", ["full"])
            b = part(tmp, "b", "d2", "8k-256", ["causal"])
            with self.assertRaisesRegex(ValueError, "other configs"):
                bench_gpu.merge(pathlib.Path(tmp), "x", [a, b])

    def test_a_part_without_rows_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            a = part(tmp, "a", "d1", "32k-256", [])
            with self.assertRaisesRegex(ValueError, "no rows"):
                bench_gpu.merge(pathlib.Path(tmp), "x", [a])


class PairCountTest(unittest.TestCase):
    def test_total_unmasked_pairs_is_the_dense_count(self):
        """The FLOPs of every benchmark count unmasked (row, key) pairs: the dense mask's count,
        each mask head repeated over its query heads."""
        import numpy as np

        from paddle_flashmask import masks

        for name in bench_gpu.MASKS:
            spec = bench_gpu.build_mask(name, 512, 2, 4)
            hm = spec.startend_row_indices.shape[1]
            dense = masks.to_dense(spec.startend_row_indices, spec.causal)  # [B, Hm, S, S], True = attend
            with self.subTest(name):
                self.assertEqual(bench_gpu.total_unmasked_pairs(spec.startend_row_indices, spec.causal, 4),
                                 float(np.sum(dense)) * (4 // hm))


class AlignedMaskTest(unittest.TestCase):
    def test_aligned_masks_have_no_partial_tile_but_the_diagonal(self):
        """The diagnostic masks' claim (bench_gpu.ALIGNED_MASKS): every ALIGN_TILE x ALIGN_TILE
        tile off the diagonal is all unmasked or all masked, and each keeps its mask's kind
        (sliding_window_aligned: WINDOW keys per row once the band is in; the document masks:
        every row sees itself)."""
        from paddle_flashmask import masks

        n, t = 4096, bench_gpu.ALIGN_TILE
        for name in bench_gpu.ALIGNED_MASKS:
            with self.subTest(name):
                spec = bench_gpu.build_mask(name, n, 2, 4)
                dense = masks.to_dense(spec.startend_row_indices, spec.causal)  # [B, 1, N, N]
                tiles = dense.reshape(2, 1, n // t, t, n // t, t).sum(axis=(3, 5))
                off_diagonal = ~np.eye(n // t, dtype=bool)
                self.assertTrue(np.isin(tiles[..., off_diagonal], (0, t * t)).all())
                self.assertTrue(dense[..., np.arange(n), np.arange(n)].all())
                if name == "sliding_window_aligned":
                    self.assertTrue((dense[..., bench_gpu.WINDOW :, :].sum(-1) == bench_gpu.WINDOW).all())


@unittest.skipUnless(importlib.util.find_spec("torch"), "needs torch (a benchmark-only extra: benchmarks/requirements.txt)")
class ReferenceCheckTest(unittest.TestCase):
    """reference_errors, the output check of every benchmark row, on CPU tensors: an output
    from the float64 reference passes the rule, one of another mask does not."""

    def test_the_rule_passes_a_right_output_and_fails_a_wrong_one(self):
        import numpy as np
        import torch

        from paddle_flashmask import masks, reference

        rng = np.random.default_rng(0)
        n, h, hk, d = 300, 4, 2, 16
        q, k, v = (rng.standard_normal((1, n, heads, d)) for heads in (h, hk, hk))
        spec = masks.share_question_mask([[(60, [90, 100]), (20, [30])]])
        other = masks.causal_document_mask([[150, 150]])
        as_bf16 = lambda x: torch.from_numpy(x).to(torch.bfloat16)  # noqa: E731
        tq, tk, tv = (as_bf16(x) for x in (q, k, v))
        exact = [as_bf16(reference.attention_forward(*(t.double().numpy() for t in (tq, tk, tv)),
                                                     m.startend_row_indices, m.causal, softmax_scale=0.25)[0])
                 for m in (spec, other)]
        ours, lowp, rounding = bench_gpu.reference_errors(torch, tq, tk, tv, spec, 0.25, exact[0], rows=120)
        self.assertLessEqual(ours, bench_gpu.REFERENCE_FACTOR * lowp + rounding)
        self.assertGreater(lowp, 0.0)
        self.assertGreater(rounding, 0.0)
        wrong, lowp, rounding = bench_gpu.reference_errors(torch, tq, tk, tv, spec, 0.25, exact[1], rows=120)
        self.assertGreater(wrong, bench_gpu.REFERENCE_FACTOR * lowp + rounding)
        bench_gpu.check_output(torch, tq, tk, tv, spec, 0.25, exact[0], "right")
        with self.assertRaisesRegex(AssertionError, "wrong: output off the float32 reference"):
            bench_gpu.check_output(torch, tq, tk, tv, spec, 0.25, exact[1], "wrong")


if __name__ == "__main__":
    unittest.main()


class GpuStateTest(unittest.TestCase):
    def test_a_line_of_nvidia_smi_parses(self):
        state = bench_gpu.parse_gpu_state("1980, 41, 612.35, 0x0000000000000004")
        self.assertEqual(state, {"sm_mhz": 1980.0, "temp_c": 41.0, "power_w": 612.35,
                                 "throttle": "0x0000000000000004"})

    def test_a_field_it_does_not_report_is_none(self):
        self.assertIsNone(bench_gpu.parse_gpu_state("1980, 41, [N/A], 0x0")["power_w"])

    def test_a_line_of_other_fields_gives_nothing(self):
        self.assertEqual(bench_gpu.parse_gpu_state("1980, 41"), {})


class TimeTogetherTest(unittest.TestCase):
    def test_each_implementation_gets_its_own_three_times(self):
        calls = []

        def three_calls(fwd_only, fwd_grad):
            return fwd_only, fwd_grad, fwd_only

        def impl(name):
            return (lambda: calls.append(name), lambda: calls.append(name))

        def bench(*fns):  # times each function by its place in the turn
            return [float(i) for i in range(len(fns))]

        def broken():
            raise RuntimeError("no kernel for this shape")

        row = {}
        times = bench_gpu.time_together({"ours": impl("ours"), "flex": (broken, broken), "fa4": impl("fa4")}, row,
                                        bench, three_calls)
        self.assertEqual(times, {"ours": (0.0, 1.0, 2.0), "fa4": (3.0, 4.0, 5.0)})
        self.assertIn("no kernel for this shape", row["flex_error"])
        self.assertEqual(calls, ["ours"] * 3 + ["fa4"] * 3)  # each working one ran once before timing



class SteadyBlocksTest(unittest.TestCase):
    """steady_block_ms on a stand-in for torch whose events read a clock each call advances by
    its function's own duration."""

    def setUp(self):
        clock = [0.0]
        self.clock = clock

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                self.t = clock[0]

            def elapsed_time(self, end):
                return end.t - self.t

        class Cuda:
            pass

        cuda = Cuda()
        cuda.Event, cuda.synchronize = Event, lambda: None
        self.torch = type("FakeTorch", (), {"cuda": cuda})

        class Flush:
            zeroed = 0

            def zero_(self):
                Flush.zeroed += 1

        self.flush = Flush()

    def fn(self, name, ms, log):
        def call():
            log.append(name)
            self.clock[0] += ms
        return call

    def test_blocks_alternate_and_each_median_is_its_own(self):
        log = []
        fns = [self.fn("a", 1.0, log), self.fn("b", 3.0, log)]
        ms = bench_gpu.steady_block_ms(self.torch, fns, rounds=2, reps=[2, 3], warm_calls=[4, 1], flush=self.flush)
        self.assertEqual(ms, [1.0, 3.0])
        a_block, b_block = ["a"] * (4 + 2), ["b"] * (1 + 3)
        self.assertEqual(log, a_block + b_block + b_block + a_block)  # round 2 in reverse
        self.assertEqual(self.flush.zeroed, 2 * (2 + 3))  # before each timed call only

    def test_turns_alternate_call_by_call(self):
        log = []
        fns = [self.fn("a", 1.0, log), self.fn("b", 3.0, log)]
        self.assertEqual(bench_gpu.interleaved_event_ms(self.torch, fns, 3, self.flush), [1.0, 3.0])
        self.assertEqual(log, ["a", "b"] * 3)
        self.assertEqual(self.flush.zeroed, 6)


@unittest.skipUnless(importlib.util.find_spec("torch"), "needs torch (a benchmark-only extra: benchmarks/requirements.txt)")
class FlexBaselineTest(unittest.TestCase):
    """The Flex and FA4-Flex baselines' masks and the calls every implementation is timed by, on
    the CPU: each mask's mask_mod, evaluated everywhere, is the package's dense mask."""

    def test_each_masks_mask_mod_is_its_dense_mask(self):
        import torch
        from torch.nn.attention.flex_attention import create_mask

        from paddle_flashmask import masks

        n, b, h = 2048, 2, 2  # every builder's shape holds at 2K (global_sliding_window: 256 global, window 1024)
        flex_masks = bench_gpu.FlexMasks(torch, b, h, n, "cpu")
        for name in bench_gpu.MASKS:
            with self.subTest(mask=name):
                spec = bench_gpu.build_mask(name, n, b, h)
                mask_mod = flex_masks.load(spec.startend_row_indices, spec.causal)
                got = create_mask(mask_mod, b, h, n, n, device="cpu").numpy()
                want = masks.to_dense(spec.startend_row_indices, spec.causal)  # [B, Hm, N, N]
                np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))

    def test_the_backward_calls_take_the_gradient_of_the_outputs_layout(self):
        import torch

        x = bench_gpu.Inputs(torch, 1, 8, 2, 4, "cpu")
        for layout, grad in ((x.q, x.do), (x.qt, x.dot)):  # [B, N, H, D] and [B, H, N, D]
            fwd_only, bwd, fb = x.three_calls(lambda: None, lambda layout=layout: layout * 3)
            for call in (bwd, fb):
                call()
                torch.testing.assert_close(layout.grad, grad * 3)
