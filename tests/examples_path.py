"""Puts examples/ on sys.path, as the example scripts do, so that tests import the
examples' shared harness (examples/common) as `common`."""

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
