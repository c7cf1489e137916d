#!/usr/bin/env bash
# `make bench`: performance and scale figures. These are measurements, printed for people and CI logs;
# they are not timed assertions in the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== install every component from a loopback mirror into a temp root, vs. curl + sha256sum + tar of the same bytes"
cargo bench -q -p aks-flex-node --bench install

echo "== 200 agents bootstrapping the identity phase concurrently against one emulator (ARM writes throttled)"
cargo test -q --release -p aks-flex-node --test integration azure_scale:: -- --ignored --nocapture
