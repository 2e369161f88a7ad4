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
	# mimalloc, preloaded by the targets below (mio_jax/cpu_allocator.py); without a wheel for this
	# platform they run on the system allocator, only slower.
	$(BIN)/pip install -q --no-deps --only-binary=:all: cmeel-mimalloc==3.4.3 || \
	  echo "no cmeel-mimalloc wheel for this platform: CPU runs keep the system allocator"
	touch $(STAMP)

venv: $(STAMP)

# --dist loadfile: a module's tests share one worker, so module fixtures (a trained run, converted
# tokenizers) are built once, not once per worker. --max-worker-restart=0: a worker that dies fails
# the run at once, naming its test (xdist 3.8 under loadfile re-runs that test, then can wait forever).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 --durations=15

# Every CPU run starts with mimalloc preloaded where it can be (mio_jax/cpu_allocator.py): glibc
# page-faults XLA's per-step buffers in anew each step (the demo's train step 0.51 s, 0.36 s with it).
CPU_RUN := LD_PRELOAD="$$($(BIN)/python -m mio_jax.cpu_allocator)"

# The suite's programs are small, so compiling them is most of its time; LLVM at -O0 takes about 40%
# off that (the suite: 2:49 against 3:36 on 2 cores). XLA's HLO passes are the same. The slow set,
# which runs the official-size models, compiles at XLA's default level.
test: $(STAMP)
	$(CPU_RUN) XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" $(PYTEST)

# The long cases (official-size tokenizer configs, the demo, multi-process fault runs); CI runs both.
test-slow: $(STAMP)
	$(CPU_RUN) $(PYTEST) -m 'slow and not bigmem'

demo: $(STAMP)
	$(CPU_RUN) $(BIN)/python launch/demo.py --workdir=workdirs/demo

clean:
	rm -rf $(VENV) workdirs
