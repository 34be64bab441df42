# flexbill: `make demo` installs and runs the demo billing run; `make test` runs every test.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint airflow clean browser

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flexbill demo

test: $(STAMP) browser lint
	$(BIN)/pytest

# ruff: lint and formatting (configured in pyproject.toml); `$(BIN)/ruff format .` fixes the formatting
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Headless Chromium (Debian's package) for the report test; installed once, as root, from Debian's registry.
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the report test"; \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	  || echo "warning: could not install chromium; the headless report test will say so"; }

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis test-artifacts

airflow: $(STAMP)
	scripts/airflow-local
