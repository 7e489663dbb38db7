# Everyday commands. PYTHON defaults to the active interpreter (activate your venv first).
PYTHON ?= python

.PHONY: install demo test test-all lint wheel clean

install:  ## install fer_lightning with test and lint tools
	$(PYTHON) -m pip install -e ".[dev]"

demo:  ## train briefly on the built-in synthetic faces, then test the best checkpoint
	$(PYTHON) -m fer_lightning data=synthetic +experiment=compact_cnn trainer.max_epochs=5 trainer.accelerator=cpu

test:  ## the test suite CI runs (real-FER2013 tests run when FER2013_ROOT is set)
	$(PYTHON) -m pytest -m "not slow" -q

test-all:  ## every test, slow ones included
	$(PYTHON) -m pytest -q

lint:  ## ruff over the package, the tests and the experiment scripts (what CI runs before the tests)
	$(PYTHON) -m ruff check fer_lightning tests experiments

wheel:  ## dist/fer_lightning-*.whl, configs inside; build/ goes first, as setuptools would ship its stale files
	rm -rf build
	$(PYTHON) -m pip wheel --no-deps . -w dist

clean:
	rm -rf outputs multirun lightning_logs wandb .pytest_cache build dist
