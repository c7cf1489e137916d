# aks-flex-node developer targets. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps build release dist deb test lint fmt demo demo-node demo-node-down bench e2e clean

help: ## List the targets
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / { printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

deps: ## Install the Debian packages the real-component tests and the demo use (as root)
	bash scripts/deps.sh

build: ## Debug build of the agent and the emulator
	$(CARGO) build --workspace

release: ## Optimised binaries in target/release
	$(CARGO) build --workspace --release

# Release artifacts. DIST_TARGET=aarch64-unknown-linux-gnu builds arm64 (needs `rustup target add
# aarch64-unknown-linux-gnu` and Debian's gcc-aarch64-linux-gnu); DIST_TARGET=x86_64-unknown-linux-musl a
# static amd64 binary (needs the musl target and Debian's musl-tools).
DIST_TARGET ?=
DIST_CARGO_ENV := $(if $(filter aarch64-unknown-linux-gnu,$(DIST_TARGET)),CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc)

dist: ## Release tarball dist/aks-flex-node-<version>-linux-<arch>.tar.gz, dist/SHA256SUMS, dist/VERSION
	$(DIST_CARGO_ENV) $(CARGO) build --release --locked -p aks-flex-node $(if $(DIST_TARGET),--target $(DIST_TARGET))
	bash packaging/dist.sh $(DIST_TARGET)

deb: ## Debian package dist/aks-flex-node_<version>-1_<arch>.deb (cargo-deb, installed if missing), checked with lintian
	$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	@# DEB_PREBUILT=1: package target/release/aks-flex-node as it is (the real-node suite just built it).
	$(if $(DEB_PREBUILT),,$(CARGO) build --release --locked -p aks-flex-node)
	mkdir -p dist
	$(CARGO) deb -p aks-flex-node --no-build --no-strip --output dist/
	@if command -v lintian >/dev/null; then lintian --fail-on error,warning dist/aks-flex-node_*.deb; \
	else echo "lintian not installed (apt-get install lintian): package not checked"; fi

test: deps ## Unit, golden, property and integration tests (the default suite, a few minutes)
	$(CARGO) test --workspace --no-fail-fast

lint: ## Formatting check, no import cycle between modules, clippy with warnings as errors, cargo-deny (deny.toml), shellcheck of every script
	$(CARGO) fmt --all -- --check
	python3 scripts/check-layers.py
	bash scripts/check-layers-test.sh
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny --version >/dev/null 2>&1 || $(CARGO) install cargo-deny --locked
	$(CARGO) deny check licenses bans sources
	@# Advisories need the RustSec database from github.com: checked where it is reachable, loudly not otherwise.
	@if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then \
		$(CARGO) deny check advisories; \
	else echo "lint: WARNING: security advisories NOT checked: the RustSec database (github.com/rustsec/advisory-db) is not reachable from this machine; run 'cargo deny check advisories' where it is" >&2; fi
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; } || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck -x scripts/*.sh e2e/*.sh e2e/scenarios/*.sh

fmt: ## Format the code
	$(CARGO) fmt --all

demo: deps ## Bootstrap a sandbox node against the built-in Azure emulator (no Azure account needed)
	bash scripts/demo.sh

bench: deps ## Benchmarks (install speed vs. the curl+sha256sum+tar floor, 200-agent scale simulation)
	bash scripts/bench.sh

e2e: deps ## Slow suites: the ignored tests (200-agent scale run, real components as root), then the real-node suite (systemd-nspawn + Kubernetes 1.20, as root)
	@# One at a time: the scale run prints figures, which tests running beside it would skew.
	$(CARGO) test --workspace -- --ignored --test-threads=1
	bash e2e/run.sh

demo-node: ## A real node Ready on a real API server (Azure emulated); left up to explore
	bash e2e/demo-node.sh

demo-node-down: ## Tear down what demo-node left up and restore the host
	bash e2e/demo-node.sh down

clean: ## Remove build output and demo state
	$(CARGO) clean
	rm -rf .demo dist
