# Both targets build .venv themselves on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo venv clean

$(STAMP): pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.txt -e '.[test,eval]'
	# References whose package metadata pulls GPU builds or trainers: install the modules only.
	$(BIN)/pip install -q --no-deps speechtokenizer==1.0.1 taming-transformers-rom1504==0.0.6
	touch $(STAMP)

venv: $(STAMP)

# --dist loadfile: a module's tests share one worker, so module fixtures (a trained run, converted
# tokenizers) are built once, not once per worker. --max-worker-restart=0: a worker that dies fails
# the run at once, naming its test (xdist 3.8 under loadfile re-runs that test, then can wait forever).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 --durations=15

# The suite's programs are small, so compiling them is most of its time; LLVM at -O0 takes about 40%
# off that (the suite: 2:49 against 3:36 on 2 cores). XLA's HLO passes are the same. The slow set,
# which runs the official-size models, compiles at XLA's default level.
test: $(STAMP)
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" $(PYTEST)

# The long cases (official-size tokenizer configs, the demo, multi-process fault runs); CI runs both.
test-slow: $(STAMP)
	$(PYTEST) -m 'slow and not bigmem'

demo: $(STAMP)
	$(BIN)/python launch/demo.py --workdir=workdirs/demo

clean:
	rm -rf $(VENV) workdirs
