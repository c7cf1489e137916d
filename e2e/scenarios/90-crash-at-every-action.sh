# shellcheck shell=bash
# Crash at every action: the agent is SIGKILLed once at every action boundary of a real bootstrap (right
# after the journal marks an action pending, and right after the action before the journal marks it done;
# the test-only hook AKS_FLEX_NODE_TEST_CRASH_FILE), systemd restarts it each time, and it still converges
# to a Ready node with no half-written file; unbootstrap then leaves the disk as it was and Azure clean.
scenario_90_crash_at_every_action() {
  e2e_node_destroy
  e2e_emulator_up
  local seeded
  seeded=$(e2e_azure_counts)
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  e2e_node_create
  cat >"$NODE_DIR/etc/systemd/system/aks-flex-node-agent.service.d/90-e2e-crash.conf" <<'CONF'
# e2e only: die once at every action boundary; restart at once.
[Service]
Environment=AKS_FLEX_NODE_TEST_CRASH_FILE=/run/e2e-crash-points
RestartSec=1
CONF
  e2e_node_boot
  local before
  before=$(e2e_node_manifest)
  local t0=$SECONDS
  # --no-block: the first start is killed before it reports READY, which would fail a blocking start.
  node_sh systemctl enable --now --no-block aks-flex-node-agent
  e2e_wait 900 "the node Ready after the crashes" e2e_node_ready || { node_sh tail -n 5 /run/e2e-crash-points >&2; return 1; }
  e2e_wait 120 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  local kills restarts
  kills=$(node_sh sh -c 'wc -l < /run/e2e-crash-points')
  restarts=$(node_sh systemctl show -p NRestarts --value aks-flex-node-agent)
  e2e_log "converged after $kills kills ($restarts restarts) in $((SECONDS - t0)) s"
  e2e_figure "crash at every action: $kills kills, Ready $((SECONDS - t0)) s after the first start"
  [ "$kills" -ge 40 ] || { node_sh cat /run/e2e-crash-points >&2; fail "only $kills crash points: the hook did not fire at every action"; return 1; }
  [ "$restarts" -ge "$kills" ] || { fail "$kills kills but only $restarts restarts"; return 1; }
  local p
  for p in 'ArcInstall | ' 'Runc_Installer | ' 'KubeletInstaller | ' 'ServicesEnabled | ' '| before' '| after'; do
    node_sh grep -qF "$p" /run/e2e-crash-points || { fail "no crash point matching '$p'"; return 1; }
  done
  # Nothing half-done: a plan of the node is converged (every managed file has its intended content),
  # the services are up, and a pod runs.
  local plan
  plan=$(node_sh aks-flex-node plan -o json --config /etc/aks-flex-node/config.json)
  [ "$(echo "$plan" | jq -r .converged)" = true ] || { echo "$plan" | jq '.steps[] | select(.status == "changes")' >&2; fail "the node is not converged after the crashes"; return 1; }
  e2e_run_pod || return 1
  [ "$(e2e_azure_counts | cut -d' ' -f1)" = 1 ] || { fail "Azure holds $(e2e_azure_counts | cut -d' ' -f1) Arc machines after the crashes (expected 1)"; return 1; }

  node_sh systemctl stop aks-flex-node-agent
  local out rc=0
  out=$(node_sh aks-flex-node unbootstrap --verify --delete-node --no-color 2>&1) || rc=$?
  # shellcheck disable=SC2001
  echo "$out" | sed 's/^/    unbootstrap: /' >&2
  [ "$rc" -eq 0 ] || { fail "unbootstrap after the crashes exited $rc"; return 1; }
  local after
  after=$(e2e_node_manifest)
  if [ "$after" != "$before" ]; then
    diff <(echo "$before") <(echo "$after") | head -n 40 >&2
    fail "after crashes + unbootstrap the node's disk differs from before bootstrap"; return 1
  fi
  local now
  now=$(e2e_azure_counts)
  [ "${now%% *}" = 0 ] || { fail "Azure still holds ${now%% *} Arc machine(s)"; return 1; }
  [ "${now#* }" = "${seeded#* }" ] || { fail "role assignments: ${now#* } now, ${seeded#* } seeded"; return 1; }
  e2e_log "crashed $kills times, converged, and unbootstrap left the disk as it was"
}
