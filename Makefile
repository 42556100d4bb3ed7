# make setup    create .venv in this checkout and install the project (editable) with its pinned requirements
# make test     run the test suite (CPU, several minutes)
VENV := .venv
PYTHON := $(VENV)/bin/python
CIFAR10_DATA ?= ../shared/data/cifar10-jpeg.tgz
export CIFAR10_DATA

.PHONY: setup test

setup: $(VENV)/installed

$(VENV)/installed: pyproject.toml requirements.txt requirements-test.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --editable '.[test]'
	touch $@

test: setup
	$(PYTHON) -m pytest -q --durations=15
