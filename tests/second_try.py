"""One place for the policy on multi-process launches in the tests (named so that it
shadows no package: the workers run with tests/ on sys.path).

On a loaded 2-core machine a gloo launch has failed without any fault of ours:
once in 7 runs of tests/test_distributed.py a launcher did not start its ranks,
and once in CI both ranks of the SFT context-parallel example reached their
first all_reduce and gloo's TCP pair then reported `TIMEOUT` (seen again once in
a clean-clone run of the whole suite; never when the test file runs alone). So a
launch gets a second try; the first try's logs go into a warning, so that a flaky
run is seen, and a second failure is a failure."""

import warnings


def run_with_second_try(run_once, what):
    """`run_once(attempt)` runs the launch (attempt is 1 or 2) and returns
    (result or None, logs). Returns (result or None, logs of the last try)."""
    result, first_logs = run_once(1)
    if result is not None:
        return result, ""
    result, logs = run_once(2)
    if result is not None:
        warnings.warn(f"{what} needed a second try; the first one said:\n{first_logs[-3000:]}")
    return result, logs
