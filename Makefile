# Two commands on a fresh machine: `make demo` and `make test`. Nothing else by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HANDLERS := $(sort $(dir $(wildcard handlers/*/pyproject.toml)))
EXAMPLES := $(sort $(dir $(wildcard examples/*/pyproject.toml)))
STAMP := $(VENV)/.installed
DATABASE_URL ?=
DELIVERY ?= inline
SERVE ?=

.PHONY: install lint typecheck test demo bench clean

$(STAMP): pyproject.toml $(wildcard handlers/*/pyproject.toml) $(wildcard examples/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,flask,postgres,celery]" \
		$(foreach h,$(HANDLERS),-e "./$(h)[test]") $(foreach e,$(EXAMPLES),-e "./$(e)")
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m examples.demo --delivery $(DELIVERY) $(if $(DATABASE_URL),--database-url $(DATABASE_URL)) $(if $(SERVE),--serve)

bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
