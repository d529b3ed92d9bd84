"""One place for the policy on multi-process launches in the tests.

On a loaded 2-core machine a gloo launch has failed without any fault of ours:
once in 7 runs of tests/test_distributed.py a launcher did not start its ranks,
and in 2 of 7 runs of the whole suite (CI's and six on clean clones) both
ranks of the SFT context-parallel example reached their first all_reduce and
gloo's TCP pair then reported `TIMEOUT` (never in 6 runs of the test alone).
So a launch gets up to TRIES tries, PAUSE_S apart; the failed tries' logs go into
a warning, so that a flaky run is seen, and failing every try is a failure."""

import time
import warnings

TRIES = 3
# Seconds between the tries: the failed try's processes and sockets are gone by then.
PAUSE_S = 5


def run_with_retries(run_once, what):
    """`run_once(attempt)` runs the launch (attempt = 1, 2, ...) and returns
    (result or None, logs). Returns (result or None, logs of the last try)."""
    failed = []
    for attempt in range(1, TRIES + 1):
        if attempt > 1:
            time.sleep(PAUSE_S)
        result, logs = run_once(attempt)
        if result is not None:
            if failed:
                said = "\n--- next failed try:\n".join(f[-3000:] for f in failed)
                warnings.warn(f"{what} needed {attempt} tries; the failed ones said:\n{said}")
            return result, ""
        failed.append(logs)
    return None, failed[-1]
