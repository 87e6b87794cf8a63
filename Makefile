# Two entry points for a newcomer on a fresh Debian/Ubuntu machine (as root):
#   make demo   bring up the local lab cluster, converge it with aicluster, take it down
#   make test   every test: lint, types, unit tests and lab tests
# Both create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-down test lint unit lab-test bench clean

$(STAMP): pyproject.toml
	@# Debian and Ubuntu ship venv support separately (python3-venv).
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv \
	  && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lab]'
	touch $(STAMP)

# The local lab cluster: boot it, converge it twice (the second run must change nothing), verify
# every node and the cluster, ask the served model for a completion, then take the lab down unless
# KEEP_LAB=1.
demo: $(STAMP)
	$(BIN)/aicluster validate inventories/homelab.yaml inventories/h100_workstation.yaml \
	  inventories/multinode_ib.yaml inventories/mac_studios.yaml
	$(BIN)/aicluster lab up --nodes 2 --outsider
	$(BIN)/pyinfra -y inventories/lab.py deploys/vllm_cluster.py
	$(BIN)/pyinfra -y inventories/lab.py deploys/vllm_cluster.py
	$(BIN)/aicluster verify inventories/lab.py
	$(BIN)/aicluster complete inventories/lab.yaml "A cluster of two nodes" --max-tokens 16
	$(BIN)/aicluster lab status
	@if [ "$(KEEP_LAB)" = 1 ]; then echo "the lab stays up: aicluster lab ssh node1 / make demo-down"; \
	  else $(BIN)/aicluster lab down; fi

demo-down: $(STAMP)
	$(BIN)/aicluster lab down

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy aicluster

unit: $(STAMP)
	$(BIN)/pytest -m 'not lab'

lab-test: $(STAMP)
	$(BIN)/pytest -m lab

# molecule/default after pytest: the lab, converged twice by pyinfra, verified, taken down (even
# when a step fails). molecule runs ansible-playbook and ansible-config by name: the venv goes on PATH.
test: lint $(STAMP)
	$(BIN)/pytest
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test

# Timings of the lab, converges and verify at 1, 3 and 8 nodes; rows go to benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/lab_up.py --skip-cold
	$(BIN)/python benchmarks/converge.py --nodes 1 3 8

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
