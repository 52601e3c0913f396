# facegrid: `make demo`, `make test`, `make bench`, `make fuzz`. Each makes .venv first if there is none.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facegrid-installed
DEMO_DIR ?= build/demo
BENCH_DIR ?= build/bench
# Tests spread over both cores; Beam pipelines inside tests run their own workers too.
PYTEST_WORKERS ?= 2

.PHONY: venv demo test bench fuzz clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,backends]'
	touch $(STAMP)

demo: venv
	$(PY) -m pipeline.sample --output_dir=$(DEMO_DIR)/source
	$(PY) -m pipeline --annotations=$(DEMO_DIR)/source/wider_face_split/wider_face_train_bbx_gt.txt \
		--images_dir=$(DEMO_DIR)/source/images --output_dir=$(DEMO_DIR)/shards --split=train --num_shards=4
	$(PY) -m pipeline --annotations=$(DEMO_DIR)/source/wider_face_split/wider_face_val_bbx_gt.txt \
		--images_dir=$(DEMO_DIR)/source/images --output_dir=$(DEMO_DIR)/shards --split=val --num_shards=2
	@echo "demo shards: $(DEMO_DIR)/shards"

test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

bench: venv
	$(PY) -m benchmarks --work_dir=$(BENCH_DIR)

# The big seeded fuzz runs behind BENCHMARKS.md's "Hostile input" figures (the test suite runs
# a few thousand cases of each).
fuzz: venv
	$(PY) -m pipeline.annotation_fuzz --cases=200000 --seed=0
	$(PY) -m benchmarks.fuzz_images --part=fuzz --cases=150000 --seed=0 --work_dir=build/fuzz

clean:
	rm -rf build
