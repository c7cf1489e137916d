# shellcheck shell=bash
# Scenario 2 (after scenario 1, on its node): restarting the agent changes nothing (no file written, no unit
# restarted, journal unchanged), and a reboot of the node brings it back Ready with no repair.
scenario_20_restart_and_reboot() {
  e2e_node_ready || fail "needs the Ready node of scenario 10_fresh_node" || return 1
  local before services
  before=$(e2e_node_fingerprint)
  services=$(e2e_node_services)
  node_sh systemctl restart aks-flex-node-agent
  e2e_wait 120 "the restarted agent's converged pass" e2e_agent_completed || return 1
  [ "$(e2e_node_fingerprint)" = "$before" ] || { diff <(echo "$before") <(e2e_node_fingerprint) >&2; fail "the agent's restart wrote files"; return 1; }
  [ "$(e2e_node_services)" = "$services" ] || fail "the agent's restart restarted a service: $(e2e_node_services) (was: $services)" || return 1
  if e2e_agent_log | grep -Eq 'applied|repaired'; then
    e2e_agent_log >&2
    fail "the restarted agent applied changes on a converged node"; return 1
  fi
  e2e_log "agent restart: no file written, no service restarted"

  # Reboot: nspawn ends with the container's poweroff; boot the same root again.
  e2e_figure "agent memory after bootstrap, on the converged node: $(e2e_agent_rss)"
  e2e_node_poweroff
  local booted
  booted=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  e2e_node_boot
  local t0=$SECONDS end=$((SECONDS + 240))
  until [ "$(kadm get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')" \> "$booted" ] && e2e_node_ready; do
    [ $SECONDS -lt $end ] || fail "the node was not Ready again 240 s after the reboot" || return 1
    sleep 2
  done
  e2e_log "node Ready again $((SECONDS - t0)) s after boot"
  e2e_wait 120 "the agent's pass after the reboot" e2e_agent_completed || return 1
  # NodeReady may have waited for the rebooted kubelet (it writes and restarts nothing): not a repair.
  if e2e_agent_log | grep -v '^NodeReady' | grep -Eq 'applied|repaired'; then
    e2e_agent_log >&2
    fail "the agent repaired something after a clean reboot"; return 1
  fi
  [ "$(e2e_node_fingerprint)" = "$before" ] || { diff <(echo "$before") <(e2e_node_fingerprint) >&2; fail "files changed across the reboot"; return 1; }
  e2e_log "reboot: Ready again, no repair, no file written"
}
