#!/usr/bin/env bash
# `make e2e`'s real-node suite: a real kube-apiserver 1.20.2 and a systemd-nspawn node running the release
# agent under real systemd, Azure emulated. See e2e/lib.sh for what is real and what is emulated.
#
#   bash e2e/run.sh [SCENARIO...]     # default: every scenario in e2e/scenarios, in order
#
# Ends with "N passed, N failed". A machine that cannot run the suite (not root, no systemd-nspawn) makes it
# print SKIPPED with the reason and exit 0, unless E2E_REQUIRED=1 (set by .ci/run), where a skip fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/lib.sh
source "$here/lib.sh"

if reason=$(e2e_cannot_run) && [ -n "$reason" ]; then
  echo "e2e: SKIPPED: the real-node suite cannot run on this machine: $reason" >&2
  if [ "${E2E_REQUIRED:-0}" = 1 ]; then
    echo "e2e: E2E_REQUIRED=1: a skipped real-node suite is a failure" >&2
    exit 1
  fi
  exit 0
fi

mkdir -p "$E2E_WORK"
exec 9>"$E2E_WORK/.lock"
flock -n 9 || e2e_die "another e2e run (or make demo-node) holds $E2E_WORK/.lock; make demo-node-down ends a demo node"

e2e_deps
# The node's containerd image store lives under $E2E_WORK: the kubelet evicts every pod (and admits none) once
# that filesystem has less than 15 % free (imagefs.available), which looks like a broken node, not a full disk.
free_pct=$(df --output=pcent "$E2E_WORK" | tail -1 | tr -dc 0-9)
free_pct=$((100 - free_pct))
[ "$free_pct" -ge 20 ] || e2e_die "only $free_pct % free on the filesystem of $E2E_WORK ($(df -h --output=avail "$E2E_WORK" | tail -1 | tr -d ' ')); the node's kubelet evicts pods below 15 %: free some space (e.g. cargo target dirs) and re-run"
# A previous run that was killed may have left its node and control plane up.
if [ -d "$E2E_WORK/pids" ] && ls "$E2E_WORK/pids"/* >/dev/null 2>&1; then
  e2e_log "cleaning up what an earlier run left"
  K8S_BIN=${K8S_BIN:-/nonexistent} e2e_down || true
fi
e2e_inputs
rm -rf "$E2E_WORK/logs" "$E2E_WORK/pids" "$E2E_WORK/figures"
mkdir -p "$E2E_WORK/logs" "$E2E_WORK/pids"
trap 'e2e_down' EXIT
e2e_record_host
e2e_reserve_himds_port wait
e2e_log "starting etcd and the Kubernetes $KUBE_VERSION control plane on 127.0.0.1:$APISERVER_PORT"
e2e_control_plane_up
e2e_scenario

# shellcheck source=/dev/null
for f in "$here"/scenarios/*.sh; do source "$f"; done
mapfile -t all < <(declare -F | awk '{print $3}' | grep '^scenario_' | sort)
if [ $# -gt 0 ]; then wanted=("${@/#/scenario_}"); else wanted=("${all[@]}"); fi

passed=0 failed=0 failures=()
for s in "${wanted[@]}"; do
  declare -F "$s" >/dev/null || e2e_die "no such scenario: ${s#scenario_} (have: ${all[*]#scenario_})"
  e2e_log "=== ${s#scenario_}"
  start=$SECONDS
  # Not in an `if`: bash ignores `set -e` inside a condition, and every command of a scenario must count.
  set +e
  (
    set -eEuo pipefail
    trap 'e2e_log "command failed (line $LINENO): $BASH_COMMAND"' ERR
    "$s"
  )
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); e2e_log "PASS ${s#scenario_} ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); failures+=("${s#scenario_}"); e2e_log "FAIL ${s#scenario_} ($((SECONDS - start)) s)"
    e2e_diagnose || true
  fi
done

if [ -d "$E2E_WORK/figures" ]; then
  echo "e2e figures (this machine, 2 cores):"
  cat "$E2E_WORK/figures"/* 2>/dev/null | sed 's/^/  /'
fi
[ ${#failures[@]} -eq 0 ] || echo "e2e: failed scenarios: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
