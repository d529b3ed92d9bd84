#!/usr/bin/env bash
# CI: the package also builds against Paddle 2.6 (whose cpp_extension, custom-op API and
# Python entry points differ from 3.x; see setup.py and paddle_flashmask/_ops.py) and its
# API and CPU kernel tests pass there. Paddle 2.6.2 goes into its own virtual environment
# (.build/paddle26, made once); the sources are built in a scratch copy so that the
# checkout's own in-place build (against the main Paddle) stays as it is. ~1 minute.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.build/paddle26"
PADDLE26="paddlepaddle==2.6.2"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$PADDLE26" "numpy<2" setuptools wheel pytest \
    "$(grep -E '^hypothesis' "$ROOT/requirements.txt")"
fi
SCRATCH="$(mktemp -d)"; trap 'rm -rf "$SCRATCH"' EXIT
(cd "$ROOT" && git ls-files -co --exclude-standard -- paddle_flashmask csrc tests docs setup.py tools/cpu_flags.py tools/cuda_flags.py \
  | grep -v '\.so$' | tar -cf - -T -) | tar -xf - -C "$SCRATCH"
cd "$SCRATCH"
"$VENV/bin/python" setup.py -q build_ext --inplace > build.log 2>&1 || { tail -30 build.log; exit 1; }
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_api.py tests/test_cpu_kernel.py \
  tests/test_frontend.py tests/test_bad_inputs.py tests/test_fuzz.py -k "not picture"
echo "check_paddle26: built and tested against $("$VENV/bin/python" -c 'import paddle; print(paddle.__version__)' 2>/dev/null | tail -1)"
