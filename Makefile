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
# tokenizers) are built once, not once per worker.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The long cases (official-size tokenizer configs, the demo, multi-process fault runs); CI runs both.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 -m 'slow and not bigmem'

demo: $(STAMP)
	$(BIN)/python launch/demo.py --workdir=workdirs/demo

clean:
	rm -rf $(VENV) workdirs
