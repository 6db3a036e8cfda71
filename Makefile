# Two commands do everything on a fresh Debian machine (root for apt):
#   make demo   runs the embedded stack and the loop
#   make test   runs every test
.PHONY: setup demo test up down schemas

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/streamml demo

# Three workers on two cores: most integration tests wait on services, not on a CPU.
TEST_WORKERS ?= 3
test: setup
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

up: setup
	.venv/bin/streamml up

down:
	.venv/bin/streamml down

schemas:
	.venv/bin/streamml schemas write schemas
