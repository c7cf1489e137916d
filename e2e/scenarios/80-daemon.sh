# shellcheck shell=bash
# The daemon on a real node (issue: the daemon operators can trust):
# - `status -o json` on the Ready node: healthy, kubeletReady "Ready", the daemon running; `preflight`
#   passes on the node the agent bootstrapped; systemd's status line says running (Type=notify);
# - drift: containerd's config deleted and the kubelet stopped -> `status` says degraded (exit 1), both are
#   repaired within one heal period, and a running pod is not restarted by the repair;
# - Azure down at start (ARM answers 503): the restarted agent makes no ARM call for its host pass (it heals
#   from the journal), stays up while its Azure check fails (status and systemd say so, host passes
#   notwithstanding), and passes it once ARM is back;
# - metrics (agent.metricsAddress on loopback) count the repair and report the node healthy.
scenario_80_daemon_heals_and_reports() {
  e2e_bootstrap_node || return 1
  local cfg=/etc/aks-flex-node/config.json st rc=0
  st=$(node_sh aks-flex-node status -o json --config "$cfg") || rc=$?
  [ "$rc" -eq 0 ] || { echo "$st" >&2; fail "status exited $rc on the Ready node"; return 1; }
  [ "$(echo "$st" | jq -r '.health + " " + .kubeletReady + " " + .daemon.state')" = "healthy Ready running" ] ||
    { echo "$st" | jq . >&2; fail "status on the Ready node is not healthy/Ready/running"; return 1; }
  rc=0; node_sh aks-flex-node preflight --config "$cfg" >/dev/null || rc=$?
  [ "$rc" -eq 0 ] || { node_sh aks-flex-node preflight --config "$cfg" >&2; fail "preflight refuses the node the agent bootstrapped (exit $rc)"; return 1; }
  local text
  text=$(node_sh systemctl show -p StatusText --value aks-flex-node-agent)
  case $text in running*) ;; *) fail "systemd's status line for the agent: '$text'"; return 1 ;; esac
  e2e_log "status healthy, preflight passes, systemd says: $text"

  # A faster schedule for the rest, and metrics on loopback (the node shares the host's network).
  local metrics=127.0.0.1:19469
  node_sh sh -c "printf '[Service]\nEnvironment=AKS_FLEX_NODE_HEAL_INTERVAL=15\nEnvironment=AKS_FLEX_NODE_AZURE_RECHECK_INTERVAL=20\nEnvironment=AKS_FLEX_NODE_STATUS_INTERVAL=5\nEnvironment=AKS_FLEX_NODE_AZURE_TIME_SCALE=0.1\n' >/etc/systemd/system/aks-flex-node-agent.service.d/80-e2e-fast.conf"
  python3 - "$NODE_DIR$cfg" "$metrics" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c.setdefault("agent", {})["metricsAddress"] = sys.argv[2]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
  node_sh systemctl daemon-reload
  node_sh systemctl restart aks-flex-node-agent
  e2e_wait 60 "the restarted agent's pass" e2e_agent_completed || return 1
  e2e_run_pod || return 1
  local cid
  cid=$(kadm get pod e2e-pause -o jsonpath='{.status.containerStatuses[0].containerID}')

  # Drift.
  node_sh rm /etc/containerd/config.toml
  node_sh systemctl stop kubelet
  rc=0; node_sh aks-flex-node status --config "$cfg" >/dev/null || rc=$?
  [ "$rc" -eq 1 ] || { fail "status exited $rc with the kubelet stopped (expected 1: degraded)"; return 1; }
  local t0=$SECONDS
  e2e_wait 45 "containerd's config and the kubelet repaired (heal period 15 s)" e2e80_drift_repaired || { e2e_agent_log | tail -n 20 >&2; return 1; }
  e2e_log "drift repaired $((SECONDS - t0)) s after it was made"
  e2e_figure "drift (containerd config deleted, kubelet stopped) repaired in $((SECONDS - t0)) s (heal period 15 s)"
  # The repair is logged when its pass ends (after the services' 10 s settle check).
  e2e_wait 60 "the repair logged with what drifted" e2e80_log_has 'repaired drift: .*containerd/config.toml' ||
    { e2e_agent_log | tail -n 20 >&2; fail "the agent did not log the repair with what drifted"; return 1; }
  e2e_wait 60 "the node Ready again" e2e_node_ready || return 1
  e2e_wait 30 "the pod Running" e2e_pod_running || return 1
  local cid2 restarts
  cid2=$(kadm get pod e2e-pause -o jsonpath='{.status.containerStatuses[0].containerID}')
  restarts=$(kadm get pod e2e-pause -o jsonpath='{.status.containerStatuses[0].restartCount}')
  if [ "$cid2" != "$cid" ] || [ "$restarts" != 0 ]; then
    fail "the repair restarted the pod (container $cid -> $cid2, restarts $restarts)"; return 1
  fi
  e2e_wait 30 "status healthy again" node_sh aks-flex-node status --config "$cfg" || { node_sh aks-flex-node status --config "$cfg" >&2; fail "status not healthy after the repair"; return 1; }
  local m
  m=$(curl -fsS "http://$metrics/metrics") || { fail "no metrics at $metrics"; return 1; }
  echo "$m" | grep -Eq '^aks_flex_node_repairs_total\{step="ContainerdInstaller"\} [1-9]' || { echo "$m" >&2; fail "metrics do not count the containerd repair"; return 1; }
  e2e_wait 15 "metrics: healthy" sh -c "curl -fsS http://$metrics/metrics | grep -q '^aks_flex_node_healthy 1'" || { fail "metrics do not report the node healthy"; return 1; }
  e2e_log "repair kept pod container ${cid#containerd://}, status healthy again, metrics count the repair"

  # Azure down at start.
  local base="http://127.0.0.1:$HIMDS_PORT" restarts_before arm_before
  curl -fsS -X POST "$base/_emulator/faults" -H 'content-type: application/json' \
    -d '{"path_regex": "^/subscriptions/", "kind": "status", "status": 503}' >/dev/null || { fail "cannot add the ARM fault"; return 1; }
  arm_before=$(grep -c '/subscriptions/' "$E2E_WORK/requests.jsonl" || true)
  node_sh systemctl restart aks-flex-node-agent
  restarts_before=$(node_sh systemctl show -p NRestarts --value aks-flex-node-agent)
  e2e_wait 60 "the agent's host pass with ARM down" e2e_agent_completed || { e2e_agent_log | tail -n 20 >&2; return 1; }
  local arm_after
  arm_after=$(grep -c '/subscriptions/' "$E2E_WORK/requests.jsonl" || true)
  [ "$arm_after" = "$arm_before" ] || { fail "the restarted agent called ARM $((arm_after - arm_before)) time(s) before its host pass completed"; return 1; }
  e2e_wait 60 "the agent's Azure check to fail" e2e80_log_has 'Azure pass failed' || { e2e_agent_log | tail -n 20 >&2; return 1; }
  # A host pass (every 15 s) succeeds meanwhile: it must not hide the failing Azure pass.
  sleep 16
  text=$(node_sh systemctl show -p StatusText --value aks-flex-node-agent)
  case $text in "degraded: Azure pass failed"*) ;; *) fail "systemd's status line while ARM is down: '$text'"; return 1 ;; esac
  st=$(node_sh aks-flex-node status -o json --config "$cfg") || true
  if [ "$(echo "$st" | jq -r '.daemon.state + " " + .health + " " + .lastError' | cut -c1-30)" != "degraded degraded Azure pass: " ]; then
    echo "$st" | jq . >&2; fail "status while ARM is down does not say the Azure pass fails"; return 1
  fi
  [ "$(node_sh systemctl is-active aks-flex-node-agent)" = active ] || { fail "the agent is not active while ARM is down"; return 1; }
  e2e_node_ready || { fail "the node is not Ready while ARM is down"; return 1; }
  e2e_log "ARM down: agent active, node Ready, systemd says: $text"
  curl -fsS -X DELETE "$base/_emulator/faults" >/dev/null
  e2e_wait 90 "the Azure check to pass once ARM is back" e2e80_log_has 'Azure check passed' || { e2e_agent_log | tail -n 20 >&2; return 1; }
  [ "$(node_sh systemctl show -p NRestarts --value aks-flex-node-agent)" = "$restarts_before" ] || { fail "the agent restarted during the outage"; return 1; }
  text=$(node_sh systemctl show -p StatusText --value aks-flex-node-agent)
  case $text in running*) ;; *) fail "systemd's status line after ARM came back: '$text'"; return 1 ;; esac
  e2e_log "ARM back: Azure check passed without a restart; systemd says: $text"
  # Figures on the real node: the agent's memory after these passes, and what `status` costs.
  local passes ms
  passes=$(curl -fsS "http://$metrics/metrics" | awk '/^aks_flex_node_passes_total/ {n += $2} END {print n + 0}')
  ms=$(node_sh sh -c "s=\$(date +%s%N); aks-flex-node status -o json --config $cfg >/dev/null; echo \$(( (\$(date +%s%N) - s) / 1000000 ))")
  e2e_figure "agent memory on the real node after $passes passes of this run (fast schedule): $(e2e_agent_rss); \`aks-flex-node status -o json\` $ms ms (whole process, API server asked)"
  node_sh rm -f /etc/systemd/system/aks-flex-node-agent.service.d/80-e2e-fast.conf
  node_sh systemctl daemon-reload
}

e2e80_drift_repaired() { node_sh test -f /etc/containerd/config.toml && [ "$(node_sh systemctl is-active kubelet)" = active ]; }
e2e80_log_has() { e2e_agent_log | grep -q "$1"; }
