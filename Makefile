# aks-flex-node developer targets. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps build release test lint fmt demo demo-node demo-node-down bench e2e clean

help: ## List the targets
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / { printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

deps: ## Install the Debian packages the real-component tests and the demo use (as root)
	bash scripts/deps.sh

build: ## Debug build of the agent and the emulator
	$(CARGO) build --workspace

release: ## Optimised binaries in target/release
	$(CARGO) build --workspace --release

test: deps ## Unit, golden, property and integration tests (the default suite, a few minutes)
	$(CARGO) test --workspace --no-fail-fast

lint: ## Formatting check, clippy with warnings as errors, shellcheck of every script
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@command -v shellcheck >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; } || { echo "shellcheck is missing: apt-get install shellcheck" >&2; exit 1; }
	shellcheck -x scripts/*.sh e2e/*.sh e2e/scenarios/*.sh

fmt: ## Format the code
	$(CARGO) fmt --all

demo: deps ## Bootstrap a sandbox node against the built-in Azure emulator (no Azure account needed)
	bash scripts/demo.sh

bench: deps ## Benchmarks (install speed vs. the curl+sha256sum+tar floor, 200-agent scale simulation)
	bash scripts/bench.sh

e2e: deps ## Slow suites: the 200-agent scale run, then the real-node suite (systemd-nspawn + Kubernetes 1.20, as root)
	$(CARGO) test --workspace -- --ignored
	bash e2e/run.sh

demo-node: ## A real node Ready on a real API server (Azure emulated); left up to explore
	bash e2e/demo-node.sh

demo-node-down: ## Tear down what demo-node left up and restore the host
	bash e2e/demo-node.sh down

clean: ## Remove build output and demo state
	$(CARGO) clean
	rm -rf .demo
