# make demo | make test | make bench | make pod | make fuzz | make plugins — each installs what
# it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test bench plugins toolchain system redis lint clean pod fuzz

# The HTTP/2 engine, libnghttp2, from Debian: a build with the fixes for CVE-2023-44487 (Rapid
# Reset) and CVE-2024-28182 (CONTINUATION flood), which sidecar/nghttp2.py checks for.
system:
	@$(PYTHON) -c "import ctypes; ctypes.CDLL('libnghttp2.so.14').nghttp2_option_set_max_continuations" \
	  2>/dev/null || ( echo "installing libnghttp2-14 from Debian" && $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnghttp2-14 )

$(INSTALLED): pyproject.toml setup.py $(wildcard proto/*.proto) | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[plugins,dev,bench]"
	touch $@

# The kvm tier's toolchain, from Debian: wasm2c (wabt), gcc, and clang for components' large
# modules (an interpreter's C compiles twice as fast with it). Without wasm2c and gcc that tier
# is skipped, saying why; everything else works. Also Rust plugins' compiler, Debian's rustc
# with the wasm32 standard library (any rustc with the wasm32-unknown-unknown target would do).
toolchain:
	@command -v wasm2c >/dev/null && command -v gcc >/dev/null && \
	  { command -v clang || command -v clang-14; } >/dev/null && \
	  [ -d /usr/lib/rustlib/wasm32-unknown-unknown ] || \
	  ( $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wabt gcc clang \
	      rustc libstd-rust-dev-wasm32 ) || \
	  echo "note: could not install wabt, gcc, clang, rustc and libstd-rust-dev-wasm32; the" \
	    "kvm tier will be skipped and Rust plugins will not build"

# A real Redis server, from Debian: shared-state across sidecars, its tests, the pod.
redis:
	@command -v redis-server >/dev/null || ( echo "installing redis-server from Debian" && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server ) || \
	  echo "note: could not install redis-server; the tests that need it will be skipped"

# JavaScript plugins' toolchain: Node from Debian, then componentize-js from npm as pinned by
# plugins/sdk/javascript/package-lock.json (npm ci, again whenever the lock changes).
JS_TOOLCHAIN := plugins/sdk/javascript
$(JS_TOOLCHAIN)/node_modules/.package-lock.json: $(JS_TOOLCHAIN)/package-lock.json
	@command -v npm >/dev/null || ( echo "installing nodejs and npm from Debian" && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm )
	npm ci --prefix $(JS_TOOLCHAIN) --no-audit --no-fund --loglevel=error
	touch $@

# Every plugin is built from source: the examples and the ones the tests use.
plugins: $(INSTALLED) toolchain $(JS_TOOLCHAIN)/node_modules/.package-lock.json
	$(BIN)/hyperfilter plugin build --skip-missing-toolchains plugins/examples/*/ tests/plugins/*/

demo: plugins
	$(BIN)/hyperfilter demo

test: plugins redis
	$(BIN)/ruff check .
	$(BIN)/mypy sidecar vmm tests bench
	$(BIN)/pytest

# QUICK=1: a CI-sized run.
bench: plugins redis
	$(BIN)/python -m bench $(if $(QUICK),--quick)

# The pod on this machine without containers (root: network namespaces), with a real Redis
# from Debian. POD_ARGS="--seconds 60" runs its scenario longer.
pod: plugins redis
	$(BIN)/hyperfilter pod $(POD_ARGS)

# Every example plugin fuzzed for a short, fixed budget (a seed each, so runs repeat).
fuzz: plugins
	@for plugin in plugins/examples/*/; do \
	  $(BIN)/hyperfilter fuzz $$plugin --time 10s --seed 1 || exit 1; done

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .cache plugins/examples/*/*.wasm tests/plugins/*/*.wasm \
	  $(JS_TOOLCHAIN)/node_modules
