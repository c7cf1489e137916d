# shellcheck shell=bash
# Unbootstrap while the agent's unit waits to restart (killed: `activating (auto-restart)`, RestartSec=30):
# the first round's bug was that it was not stopped, restarted 30 s later and registered the node again.
# 60 s after unbootstrap the agent must still be stopped and Azure still clean.
scenario_50_unbootstrap_while_the_agent_restarts() {
  e2e_bootstrap_node || return 1
  node_sh systemctl kill -s KILL aks-flex-node-agent
  e2e_wait 10 "the agent to wait for its restart" sh -c "[ \"\$(nsenter -t $(e2e_node_leader) -a systemctl show -p SubState --value aks-flex-node-agent)\" = auto-restart ]" || return 1
  local restarts
  restarts=$(node_sh systemctl show -p NRestarts --value aks-flex-node-agent)
  local out rc=0
  out=$(node_sh aks-flex-node unbootstrap --verify --no-color 2>&1) || rc=$?
  # shellcheck disable=SC2001
  echo "$out" | sed 's/^/    unbootstrap: /' >&2
  [ "$rc" -eq 0 ] || { fail "unbootstrap exited $rc"; return 1; }
  e2e_log "waiting 60 s: the agent's restart was due 30 s after the kill"
  sleep 60
  local st
  st=$(node_sh systemctl show -p ActiveState -p SubState -p NRestarts -p UnitFileState aks-flex-node-agent | tr '\n' ' ')
  case $st in *ActiveState=inactive*|*ActiveState=failed*) ;; *) fail "the agent is running again: $st"; return 1 ;; esac
  case $st in *"NRestarts=$restarts "*) ;; *) fail "the agent restarted after unbootstrap: $st (NRestarts was $restarts)"; return 1 ;; esac
  case $st in *UnitFileState=enabled*) fail "the agent is still enabled: $st"; return 1 ;; esac
  local now
  now=$(e2e_azure_counts)
  [ "${now%% *}" = 0 ] || { fail "Azure holds ${now%% *} Arc machine(s) again"; return 1; }
  e2e_log "agent still stopped 60 s later ($st), no Arc machine"
}
