#!/usr/bin/env bash
# Proves scripts/check-layers.py fails on an introduced cycle: runs it on small fake source trees in a temp
# directory (the real tree is checked by `make lint` itself). Exit 0 when every case behaves.
set -euo pipefail
cd "$(dirname "$0")/.."
check=scripts/check-layers.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# A tree shaped like the agent's: model at the bottom, steps above artifacts above host, no cycle.
base() {
    local src=$1
    mkdir -p "$src/model" "$src/config" "$src/host" "$src/artifacts" "$src/steps"
    printf 'pub mod model;\npub mod config;\n' >"$src/lib.rs"
    printf 'fn main() { let _ = crate::steps::x; }\n' >"$src/main.rs"
    printf 'pub struct Phase;\n' >"$src/model/mod.rs"
    printf 'use crate::model::Phase;\n' >"$src/config/mod.rs"
    printf '// A doc line naming crate::steps does not count.\nuse crate::config::Config;\n' >"$src/host/mod.rs"
    printf 'use crate::host::Host;\npub mod install;\n' >"$src/artifacts/mod.rs"
    printf 'use crate::host::Host;\n' >"$src/artifacts/install.rs"
    printf 'use crate::{artifacts, host::Host, model};\n' >"$src/steps/mod.rs"
    printf 'pub fn log() { crate::host::run(); }\n' >"$src/logging.rs"
}

# expect NAME RC PATTERN...: the checker's exit code is RC and its output matches every PATTERN.
# ALLOW="a,b" passes `--allow a,b` (a known cycle) to the checker.
expect() {
    local name=$1 want=$2 out rc=0
    shift 2
    out=$(python3 "$check" ${ALLOW:+--allow "$ALLOW"} "$tmp/$name" 2>&1) || rc=$?
    if [ "$rc" != "$want" ]; then
        echo "FAIL $name: exit $rc, expected $want; output:" >&2
        echo "$out" >&2
        failures=$((failures + 1))
        return
    fi
    local p
    for p in "$@"; do
        if ! grep -qE -- "$p" <<<"$out"; then
            echo "FAIL $name: output lacks /$p/; output:" >&2
            echo "$out" >&2
            failures=$((failures + 1))
            return
        fi
    done
    echo "ok   $name"
}

base "$tmp/clean"
expect clean 0 'no import cycle between the 6 top-level modules' 'known: none'

# A lower layer naming a higher one: config -> host -> config, through a grouped `use crate::{...}`.
base "$tmp/grouped"
printf 'use crate::model::Phase;\nuse crate::{host::Host, model};\n' >"$tmp/grouped/config/mod.rs"
expect grouped 1 'import cycle between top-level modules: config -> host -> config' \
    "config -> host: $tmp/grouped/config/mod.rs:2" "host -> config: $tmp/grouped/host/mod.rs:2"

# The cycle typed actions removed, back: artifacts naming the engine's types.
base "$tmp/back"
printf 'use crate::steps::{Action, Context};\n' >"$tmp/back/artifacts/install.rs"
expect back 1 'import cycle between top-level modules: artifacts -> steps -> artifacts' \
    "artifacts -> steps: $tmp/back/artifacts/install.rs:1" "steps -> artifacts: $tmp/back/steps/mod.rs:1"

# A known (allowed) cycle passes; a path in an expression (not a `use`) that joins a new module to it fails.
ALLOW=artifacts,steps expect back 0 'known: artifacts <-> steps'
cp -r "$tmp/back" "$tmp/joins"
printf 'use crate::config::Config;\nfn f() { crate::artifacts::fetch(); }\n' >"$tmp/joins/host/mod.rs"
ALLOW=artifacts,steps expect joins 1 'import cycle between top-level modules: artifacts -> host -> artifacts' \
    "host -> artifacts: $tmp/joins/host/mod.rs:2" 'artifacts, host, steps all reach each other'

# A file module (logging.rs) in a cycle.
base "$tmp/file-module"
printf 'use crate::config::Config;\nuse crate::logging::log;\n' >"$tmp/file-module/host/mod.rs"
expect file-module 1 'host -> logging -> host' "logging -> host: $tmp/file-module/logging.rs:1"

# An allowed cycle that is gone: the allow-list must shrink with it.
ALLOW=artifacts,steps expect clean 1 '\{artifacts, steps\} is no longer a cycle: remove it from ALLOWED'

if [ "$failures" -gt 0 ]; then
    echo "check-layers-test: $failures case(s) failed" >&2
    exit 1
fi
echo "check-layers-test: all cases passed"
