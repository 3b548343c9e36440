# Two commands: `make demo` and `make test`. Both create .venv on first use and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lowbit-installed
# The CPU build of PyTorch, installed before anything can ask for `torch`: a bare `torch`
# requirement would pull the CUDA build (several GB).
TORCH  ?= torch==2.13.0

.PHONY: demo test venv clean

demo: $(STAMP)
	$(BIN)/lowbit demo

test: $(STAMP)
	$(BIN)/python -m pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf build dist *.egg-info
