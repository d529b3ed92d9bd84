# Set-up is part of every target: on a fresh machine `make demo` and `make test`
# install what they need first (once; the stamp is redone when sources change).
PYTHON ?= python3
SOURCES := setup.py requirements.txt $(shell find csrc paddle_flashmask -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.py' 2>/dev/null)
STAMP := .build/installed.stamp

.PHONY: install demo test bench-cpu

install: $(STAMP)

$(STAMP): $(SOURCES)
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-build-isolation .
	mkdir -p .build && touch $(STAMP)

demo: install
	$(PYTHON) examples/sft_lora/train.py --flashmask

test: install
	$(PYTHON) -m pytest -q tests

bench-cpu: install
	$(PYTHON) benchmarks/bench_cpu.py
