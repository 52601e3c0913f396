# facegrid: `make demo`, `make test`, `make bench`, `make fuzz`. Each makes .venv first if there is none.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two installs into one environment: the build and the sample (make demo, make val), and everything
# (make test, make bench, make fuzz). Each stamp is redone when pyproject.toml or this file changes.
CORE := $(VENV)/.facegrid-core
FULL := $(VENV)/.facegrid-full
DEMO_DIR ?= build/demo
VAL_DIR ?= build/val
BENCH_DIR ?= build/bench
WIDER := data/wider_face_split
# Tests spread over both cores; Beam pipelines inside tests run their own workers too. Tests
# marked with one xdist_group run in one process (tests/pipeline/test_dask.py: one Dask cluster for all).
PYTEST_WORKERS ?= 2

.PHONY: venv demo val test bench fuzz clean

venv: $(FULL)

$(CORE): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[sample]'
	touch $(CORE)

$(FULL): $(CORE)
	$(PY) -m pip install -e '.[sample,train,report,dev,backends,dask]'
	# TF Model Garden for the test that reads the records with its decoder: its own
	# requirements would replace TensorFlow (tf-models-official pins another), so without them,
	# plus the two of them that `from official.vision.dataloaders import tf_example_decoder`
	# imports on its way (official/core's gin, official/vision's OpenCV).
	$(PY) -m pip install --no-deps 'tf-models-official==2.20.0' 'tf-keras==2.21.0' \
		'gin-config==0.5.0' 'opencv-python-headless==5.1.0.95'
	touch $(FULL)

demo: $(CORE)
	$(PY) -m pipeline.sample --output_dir=$(DEMO_DIR)/source
	$(PY) -m pipeline --annotations=$(DEMO_DIR)/source/wider_face_split/wider_face_train_bbx_gt.txt \
		--images_dir=$(DEMO_DIR)/source/images --output_dir=$(DEMO_DIR)/shards --split=train --num_shards=4
	$(PY) -m pipeline --annotations=$(DEMO_DIR)/source/wider_face_split/wider_face_val_bbx_gt.txt \
		--images_dir=$(DEMO_DIR)/source/images --output_dir=$(DEMO_DIR)/shards --split=val --num_shards=2
	@echo "demo shards: $(DEMO_DIR)/shards"

# The real val annotation file over rendered photo-like images (WIDER's own images are not
# downloaded here): 3,226 images, then their shards, then the checker.
val: $(CORE)
	$(PY) -m pipeline.sample --render_for=$(WIDER)/wider_face_val_bbx_gt.txt --images_dir=$(VAL_DIR)/images
	$(PY) -m pipeline --annotations=$(WIDER)/wider_face_val_bbx_gt.txt --images_dir=$(VAL_DIR)/images \
		--output_dir=$(VAL_DIR)/shards --split=val
	$(PY) -m reader.check --data_dir=$(VAL_DIR)/shards --split=val --sheet=$(VAL_DIR)/val.png

# The import contracts of pyproject.toml first (lint-imports: which package may import which).
test: $(FULL)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist=loadgroup -q

bench: $(FULL)
	$(PY) -m benchmarks --work_dir=$(BENCH_DIR)

# The big seeded fuzz runs behind BENCHMARKS.md's "Hostile input" figures (the test suite runs
# a few thousand cases of each).
fuzz: $(FULL)
	$(PY) -m fuzzing.annotation_fuzz --cases=200000 --seed=0
	$(PY) -m fuzzing.image_fuzz --part=fuzz --cases=150000 --seed=0 --work_dir=build/fuzz
	$(PY) -m fuzzing.manifest_fuzz --cases=6000 --seed=0 --cli=10 --rebuilds=6 --work_dir=build/fuzz

clean:
	rm -rf build
