# make demo: train the headline model on built-in data; make serve: serve it; make test: the suite;
# make bench: benchmarks.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU wheel where pip is set up for it; elsewhere pass TORCH="torch==2.13.0 --index-url ..."
# (README, "GPU").
TORCH ?= torch==2.13.0

.PHONY: install demo serve test bench clean

$(BIN)/genlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)   # unquoted: TORCH may carry pip options (--index-url ...)
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

install: $(BIN)/genlab
	@command -v espeak-ng >/dev/null 2>&1 || echo "make: espeak-ng is not installed; the spoken-digits data" \
		"(and its tests) need it: sudo apt-get install espeak-ng" >&2

demo: install
	$(BIN)/python scripts/demo.py

# after `make demo`: the demo's two runs behind the HTTP API and the page at http://127.0.0.1:8000/
serve: install
	$(BIN)/genlab serve demo/ddpm-digits demo/vae-digits

# two workers, one thread each (pytest-xdist), a test file to a worker: on two cores the suite takes about
# 13-14 minutes instead of 21 one test at a time; `make test TEST_WORKERS=4` where there are more cores
TEST_WORKERS ?= 2
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# throughput only (~20 min); the quality benchmarks (image_quality.py, ddpm_quality_bar.py,
# text_quality.py) train for minutes each: run them one by one, see benchmarks/RESULTS.md
bench: install
	$(BIN)/python benchmarks/train_throughput.py --families vae,gan,ddpm
	$(BIN)/python benchmarks/text_throughput.py
	$(BIN)/python benchmarks/ddp_throughput.py
	$(BIN)/python benchmarks/serve_load.py

clean:
	rm -rf $(VENV) runs demo .pytest_cache
