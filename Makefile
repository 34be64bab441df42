# flexbill: `make demo` installs and runs the demo billing run; `make test` runs every test.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test airflow clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flexbill demo

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis

airflow: $(STAMP)
	scripts/airflow-local
