# Set-up is part of every target: on a fresh machine `make demo` and `make test`
# install what they need first (once; the stamp is redone when sources change).
PYTHON ?= python3
SOURCES := setup.py tools/cpu_flags.py tools/cuda_flags.py requirements.txt $(shell find csrc paddle_flashmask -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.py' 2>/dev/null)
STAMP := .build/installed.stamp

# The C++/CUDA sources held to the function-size limits (tools/check_function_size.py:
# at most 150 lines and nesting 5 per function; generated files are skipped by the tool).
SIZE_CHECKED_PATHS := csrc

.PHONY: install demo test check-generated check-size check-cuda-build check-paddle26 bench-cpu

install: $(STAMP)

$(STAMP): $(SOURCES)
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-build-isolation .
	mkdir -p .build && touch $(STAMP)

demo: install
	$(PYTHON) examples/sft_lora/train.py --flashmask

test: install check-generated check-size check-cuda-build check-paddle26
	$(PYTHON) -m pytest -q tests

# Every file generated from the kernel table (tools/generate_kernels.py) is current.
check-generated:
	$(PYTHON) tools/generate_kernels.py --check

# `make check-size SIZE_CHECKED_PATHS=csrc` lists every function over the limits.
check-size:
	$(PYTHON) tools/check_function_size.py $(SIZE_CHECKED_PATHS)

# Paddle 2.6 is supported too: build against it and run the API and CPU kernel tests there.
check-paddle26:
	bash .ci/check_paddle26.sh

# The CUDA kernels must compile even where no GPU is (CI); without nvcc this is skipped,
# except under CI, where a missing nvcc is an error.
check-cuda-build:
	@if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then bash .ci/check_cuda_build.sh; \
	elif [ -n "$$CI" ]; then echo "check-cuda-build: nvcc not found, CI must compile the CUDA kernels" >&2; exit 1; \
	else echo "check-cuda-build: nvcc not found, skipping the CUDA compile check"; fi

bench-cpu: install
	$(PYTHON) benchmarks/bench_cpu.py
