"""Every bad input of tests/bad_inputs.py raises exactly the error written there,
naming its argument, and docs/bad-inputs.md is that table."""

import importlib.util
import os
import unittest
import warnings

from tests.bad_inputs import CASES, namespace, needs_torch, render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "bad-inputs.md")
HAS_TORCH = importlib.util.find_spec("torch") is not None
MIN_CASES = 30


class TestBadInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.names = namespace(with_torch=HAS_TORCH)

    def test_each_call_gets_its_error(self):
        self.assertGreaterEqual(len(CASES), MIN_CASES)
        for case in CASES:
            with self.subTest(case.call):
                if needs_torch(case) and not HAS_TORCH:  # reported as a skipped subtest, not dropped
                    self.skipTest("the torch binding's rows need PyTorch (benchmarks/requirements.txt)")
                self.assertIn(case.argument, case.message)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with self.assertRaises(case.exception) as caught:
                        eval(case.call, dict(self.names))  # noqa: S307 - the table's own expressions
                self.assertIs(type(caught.exception), case.exception)
                self.assertEqual(str(caught.exception), case.message)

    def test_document_is_current(self):
        with open(DOC, encoding="utf-8") as f:
            self.assertEqual(
                f.read(), render(), "docs/bad-inputs.md is stale: python -m tests.bad_inputs > docs/bad-inputs.md"
            )


if __name__ == "__main__":
    unittest.main()
